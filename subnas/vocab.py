"""Vocabulary pruning (issue #13): which tokens a small model keeps, and the pruned tokenizer.

For tiny models the embedding is most of the parameters (SmolLM2-135M: 49,152 x 576 = 28.3M of
134.5M; at ``n_embd=128`` the embedding alone is 6.3M of a 10M budget). A sub-network may keep
only some token ids (`SubNetwork.vocab_indices`); this module decides which and writes a real
tokenizer for them.

* `VocabOrder` ranks the tokens by frequency on a calibration corpus (the tokenized
  ``default:calibration`` split; counts cached on disk) and `VocabOrder.kept` picks ``n`` of them so
  that **any text still encodes**: special tokens and the base alphabet are always kept (the 256
  byte tokens of a byte-level BPE; the ``<0xNN>`` tokens of a byte-fallback BPE), and a token is
  kept only together with the parts of the merge that produces it, so no kept row is unreachable.
* `prune_tokenizer_json` writes the pruned ``tokenizer.json``: kept tokens renumbered 0..V'-1 in
  the original order, and only the merges whose two parts and result are kept. BPE applies merges
  in rank order, so a word whose merge was dropped stops at smaller kept pieces; with every byte
  kept, ``decode(encode(x)) == x`` for any text. Stock ``AutoTokenizer`` loads the result.

Supported: BPE tokenizers (``tokenizers`` model type ``BPE``) that are byte-level (GPT-2, Llama 3,
SmolLM2, Qwen) or use byte fallback (Llama 2, Mistral, Gemma). Others raise `VocabularyError`.

Example:
    >>> from subnas.vocab import byte_level_alphabet
    >>> len(byte_level_alphabet())
    256
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections import Counter
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterable, Sequence

import torch

from subnas._io import atomic_write_text
from subnas.data._assets import cache_root
from subnas.data._sources import resolve_text_source
from subnas.data._tokens import content_key, encode_documents

BYTE_FALLBACK_TOKENS = tuple(f"<0x{b:02X}>" for b in range(256))
METASPACE = "\u2581"  # SentencePiece's word-boundary mark, "▁"


class VocabularyError(ValueError):
    """A vocabulary that cannot be pruned as asked; the message names the problem and the fix."""


@lru_cache(maxsize=1)
def byte_level_alphabet() -> dict[str, int]:
    """GPT-2's byte-level alphabet: the printable character standing for each byte, and the byte."""
    keep = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    chars, extra = {}, 0
    for b in range(256):
        if b in keep:
            chars[chr(b)] = b
        else:
            chars[chr(256 + extra)] = b
            extra += 1
    return chars


# ----------------------------------------------------------------------------- tokenizer.json
def tokenizer_json(tokenizer: Any) -> dict[str, Any]:
    """The ``tokenizers`` serialization of a `transformers` fast tokenizer, or `VocabularyError`."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        raise VocabularyError(
            f"vocabulary pruning needs a fast (Rust `tokenizers`) tokenizer; {type(tokenizer).__name__} is a slow "
            "one: load the model's tokenizer with use_fast=True or convert it (tokenizer.json)")
    return json.loads(backend.to_str())


def _walk(node: Any, kind: str) -> Iterable[dict[str, Any]]:
    """Components of type ``kind`` in a tokenizer.json section, looking inside ``Sequence``s."""
    if isinstance(node, dict):
        if node.get("type") == kind:
            yield node
        for key in ("pretokenizers", "normalizers", "decoders", "processors"):
            for child in node.get(key) or []:
                yield from _walk(child, kind)


def _check_supported(data: dict[str, Any]) -> str:
    """``"byte_level"`` or ``"byte_fallback"``; raises for tokenizers pruning could break."""
    model = data.get("model") or {}
    kind = model.get("type")
    if kind != "BPE":
        raise VocabularyError(
            f"vocabulary pruning supports BPE tokenizers (GPT-2/Llama/SmolLM2/Qwen byte-level BPE, Llama 2/Gemma "
            f"byte-fallback BPE); this tokenizer's model is {kind!r}. Keep the full vocabulary (leave vocab_size "
            f"and vocab_indices out) for this model")
    if any(True for _ in _walk(data.get("pre_tokenizer"), "ByteLevel")):
        return "byte_level"
    if model.get("byte_fallback"):
        return "byte_fallback"
    raise VocabularyError(
        "this BPE tokenizer is neither byte-level nor byte-fallback, so some text would not encode once tokens "
        "are removed; vocabulary pruning cannot guarantee a lossless tokenizer for it. Keep the full vocabulary "
        "(leave vocab_size and vocab_indices out)")


def _merge_pair(merge: Any) -> tuple[str, str]:
    if isinstance(merge, str):  # older tokenizer.json: "a b"
        a, _, b = merge.partition(" ")
        return a, b
    return merge[0], merge[1]


@dataclass(frozen=True)
class TokenizerInfo:
    """What pruning needs to know about a tokenizer, read once from its tokenizer.json."""

    vocab_size: int  # ids 0..vocab_size-1 (model vocabulary and added tokens)
    kind: str  # "byte_level" or "byte_fallback"
    required: frozenset[int]  # ids every pruned vocabulary keeps
    parents: dict[int, tuple[int, int]]  # token id -> the ids of its first (lowest-rank) merge's parts
    names: tuple[str, ...]  # the token of every id ("" where an id is unused)

    @classmethod
    def of(cls, tokenizer: Any) -> TokenizerInfo:
        return _info(tokenizer_json(tokenizer) if not isinstance(tokenizer, dict) else tokenizer)


def _info(data: dict[str, Any]) -> TokenizerInfo:
    kind = _check_supported(data)
    model = data["model"]
    vocab: dict[str, int] = dict(model["vocab"])
    for added in data.get("added_tokens") or []:
        vocab.setdefault(added["content"], added["id"])
    size = max(vocab.values()) + 1
    names = [""] * size
    for token, i in vocab.items():
        names[i] = token
    base = byte_level_alphabet() if kind == "byte_level" else {t: 0 for t in BYTE_FALLBACK_TOKENS}
    # Every byte token the full vocabulary has (SmolLM2's lacks 21 control bytes it never saw, so
    # the full tokenizer cannot encode those either; pruning keeps exactly what it can encode).
    required = {vocab[t] for t in base if t in vocab}
    required |= {a["id"] for a in data.get("added_tokens") or []}  # special and added tokens
    for token in (model.get("unk_token"), METASPACE if kind == "byte_fallback" else None):
        if token is not None and token in vocab:
            required.add(vocab[token])
    prefix = model.get("continuing_subword_prefix") or ""
    parents: dict[int, tuple[int, int]] = {}
    for merge in model.get("merges") or []:
        a, b = _merge_pair(merge)
        result = a + (b[len(prefix):] if prefix and b.startswith(prefix) else b)
        r = vocab.get(result)
        if r is not None and r not in parents and a in vocab and b in vocab:
            parents[r] = (vocab[a], vocab[b])
    return TokenizerInfo(vocab_size=size, kind=kind, required=frozenset(required), parents=parents, names=tuple(names))


def prune_tokenizer_json(data: dict[str, Any], kept: Sequence[int]) -> dict[str, Any]:
    """A tokenizer.json (as a dict) keeping the token ids ``kept``, renumbered 0..len(kept)-1.

    Raises `VocabularyError` if ``kept`` drops a token every text may need (a byte token, a special
    token): the message names it.
    """
    info = _info(data)
    kept = sorted(set(int(i) for i in kept))
    kept_set = set(kept)
    lost = sorted(info.required - kept_set)
    if lost:
        raise VocabularyError(
            f"the kept vocabulary drops {len(lost)} token(s) that any text may need, e.g. id {lost[0]} "
            f"({info.names[lost[0]]!r}); keep the {len(info.required)} special and byte tokens (VocabOrder.kept "
            f"does), or keep the full vocabulary")
    new = {old: j for j, old in enumerate(kept)}
    out = json.loads(json.dumps(data))  # deep copy
    model = out["model"]
    model["vocab"] = {t: new[i] for t, i in sorted(model["vocab"].items(), key=lambda kv: kv[1]) if i in new}
    prefix = model.get("continuing_subword_prefix") or ""
    vocab = model["vocab"]
    merges = []
    for merge in model.get("merges") or []:
        a, b = _merge_pair(merge)
        result = a + (b[len(prefix):] if prefix and b.startswith(prefix) else b)
        if a in vocab and b in vocab and result in vocab:
            merges.append(merge)
    model["merges"] = merges
    out["added_tokens"] = [dict(a, id=new[a["id"]]) for a in out.get("added_tokens") or [] if a["id"] in new]
    for proc in _walk(out.get("post_processor"), "TemplateProcessing"):
        for spec in (proc.get("special_tokens") or {}).values():
            spec["ids"] = [new[i] for i in spec.get("ids", []) if i in new]
    for kind in ("RobertaProcessing", "BertProcessing"):
        for proc in _walk(out.get("post_processor"), kind):
            for key in ("sep", "cls"):
                if key in proc:
                    proc[key] = [proc[key][0], new[proc[key][1]]]
    return out


def save_pruned_tokenizer(tokenizer: Any, kept: Sequence[int], out_dir: str | os.PathLike[str]) -> None:
    """Write ``tokenizer`` restricted to ``kept`` ids into ``out_dir`` (a folder being built:
    `subnas.extract` writes into its temporary folder, which is renamed into place as a whole)."""
    out = Path(out_dir)
    data = prune_tokenizer_json(tokenizer_json(tokenizer), kept)
    new = {old: j for j, old in enumerate(sorted(set(int(i) for i in kept)))}
    tokenizer.save_pretrained(out)
    (out / "tokenizer.json").write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")
    for stale in ("vocab.json", "merges.txt", "tokenizer.model", "special_tokens_map.json.bak"):
        (out / stale).unlink(missing_ok=True)  # slow-tokenizer files would describe the full vocabulary
    cfg_path = out / "tokenizer_config.json"
    if cfg_path.is_file():
        cfg = json.loads(cfg_path.read_text(encoding="utf-8"))
        decoder = cfg.get("added_tokens_decoder")
        if isinstance(decoder, dict):
            cfg["added_tokens_decoder"] = {str(new[int(k)]): v for k, v in decoder.items() if int(k) in new}
        cfg["subnas_vocab_size"] = len(new)
        cfg_path.write_text(json.dumps(cfg, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


_PRUNED: dict[tuple[int, str], tuple[Any, Any]] = {}


def pruned_tokenizer(tokenizer: Any, kept: Sequence[int] | None) -> Any:
    """``tokenizer`` restricted to ``kept`` (``None``: ``tokenizer`` itself), loaded back through
    stock `AutoTokenizer` exactly as an export's; cached per (tokenizer, kept ids) in memory."""
    if kept is None:
        return tokenizer
    from transformers import AutoTokenizer

    key = (id(tokenizer), hashlib.sha1(json.dumps(sorted(kept)).encode()).hexdigest())
    hit = _PRUNED.get(key)
    if hit is None or hit[0] is not tokenizer:  # the entry holds its tokenizer: ids are never reused
        with tempfile.TemporaryDirectory() as tmp:
            save_pruned_tokenizer(tokenizer, kept, tmp)
            hit = (tokenizer, AutoTokenizer.from_pretrained(tmp))
        if len(_PRUNED) > 32:
            _PRUNED.clear()
        _PRUNED[key] = hit
    return hit[1]


# ----------------------------------------------------------------------------- bytes per token
def token_byte_lengths(tokenizer: Any) -> torch.Tensor:
    """UTF-8 bytes of text that each token id stands for (special tokens: 0), for bits per byte.

    Exact and additive for byte-level BPE (each token is a byte string) and byte-fallback BPE
    (``<0xNN>`` is one byte, ``▁`` one space). Other tokenizers fall back to the length of each
    token's decoded text.
    """
    data = tokenizer_json(tokenizer)
    model = data.get("model") or {}
    vocab: dict[str, int] = dict(model.get("vocab") or {})
    specials = {a["id"]: a for a in data.get("added_tokens") or []}
    size = max([*vocab.values(), *specials, len(tokenizer) - 1]) + 1
    lengths = torch.zeros(size, dtype=torch.long)
    byte_level = any(True for _ in _walk(data.get("pre_tokenizer"), "ByteLevel")) or \
        any(True for _ in _walk(data.get("decoder"), "ByteLevel"))
    alphabet = byte_level_alphabet()
    for token, i in vocab.items():
        if byte_level and all(c in alphabet for c in token):
            lengths[i] = len(token)
        elif model.get("byte_fallback") and token in BYTE_FALLBACK_TOKENS:
            lengths[i] = 1
        elif model.get("type") == "BPE":
            lengths[i] = len(token.replace(METASPACE, " ").encode("utf-8"))
        else:
            lengths[i] = len(tokenizer.convert_tokens_to_string([token]).encode("utf-8"))
    for i, added in specials.items():
        lengths[i] = 0 if added.get("special") else len(added["content"].encode("utf-8"))
    return lengths


# ----------------------------------------------------------------------------- which tokens to keep
@dataclass(frozen=True)
class VocabOrder:
    """Token ids ranked by frequency on a calibration corpus (ties: lower id first, i.e. earlier
    BPE merges), with what pruning must keep.

    Example:
        >>> order = VocabOrder(ranking=(5, 4, 3, 2, 1, 0), required=frozenset({0, 1}), parents={5: (3, 4)},
        ...                    vocab_size=6)
        >>> order.kept(4)  # 5 needs its merge parts 3 and 4, which do not fit: take 4 and 3
        (0, 1, 3, 4)
        >>> order.kept(5)
        (0, 1, 3, 4, 5)
    """

    ranking: tuple[int, ...]
    required: frozenset[int]
    parents: dict[int, tuple[int, int]]
    vocab_size: int
    source: str = "natural"

    @classmethod
    def from_counts(cls, counts: Sequence[int], info: TokenizerInfo, *, source: str) -> VocabOrder:
        c = torch.tensor(list(counts), dtype=torch.float64)
        ranking = tuple(int(i) for i in torch.sort(-c, stable=True).indices)
        return cls(ranking=ranking, required=info.required, parents=info.parents, vocab_size=len(counts), source=source)

    @property
    def min_size(self) -> int:
        """The smallest vocabulary that still encodes any text (special and byte tokens)."""
        return len(self.required)

    def kept(self, n: int) -> tuple[int, ...]:
        """The ``n`` ids to keep, increasing: the required ones, then the most frequent tokens each
        with the parts of its merge (recursively), skipping a token whose closure does not fit."""
        return _kept(self, n)

    def __hash__(self) -> int:
        return hash((self.ranking[:64], self.vocab_size, self.source))


@lru_cache(maxsize=64)
def _kept(order: VocabOrder, n: int) -> tuple[int, ...]:
    if n >= order.vocab_size:
        return tuple(range(order.vocab_size))
    if n < order.min_size:
        raise VocabularyError(f"vocab_size={n} is too small: any text needs the {order.min_size} special and byte "
                              f"tokens; legal vocabulary sizes are {order.min_size}..{order.vocab_size}")
    kept = set(order.required)
    for token in order.ranking:
        if len(kept) >= n:
            break
        if token in kept:
            continue
        closure, stack = [], [token]
        while stack:
            t = stack.pop()
            if t in kept or t in closure:
                continue
            closure.append(t)
            stack.extend(order.parents.get(t, ()))
        if len(kept) + len(closure) <= n:
            kept.update(closure)
    for token in order.ranking:  # exactly n, so the count of "vocab_size=n" is the count of these ids
        if len(kept) >= n:
            break
        kept.add(token)
    return tuple(sorted(kept))


def token_counts(tokenizer: Any, texts: Sequence[str], vocab_size: int) -> list[int]:
    """How often each token id occurs when ``texts`` are tokenized (no special tokens added)."""
    counts: Counter[int] = Counter()
    for start in range(0, len(texts), 64):
        batch = [t for t in texts[start:start + 64] if t]
        if batch:
            for ids in encode_documents(tokenizer, batch):
                counts.update(ids)
    return [counts.get(i, 0) for i in range(vocab_size)]


def vocab_order(supernet: Any, *, data: str = "default:calibration", cache: bool = True) -> VocabOrder:
    """The `VocabOrder` of a `subnas.Supernet`'s tokenizer from token counts on ``data`` (the
    calibration split by default, never the validation text); counts are cached on disk."""
    tokenizer = supernet.tokenizer
    if tokenizer is None:
        raise VocabularyError(f"model {supernet.source!r} has no tokenizer beside it; pruning the vocabulary needs "
                              f"one (to count tokens and to write the pruned tokenizer)")
    info = TokenizerInfo.of(tokenizer)
    V = supernet.subnas_config.vocab_size
    if info.vocab_size > V:
        raise VocabularyError(f"the tokenizer has {info.vocab_size} tokens but the model only {V} embedding rows")
    texts = resolve_text_source(data)
    key = content_key(tokenizer, ("vocab_counts", 1), texts=texts)
    path = cache_root() / "vocab_counts" / f"{key[:40]}.json"
    counts: list[int] | None = None
    if cache and path.is_file():
        try:
            counts = json.loads(path.read_text())
        except (OSError, ValueError):
            counts = None
    if counts is None or len(counts) != V:
        counts = token_counts(tokenizer, texts, V)
        if cache:
            atomic_write_text(path, json.dumps(counts))
    digest = hashlib.sha1(json.dumps(counts).encode()).hexdigest()[:12]
    return VocabOrder.from_counts(counts, info, source=f"frequency:{data}:{digest}")
