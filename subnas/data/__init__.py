"""Data: the offline default model and corpus, the ``--data`` grammar, and packed token ids.

- ``_assets``: the default model (SmolLM2-135M from a local package), the default corpus (a
  Wikipedia dump split by article into train/validation/search/calibration/test), and `locate_model`, the one place
  a model name (``"default"``, a folder, a Hub name) becomes something to load.
- ``_wiki``: plain text from MediaWiki XML (the default corpus's cleaning).
- ``_sources``: the ``--data`` grammar, parsed once (`parse_text_source` → `TextSource`), and its
  readers (`resolve_text_source` whole, `stream_text_source` row by row).
- ``_tokens``: text → one packed token stream (cached on disk) → blocks for training and for
  evaluation → a deterministic, resumable batch order.
"""

from subnas.data._assets import (
    Corpus,
    DataSourceError,
    HubUnreachableError,
    cache_root,
    corpus_statistics,
    default_corpus,
    default_model_dir,
    locate_model,
    shareable_name,
)
from subnas.data._sources import TextSource, parse_text_source, resolve_text_source, stream_text_source
from subnas.data._tokens import BlockOrder, TokenBlocks, load_token_blocks, pack_documents, pack_texts

__all__ = ["BlockOrder", "Corpus", "DataSourceError", "HubUnreachableError", "TextSource", "TokenBlocks",
           "cache_root", "corpus_statistics", "default_corpus", "default_model_dir", "load_token_blocks",
           "locate_model", "pack_documents", "pack_texts", "parse_text_source", "resolve_text_source",
           "shareable_name", "stream_text_source"]
