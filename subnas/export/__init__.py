"""Export: a sub-network as a standalone model folder that stock `transformers` loads.

- ``_extract``: `extract` (safetensors + config + tokenizer; stock, padded or flexible format).
- ``_padding``: zero-padding, which writes a sub-network no stock class expresses as an exact stock model.
- ``_sliced``: `SlicedSource`, which reads only a sub-network's slices from safetensors files (memory ∝ the
  sub-network), and `open_source`, the automatic choice `subnas extract` makes.
"""

from subnas.export._extract import ExtractResult, extract
from subnas.export._padding import padded_config, padding_info, to_hf_padded
from subnas.export._sliced import SlicedSource, open_source

__all__ = ["ExtractResult", "SlicedSource", "extract", "open_source", "padded_config", "padding_info",
           "to_hf_padded"]
