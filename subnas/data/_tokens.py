"""Training data: text → packed token blocks on disk → a deterministic, resumable batch order.

1. **Text.** Small corpora come from `subnas.data.resolve_text_source` (the default corpus, local
   .txt/.json/.jsonl/.parquet/.csv files, any `datasets` name); large ones are streamed with
   `subnas.data.stream_text_source` and read only up to a token cap. For training,
   ``default`` and a dataset name without a split mean their *train* split (the validation split is
   for evaluation).
2. **Tokens.** Documents are tokenized with the model's tokenizer (no special tokens) and joined
   with EOS between documents — the same packing as `subnas.evaluation._perplexity.tokenize_for_eval`. The stream
   is cached once under ``cache_root()/train_tokens`` as raw uint16/uint32 ids, memory-mapped on
   use, keyed by a hash of the source (its text, or its name and file stamps when streamed), the
   tokenizer and the packing version. The block size is not part of the key: blocks are cut when
   read, so one cache serves every sequence length.
3. **Blocks.** Block ``i`` is stream tokens ``[i·L', (i+1)·L')`` with ``L' = seq_len`` or, when
   the model needs BOS on every sequence (``SubnasConfig.require_bos``, Gemma), ``[BOS]`` plus
   ``seq_len − 1`` tokens.
4. **Order.** `BlockOrder` lists blocks epoch by epoch, each epoch a permutation seeded by
   ``(seed, epoch)``; the global batch of step ``s`` is positions ``[s·B, (s+1)·B)`` of that list.
   The step alone decides what comes next, so a resumed run sees exactly the data an uninterrupted
   run would (DESIGN.md §4 invariant 6), on any number of processes.

Example:
    >>> from subnas.data import load_token_blocks, BlockOrder          # doctest: +SKIP
    >>> blocks = load_token_blocks("default", tokenizer, seq_len=512)  # doctest: +SKIP
    >>> batch = blocks.batch(BlockOrder(len(blocks), batch_size=8, seed=0).batch(0))  # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

import numpy as np
import torch

from subnas._io import atomic_write_text
from subnas.data._assets import DataSourceError, cache_root
from subnas.data._sources import parse_text_source, resolve_text_source, stream_text_source
# The module, not its names: evaluation imports subnas.data while it initialises.
from subnas.evaluation import _perplexity

logger = logging.getLogger(__name__)

# Bump when tokenization or packing changes, so stale caches are never reused.
_PACKING_VERSION = 1
_TOKENIZE_CHUNK = 256  # documents per tokenizer call


# ---------------------------------------------------------------------------- token cache
@dataclass(frozen=True)
class TokenBlocks:
    """Fixed-length blocks over a memory-mapped token stream (see the module docstring)."""

    tokens: np.ndarray  # 1-D memmap of token ids
    seq_len: int
    bos_token_id: int | None  # prepended to every block when set
    key: str  # cache key of the token stream (identifies the data in checkpoints)

    @property
    def body(self) -> int:
        return self.seq_len - (self.bos_token_id is not None)

    def __len__(self) -> int:
        return len(self.tokens) // self.body

    def __getitem__(self, i: int) -> torch.Tensor:
        if not 0 <= i < len(self):
            raise IndexError(f"block {i} out of range for {len(self)} blocks")
        ids = torch.from_numpy(np.asarray(self.tokens[i * self.body:(i + 1) * self.body], dtype=np.int64))
        if self.bos_token_id is not None:
            ids = torch.cat([torch.tensor([self.bos_token_id]), ids])
        return ids

    def batch(self, indices: Sequence[int]) -> torch.Tensor:
        """``[len(indices), seq_len]`` int64 token ids."""
        return torch.stack([self[i] for i in indices])


def load_token_blocks(spec: str, tokenizer: Any, *, seq_len: int, add_bos: bool = False, streaming: bool = False,
                      max_tokens: int | None = None, cache: bool = True) -> TokenBlocks:
    """Tokenize (or load from the cache) the training text named by ``spec`` as `TokenBlocks`.

    Args:
        spec: a ``--data`` value (see `subnas.data.resolve_text_source`); ``default`` and split-less
            dataset names mean their train split (`subnas.data.TextSource.with_default_split`).
        tokenizer: a `transformers` tokenizer (or any object with ``encode``, ``eos_token_id``).
        seq_len: tokens per block.
        add_bos: start every block with BOS (``SubnasConfig.require_bos``; see
            `subnas.evaluation._perplexity.requires_bos`).
        streaming: stream table files and dataset names instead of loading them whole.
        max_tokens: stop tokenizing after this many tokens (needed to bound a streamed corpus; it
            is part of the cache key).
        cache: read and write the on-disk cache.

    Raises:
        DataSourceError: unknown source, empty data, wrong column, or not a single block of text.
    """
    if seq_len < 2:
        raise ValueError(f"seq_len must be >= 2, got {seq_len}")
    bos = getattr(tokenizer, "bos_token_id", None)
    if add_bos and bos is None:
        raise ValueError("the model needs BOS on every sequence, but the tokenizer has no BOS token")
    source = parse_text_source(spec).with_default_split("train")
    spec = source.spec
    sep = getattr(tokenizer, "eos_token_id", None)
    if sep is None:
        sep = bos
    vocab = len(tokenizer) if hasattr(tokenizer, "__len__") else None
    dtype = np.uint16 if vocab is not None and vocab <= np.iinfo(np.uint16).max + 1 else np.uint32

    texts: list[str] | None = None
    h = hashlib.sha256(repr((_PACKING_VERSION, sep, np.dtype(dtype).str, max_tokens)).encode())
    h.update(hashlib.sha256(_perplexity._tokenizer_fingerprint(tokenizer).encode()).digest())
    if streaming:
        h.update(source.stamp().encode())
    else:
        texts = resolve_text_source(source)
        for text in texts:
            data = text.encode("utf-8")
            h.update(len(data).to_bytes(8, "little"))  # length prefix: ["ab", "c"] != ["a", "bc"]
            h.update(data)
    key = h.hexdigest()[:40]
    folder = cache_root() / "train_tokens"
    tokens = _read_cache(folder, key) if cache else None
    if tokens is None:
        docs: Iterable[str] = texts if texts is not None else stream_text_source(source)
        tokens = _write_cache(folder, key, _token_chunks(docs, tokenizer, sep, max_tokens), dtype,
                              meta={"source": spec, "streaming": streaming, "max_tokens": max_tokens})
        if not cache:
            (folder / f"{key}.json").unlink(missing_ok=True)
    blocks = TokenBlocks(tokens, seq_len, bos if add_bos else None, key)
    if len(blocks) == 0:
        raise DataSourceError(f"{spec!r} holds {len(tokens):,} tokens, fewer than one block of {seq_len}; "
                              "give more text or a smaller --seq-len")
    return blocks


def _token_chunks(docs: Iterable[str], tokenizer: Any, sep: int | None, max_tokens: int | None) -> Iterator[list[int]]:
    """Token ids of ``docs`` joined by ``sep``, in chunks, stopping after ``max_tokens``."""
    total, first, batch = 0, True, []

    def encode(docs: list[str]) -> list[int]:
        nonlocal total, first
        out: list[int] = []
        for ids in _perplexity._encode(tokenizer, docs):
            if not first and sep is not None:
                out.append(sep)
            first = False
            out.extend(ids)
        if max_tokens is not None:
            out = out[:max(0, max_tokens - total)]
        total += len(out)
        return out

    for doc in docs:
        if doc:
            batch.append(doc)
        if len(batch) == _TOKENIZE_CHUNK:
            yield encode(batch)
            batch = []
            if max_tokens is not None and total >= max_tokens:
                return
    if batch:
        yield encode(batch)


def _read_cache(folder: Path, key: str) -> np.ndarray | None:
    meta_path, bin_path = folder / f"{key}.json", folder / f"{key}.bin"
    try:
        meta = json.loads(meta_path.read_text())
        dtype = np.dtype(meta["dtype"])
        if meta["version"] != _PACKING_VERSION or bin_path.stat().st_size != meta["num_tokens"] * dtype.itemsize:
            return None
        if meta["num_tokens"] == 0:
            return np.zeros(0, dtype=dtype)
        return np.memmap(bin_path, dtype=dtype, mode="r")
    except (OSError, ValueError, KeyError, TypeError):
        return None  # missing or damaged: rebuild


def _write_cache(folder: Path, key: str, chunks: Iterable[list[int]], dtype: Any, meta: dict[str, Any]) -> np.ndarray:
    """Stream ``chunks`` into ``key.bin`` (temp file, fsync, rename), then write ``key.json``.

    The JSON is written last, so a killed build leaves no cache entry that `_read_cache` accepts.
    """
    folder.mkdir(parents=True, exist_ok=True)
    limit = np.iinfo(dtype).max
    fd, tmp = tempfile.mkstemp(prefix=f".{key}.", suffix=".bin", dir=folder)
    n = 0
    try:
        with os.fdopen(fd, "wb") as fh:
            for chunk in chunks:
                arr = np.asarray(chunk, dtype=np.int64)
                if arr.size and (arr.min() < 0 or arr.max() > limit):
                    raise DataSourceError(f"token id {int(arr.max())} does not fit {np.dtype(dtype).name}")
                fh.write(arr.astype(dtype).tobytes())
                n += arr.size
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, folder / f"{key}.bin")
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    atomic_write_text(folder / f"{key}.json", json.dumps(
        {"version": _PACKING_VERSION, "dtype": np.dtype(dtype).str, "num_tokens": n, **meta}))  # fsyncs the folder
    tokens = _read_cache(folder, key)
    assert tokens is not None
    return tokens


# ---------------------------------------------------------------------------- order
class BlockOrder:
    """Which blocks make up the global batch of each step: a pure function of ``(seed, step)``.

    Example:
        >>> order = BlockOrder(10, batch_size=4, seed=0)
        >>> order.batch(0) == BlockOrder(10, batch_size=4, seed=0).batch(0)
        True
        >>> sorted(order.batch(0) + order.batch(1) + order.batch(2)[:2]) == list(range(10))  # epoch 0
        True
    """

    def __init__(self, num_blocks: int, *, batch_size: int, seed: int) -> None:
        if num_blocks < 1 or batch_size < 1:
            raise ValueError(f"need num_blocks >= 1 and batch_size >= 1, got {num_blocks}, {batch_size}")
        self.num_blocks, self.batch_size, self.seed = num_blocks, batch_size, seed
        self._perms: dict[int, list[int]] = {}

    def _perm(self, epoch: int) -> list[int]:
        if epoch not in self._perms:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            if len(self._perms) > 2:
                self._perms.pop(min(self._perms))
            self._perms[epoch] = torch.randperm(self.num_blocks, generator=g).tolist()
        return self._perms[epoch]

    def batch(self, step: int) -> list[int]:
        """Block indices of the global batch of ``step`` (0-based); batches may span epochs."""
        start = step * self.batch_size
        return [self._perm(p // self.num_blocks)[p % self.num_blocks] for p in range(start, start + self.batch_size)]

    def epoch(self, step: int) -> float:
        """How many passes over the data the first ``step`` steps made."""
        return step * self.batch_size / self.num_blocks


def shard(indices: Sequence[int], rank: int, world_size: int) -> list[int]:
    """This rank's contiguous share of a global batch (disjoint across ranks, together the batch).

    Example:
        >>> [shard(list(range(8)), r, 2) for r in range(2)]
        [[0, 1, 2, 3], [4, 5, 6, 7]]
    """
    if len(indices) % world_size:
        raise ValueError(f"a global batch of {len(indices)} does not split evenly over {world_size} processes")
    n = len(indices) // world_size
    return list(indices[rank * n:(rank + 1) * n])
