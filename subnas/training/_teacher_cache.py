"""A verified, on-disk cache of the teacher's top-k logits, shared by every run on the same text.

On CPU the teacher's forward pass and its top-k reduction are about a third of a distillation
step (``benchmarks/train_speed.py``). Its output depends only on the teacher and the tokens, so it
is computed once and reused by every later run on the same sequences: the other seeds of a
benchmark, a rerun of the demo, a resumed run, a run with another learning rate or student.

**What is stored.** One safetensors file per *sequence* (not per batch): a sequence recurs in
every run that trains on it, whatever the seed, batch size, micro-batching or number of processes,
while a batch recurs only under the same seed and batch size. Each file holds everything the
top-k loss needs (`subnas.training._losses.TeacherTopK`): float32 log-probabilities of the top k tokens,
their ids (uint16 when the vocabulary fits, else int32), the tail's log-mass, and the sequence's
own token ids. Values are stored exactly as computed, so a cached loss equals the uncached loss
bit for bit.

**Keys and verification (docs/design.md#pitfalls-avoided).** The file name is a hash of the token ids, the teacher's
identity (a hash of its config, weights, active sub-network and precision), k and the temperature
(the top-k log-probabilities and the tail are normalised at T, so T is part of the key; the ids
are not). On every read the stored token ids, teacher identity, k, temperature, vocabulary size
and shapes are checked against the batch being trained on; an entry that does not match, or a
file that does not parse, is never used: it is recomputed and replaced, and the event is logged
and counted (`TeacherCache.stats`). Nothing depends on a particular vocabulary size.

**Kill safety.** Every file is written to a temporary name, fsynced and renamed into place, so a
killed run leaves complete entries or none, and the next run computes what is missing.

Example:
    >>> import tempfile, torch
    >>> from subnas.training._losses import teacher_topk
    >>> cache = TeacherCache(tempfile.mkdtemp(), teacher_id="demo", k=2, temperature=1.0)
    >>> teacher = lambda ids: teacher_topk(torch.randn(*ids.shape, 5), k=2, temperature=1.0)
    >>> ids = torch.tensor([[1, 2, 3]])
    >>> first = cache.targets(ids, teacher, vocab_size=5)  # computed and stored
    >>> again = cache.targets(ids, teacher, vocab_size=5)  # read back and verified; no teacher call
    >>> torch.equal(first.logprobs, again.logprobs), cache.stats
    (True, {'hits': 1, 'misses': 1, 'rejected': 0})
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path
from typing import Any, Callable

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save

from subnas._io import atomic_write_bytes, model_fingerprint
from subnas.training._losses import TeacherTopK

logger = logging.getLogger(__name__)

FORMAT = "subnas-teacher-topk/1"  # bump when the stored layout or its meaning changes


class TeacherCacheMismatchError(ValueError):
    """A stored entry does not belong to the sequence (or teacher, k, T) it is looked up for."""


def teacher_identity(model: Any, *, extra: dict[str, Any] | None = None) -> str:
    """`subnas._io.model_fingerprint` of the teacher: class, config, every weight and ``extra``
    (e.g. the active sub-network of a supernet and the autocast precision), so two checkpoints of
    one architecture never share cache entries."""
    return model_fingerprint(model, extra=extra)


def _index_dtype(vocab_size: int) -> torch.dtype:
    return torch.uint16 if vocab_size <= 1 << 16 else torch.int32


class TeacherCache:
    """Top-k teacher targets on disk under ``root/<teacher_id>/``, one file per sequence.

    Args:
        root: the cache folder (``subnas.data.cache_root() / "teacher_topk"`` in training).
        teacher_id: `teacher_identity` of the teacher.
        k: top-k tokens kept per position.
        temperature: the ``T`` the targets are normalised at.
    """

    def __init__(self, root: str | Path, *, teacher_id: str, k: int, temperature: float) -> None:
        self.folder = Path(root) / teacher_id
        self.teacher_id, self.k, self.temperature = teacher_id, int(k), float(temperature)
        self.stats = {"hits": 0, "misses": 0, "rejected": 0}
        self.writable = True

    # ------------------------------------------------------------------ one sequence
    def key(self, ids: torch.Tensor) -> str:
        """The file name of sequence ``ids`` (1-D token ids)."""
        h = hashlib.sha256(f"{FORMAT}|{self.teacher_id}|{self.k}|{self.temperature!r}|{ids.numel()}|".encode())
        h.update(ids.detach().to("cpu", torch.int64).contiguous().numpy().tobytes())
        return h.hexdigest()[:40]

    def path(self, ids: torch.Tensor) -> Path:
        key = self.key(ids)
        return self.folder / key[:2] / f"{key}.safetensors"

    def load(self, ids: torch.Tensor, vocab_size: int) -> TeacherTopK | None:
        """The stored targets of sequence ``ids`` ``[T]``, or ``None`` if there is no entry.

        Raises:
            TeacherCacheMismatchError: the entry exists but is unreadable or belongs to other
                tokens, another teacher, k, temperature or vocabulary.
        """
        path = self.path(ids)
        if not path.is_file():
            return None
        try:
            with safe_open(str(path), framework="pt") as f:
                meta = f.metadata() or {}
                stored = {name: f.get_tensor(name) for name in ("input_ids", "logprobs", "indices", "tail")}
        except (SafetensorError, OSError, KeyError, ValueError, RuntimeError) as exc:
            raise TeacherCacheMismatchError(f"{path}: unreadable ({type(exc).__name__}: {exc})") from exc
        want = {"format": FORMAT, "teacher": self.teacher_id, "k": str(self.k),
                "temperature": repr(self.temperature), "vocab_size": str(vocab_size)}
        wrong = [f"{name} {meta.get(name)!r} != {value!r}" for name, value in want.items() if meta.get(name) != value]
        T, k = ids.numel(), min(self.k, vocab_size)
        if stored["input_ids"].shape != (T,) or not torch.equal(stored["input_ids"].to(torch.int64), ids.cpu()):
            wrong.append("the stored token ids differ from the sequence being trained on")
        shapes = {"logprobs": (T, k), "indices": (T, k), "tail": (T,)}
        wrong += [f"{name} has shape {tuple(stored[name].shape)}, expected {shape}"
                  for name, shape in shapes.items() if tuple(stored[name].shape) != shape]
        if not wrong:
            indices = stored["indices"].to(torch.int64)
            if indices.numel() and not (0 <= int(indices.min()) and int(indices.max()) < vocab_size):
                wrong.append(f"token ids outside the vocabulary of {vocab_size}")
            if bool(stored["logprobs"].isnan().any() or stored["tail"].isnan().any()):  # -inf is legal
                wrong.append("NaN log-probabilities")
        if wrong:
            raise TeacherCacheMismatchError(f"{path}: " + "; ".join(wrong))
        return TeacherTopK(stored["logprobs"], indices, stored["tail"], self.temperature)

    def store(self, ids: torch.Tensor, top: TeacherTopK, vocab_size: int) -> None:
        """Write sequence ``ids``'s targets ``top`` (``[T, k]``) atomically (temp file, fsync, rename)."""
        tensors = {"input_ids": ids.detach().to("cpu", torch.int64).contiguous(),
                   "logprobs": top.logprobs.detach().to("cpu", torch.float32).contiguous(),
                   "indices": top.indices.detach().to("cpu").to(_index_dtype(vocab_size)).contiguous(),
                   "tail": top.tail.detach().to("cpu", torch.float32).contiguous()}
        meta = {"format": FORMAT, "teacher": self.teacher_id, "k": str(self.k),
                "temperature": repr(self.temperature), "vocab_size": str(vocab_size)}
        atomic_write_bytes(self.path(ids), save(tensors, metadata=meta))

    # ------------------------------------------------------------------ a batch
    def targets(self, ids: torch.Tensor, compute: Callable[[torch.Tensor], TeacherTopK], *,
                vocab_size: int) -> TeacherTopK:
        """Targets for the batch ``ids`` ``[B, T]``: stored rows are read and verified, the others
        computed in one call ``compute(ids[missing])`` and stored. Returned on ``ids.device``."""
        rows: list[TeacherTopK | None] = []
        for row in ids:
            try:
                rows.append(self.load(row, vocab_size))
            except TeacherCacheMismatchError as exc:
                self.stats["rejected"] += 1
                logger.warning("teacher cache entry not used, recomputing it: %s", exc)
                rows.append(None)
        missing = [i for i, r in enumerate(rows) if r is None]
        self.stats["hits"] += len(rows) - len(missing)
        self.stats["misses"] += len(missing)
        if missing:
            fresh = compute(ids[missing])
            for j, i in enumerate(missing):
                rows[i] = fresh[j]
                if self.writable:
                    try:
                        self.store(ids[i], fresh[j], vocab_size)
                    except OSError as exc:  # a full or read-only disk slows training; it must not end it
                        self.writable = False
                        logger.warning("teacher cache %s is not writable (%s); training on without storing "
                                       "teacher targets", self.folder, exc)
        done = [r for r in rows if r is not None]
        return TeacherTopK(torch.stack([r.logprobs.to(ids.device) for r in done]),
                           torch.stack([r.indices.to(ids.device) for r in done]),
                           torch.stack([r.tail.to(ids.device) for r in done]), self.temperature)
