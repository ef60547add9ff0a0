"""Export: a sub-network as a standalone model folder that stock `transformers` loads.

- ``_extract``: `extract` (safetensors + config + tokenizer; stock, padded or flexible format).
- ``_padding``: zero-padding, which writes a sub-network no stock class expresses as an exact stock model.
"""

from subnas.export._extract import ExtractResult, extract
from subnas.export._padding import padded_config, padding_info, to_hf_padded

__all__ = ["ExtractResult", "extract", "padded_config", "padding_info", "to_hf_padded"]
