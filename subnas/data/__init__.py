"""Data: the offline default model and corpus, the ``--data`` grammar, and packed token blocks.

- ``_assets``: the default model (SmolLM2-135M from a local package), the default corpus (a
  Wikipedia dump split into search/validation/train), and `resolve_text_source`, the ``--data`` grammar.
- ``_wiki``: plain text from MediaWiki XML (the default corpus's cleaning).
- ``_tokens``: text → packed token blocks on disk → a deterministic, resumable batch order.
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
    resolve_text_source,
)
from subnas.data._tokens import BlockOrder, TokenBlocks, load_token_blocks, stream_text_source

__all__ = ["BlockOrder", "Corpus", "DataSourceError", "HubUnreachableError", "TokenBlocks", "cache_root",
           "corpus_statistics", "default_corpus", "default_model_dir", "load_token_blocks", "locate_model",
           "resolve_text_source", "stream_text_source"]
