"""Text → packed token ids: the one tokenization and on-disk token cache of training and evaluation.

1. **Text.** `subnas.data.resolve_text_source` reads a ``--data`` source whole and
   `subnas.data.stream_text_source` row by row, up to a token cap. For training, ``default`` and a
   dataset name without a split mean their *train* split (the validation split is for evaluation).
2. **Tokens.** `pack_documents` tokenizes documents with the model's tokenizer (no special tokens)
   and joins them with EOS (BOS when there is none) between documents. The stream is cached once
   under ``cache_root()/tokens`` as raw uint16/uint32 ids (int64 for a tokenizer of unknown size),
   memory-mapped on use (blocks are copies, never views of the file), keyed by a hash of the
   source (its text, or its name and file stamps when streamed), the tokenizer, the packing version
   and the token cap. The block size is not part of the key: blocks are cut when read, so
   one cache serves every sequence length.
3. **Blocks.** Block ``i`` is stream tokens ``[i·L', (i+1)·L')`` with ``L' = seq_len`` or, when
   the model needs BOS on every sequence (``SubnasConfig.require_bos``, Gemma), ``[BOS]`` plus
   ``seq_len − 1`` tokens. Training reads them through `load_token_blocks`; evaluation's
   ``[num_seqs, seq_len]`` tensor (`subnas.evaluation._perplexity.tokenize_for_eval`) is the first
   ``num_seqs`` blocks of `pack_texts`, so both see the same tokens for the same text.
4. **Order.** `BlockOrder` lists blocks epoch by epoch, each epoch a permutation seeded by
   ``(seed, epoch)``; the global batch of step ``s`` is positions ``[s·B, (s+1)·B)`` of that list.
   The step alone decides what comes next, so a resumed run sees exactly the data an uninterrupted
   run would (docs/design.md#invariants invariant 6), on any number of processes.

Example:
    >>> from transformers import AutoTokenizer
    >>> from subnas.data import BlockOrder, default_model_dir, load_token_blocks
    >>> tokenizer = AutoTokenizer.from_pretrained(default_model_dir())
    >>> blocks = load_token_blocks("default:validation", tokenizer, seq_len=512)
    >>> blocks.batch(BlockOrder(len(blocks), batch_size=8, seed=0).batch(0)).shape
    torch.Size([8, 512])
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

import numpy as np
import torch
from transformers import PreTrainedTokenizerBase

from subnas._io import atomic_write_text
from subnas.data._assets import DataSourceError, cache_root
from subnas.data._sources import parse_text_source, resolve_text_source, stream_text_source

# Bump when tokenization or packing changes, so stale caches are never reused. The key of a
# stream is also the training data's identity in run fingerprints (`TokenBlocks.key`), so an
# unchanged packing keeps its number: a run resumes across versions that tokenize alike.
_PACKING_VERSION = 1
_TOKENIZE_CHUNK = 64  # documents per tokenizer call: batched, yet stops soon once enough tokens


# ---------------------------------------------------------------------------- tokenize and pack
def encode_documents(tokenizer: Any, docs: list[str]) -> Iterable[list[int]]:
    """Token ids of each document, without special tokens."""
    if isinstance(tokenizer, PreTrainedTokenizerBase):  # batched: the Rust tokenizer runs in parallel
        # verbose=False: long documents are fine here, we pack them ourselves.
        ids: list[list[int]] = tokenizer(docs, add_special_tokens=False, verbose=False)["input_ids"]
        return ids
    return (tokenizer.encode(d, add_special_tokens=False) for d in docs)


def document_separator(tokenizer: Any) -> int | None:
    """The token between two packed documents: EOS, else BOS, else none."""
    sep = getattr(tokenizer, "eos_token_id", None)
    return sep if sep is not None else getattr(tokenizer, "bos_token_id", None)


def pack_documents(docs: Iterable[str], tokenizer: Any, *, max_tokens: int | None = None) -> Iterator[list[int]]:
    """The token stream of ``docs``: each tokenized, `document_separator` between consecutive
    ones (empty strings are skipped), yielded in chunks and cut after ``max_tokens``. Only as many
    documents as the cap needs are tokenized.

    Example:
        >>> from types import SimpleNamespace
        >>> chars = SimpleNamespace(eos_token_id=0, encode=lambda t, add_special_tokens: [ord(c) for c in t])
        >>> [i for chunk in pack_documents(["ab", "", "c"], chars) for i in chunk]
        [97, 98, 0, 99]
    """
    sep = document_separator(tokenizer)
    total, first, batch = 0, True, []

    def encode(docs: list[str]) -> list[int]:
        nonlocal total, first
        out: list[int] = []
        for ids in encode_documents(tokenizer, docs):
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


def tokenizer_fingerprint(tokenizer: Any) -> str:
    """What decides a tokenizer's output: its full serialization when it has one, else its vocabulary."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        # The full serialization covers normalizer, pre-tokenizer and merges, not only the vocab.
        return str(backend.to_str())
    vocab = tokenizer.get_vocab() if hasattr(tokenizer, "get_vocab") else None
    return repr((type(tokenizer).__qualname__, getattr(tokenizer, "name_or_path", None),
                 sorted(vocab.items()) if vocab is not None else None))


def content_key(tokenizer: Any, params: tuple[Any, ...], *, texts: Iterable[str] | None = None,
                stamp: str | None = None) -> str:
    """A hex SHA-256 of ``params``, the tokenizer (`tokenizer_fingerprint`) and the text: the
    documents themselves, or a ``stamp`` naming them (a streamed source). For every cache of
    tokenized text (this module's, the vocabulary's token counts)."""
    h = hashlib.sha256(repr(params).encode())
    h.update(hashlib.sha256(tokenizer_fingerprint(tokenizer).encode()).digest())
    if stamp is not None:
        h.update(stamp.encode())
    for text in texts or ():
        data = text.encode("utf-8")
        h.update(len(data).to_bytes(8, "little"))  # length prefix: ["ab", "c"] != ["a", "bc"]
        h.update(data)
    return h.hexdigest()


# ---------------------------------------------------------------------------- blocks
@dataclass(frozen=True)
class TokenBlocks:
    """Fixed-length blocks over a (memory-mapped) token stream (see the module docstring)."""

    tokens: np.ndarray  # 1-D token ids, a memmap when cached
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
        ids = torch.from_numpy(np.array(self.tokens[i * self.body:(i + 1) * self.body], dtype=np.int64))
        if self.bos_token_id is not None:
            ids = torch.cat([torch.tensor([self.bos_token_id]), ids])
        return ids

    def batch(self, indices: Sequence[int]) -> torch.Tensor:
        """``[len(indices), seq_len]`` int64 token ids."""
        return torch.stack([self[i] for i in indices])

    def head(self, n: int) -> torch.Tensor:
        """The first ``n`` blocks as one ``[n, seq_len]`` int64 tensor (``batch(range(n))``, in one copy)."""
        if not 0 <= n <= len(self):
            raise IndexError(f"{n} blocks asked for, {len(self)} available")
        ids = torch.from_numpy(np.array(self.tokens[:n * self.body], dtype=np.int64)).view(n, self.body)
        if self.bos_token_id is not None:
            ids = torch.cat([torch.full((n, 1), self.bos_token_id, dtype=torch.long), ids], dim=1)
        return ids


def pack_texts(texts: Sequence[str], tokenizer: Any, *, seq_len: int, add_bos: bool = False,
               max_tokens: int | None = None, cache: bool = True, source: str | None = None) -> TokenBlocks:
    """`TokenBlocks` of documents already in memory (tokenized once, cached on disk).

    Args:
        texts: the documents, e.g. from `subnas.data.resolve_text_source`.
        tokenizer: a `transformers` tokenizer, or any object with ``encode(text,
            add_special_tokens=False) -> list[int]``, ``eos_token_id`` and ``bos_token_id``.
        seq_len: tokens per block.
        add_bos: start every block with BOS (see `subnas.evaluation._perplexity.requires_bos`).
        max_tokens: tokenize only until the stream has this many tokens (part of the cache key).
        cache: read and write the on-disk cache.
        source: what the texts are, recorded beside the cache entry.

    The result may hold no block at all; callers say what that means for them.
    """
    bos = _block_bos(tokenizer, add_bos)
    dtype = _token_dtype(tokenizer)
    key = content_key(tokenizer, _stream_params(tokenizer, dtype, max_tokens), texts=texts)[:40]
    tokens = _token_stream(key, texts, tokenizer, dtype, max_tokens, cache,
                           meta={"source": source, "streaming": False, "max_tokens": max_tokens})
    return TokenBlocks(tokens, seq_len, bos, key)


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
    bos = _block_bos(tokenizer, add_bos)
    source = parse_text_source(spec).with_default_split("train")
    if not streaming:
        blocks = pack_texts(resolve_text_source(source), tokenizer, seq_len=seq_len, add_bos=add_bos,
                            max_tokens=max_tokens, cache=cache, source=source.spec)
    else:
        dtype = _token_dtype(tokenizer)
        key = content_key(tokenizer, _stream_params(tokenizer, dtype, max_tokens), stamp=source.stamp())[:40]
        tokens = _token_stream(key, stream_text_source(source), tokenizer, dtype, max_tokens, cache,
                               meta={"source": source.spec, "streaming": True, "max_tokens": max_tokens})
        blocks = TokenBlocks(tokens, seq_len, bos, key)
    if len(blocks) == 0:
        raise DataSourceError(f"{source.spec!r} holds {len(blocks.tokens):,} tokens, fewer than one block of "
                              f"{seq_len}; give more text or a smaller --seq-len")
    return blocks


def _block_bos(tokenizer: Any, add_bos: bool) -> int | None:
    """The BOS id every block starts with (``None``: no BOS added)."""
    if not add_bos:
        return None
    bos = getattr(tokenizer, "bos_token_id", None)
    if bos is None:
        raise ValueError("the model needs BOS on every sequence (add_bos), but the tokenizer has no BOS token")
    return int(bos)


def _token_dtype(tokenizer: Any) -> Any:
    """The smallest dtype that holds every id of ``tokenizer``; int64 when its size is unknown."""
    if not hasattr(tokenizer, "__len__"):
        return np.int64
    return np.uint16 if len(tokenizer) <= np.iinfo(np.uint16).max + 1 else np.uint32


def _stream_params(tokenizer: Any, dtype: Any, max_tokens: int | None) -> tuple[Any, ...]:
    return (_PACKING_VERSION, document_separator(tokenizer), np.dtype(dtype).str, max_tokens)


# ---------------------------------------------------------------------------- token cache
def _token_stream(key: str, docs: Iterable[str], tokenizer: Any, dtype: Any, max_tokens: int | None, cache: bool,
                  meta: dict[str, Any]) -> np.ndarray:
    """The packed stream of ``docs``: from the cache, or packed now (and cached when ``cache``)."""
    folder = cache_root() / "tokens"
    tokens = _read_cache(folder, key) if cache else None
    if tokens is not None:
        return tokens
    chunks = (_as_dtype(chunk, dtype) for chunk in pack_documents(docs, tokenizer, max_tokens=max_tokens))
    if not cache:
        return np.concatenate([np.zeros(0, dtype=dtype), *chunks])
    return _write_cache(folder, key, chunks, dtype, meta)


def _as_dtype(chunk: list[int], dtype: Any) -> np.ndarray:
    arr = np.asarray(chunk, dtype=np.int64)
    limits = np.iinfo(dtype)
    if arr.size and (arr.min() < limits.min or arr.max() > limits.max):
        bad = int(arr.min()) if arr.min() < limits.min else int(arr.max())
        raise DataSourceError(f"token id {bad} does not fit {np.dtype(dtype).name}")
    return arr.astype(dtype)


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


def _write_cache(folder: Path, key: str, chunks: Iterable[np.ndarray], dtype: Any, meta: dict[str, Any]) -> np.ndarray:
    """Stream ``chunks`` into ``key.bin`` (temp file, fsync, rename), then write ``key.json``.

    The JSON is written last, so a killed build leaves no cache entry that `_read_cache` accepts.
    """
    folder.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{key}.", suffix=".bin", dir=folder)
    n = 0
    try:
        with os.fdopen(fd, "wb") as fh:
            for chunk in chunks:
                fh.write(chunk.tobytes())
                n += chunk.size
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
