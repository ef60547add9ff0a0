"""The on-disk top-k teacher cache: exact reuse, verification against the batch, any vocabulary,
every sequence stored, atomic writes (docs/design.md#performance, docs/design.md#pitfalls-avoided)."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
import torch
from transformers import AutoModelForCausalLM

import subnas._io
from subnas.data._tokens import BlockOrder, load_token_blocks
from subnas.training._losses import TeacherTopK, distillation_loss, teacher_topk
from subnas.training._teacher_cache import TeacherCache, TeacherCacheMismatchError, teacher_identity
from subnas.training import distill
from tests._train_helpers import char_tokenizer, tiny_model_dir, write_text

FAST = dict(seq_len=32, batch_size=4, lr=3e-3, min_lr=3e-4, progress=False, val_data=None, top_k=8)


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SUBNAS_CACHE", str(tmp_path / "cache"))


class FakeTeacher:
    """Deterministic logits per sequence (a function of its tokens only), counting its calls."""

    def __init__(self, vocab: int, k: int, temperature: float = 0.9) -> None:
        self.vocab, self.k, self.temperature, self.rows = vocab, k, temperature, 0

    def logits(self, ids: torch.Tensor) -> torch.Tensor:
        out = []
        for row in ids:
            g = torch.Generator().manual_seed(int(row.sum()) * 7919 + int(row[0]))
            out.append(3 * torch.randn(row.numel(), self.vocab, generator=g))
        return torch.stack(out)

    def __call__(self, ids: torch.Tensor) -> TeacherTopK:
        self.rows += ids.shape[0]
        return teacher_topk(self.logits(ids), self.k, self.temperature)


def cache_for(root: Path, teacher: FakeTeacher, teacher_id: str = "t") -> TeacherCache:
    return TeacherCache(root, teacher_id=teacher_id, k=teacher.k, temperature=teacher.temperature)


def loss_and_grad(student: torch.Tensor, ids: torch.Tensor, target: TeacherTopK) -> tuple[torch.Tensor, torch.Tensor]:
    s = student.clone().requires_grad_()
    out = distillation_loss(s, ids, target, temperature=0.9)
    (g,) = torch.autograd.grad(out.loss, s)
    return out.loss.detach(), g


@pytest.mark.parametrize("vocab", [50, 300, 70_000])  # uint16 ids up to 65,536 tokens, int32 beyond
def test_cached_top_k_loss_equals_the_uncached_loss_exactly(tmp_path: Path, vocab: int) -> None:
    teacher = FakeTeacher(vocab, k=min(16, vocab))
    ids = torch.randint(0, vocab, (3, 6))
    student = torch.randn(3, 6, vocab)
    uncached = teacher(ids)
    cache = cache_for(tmp_path, teacher)
    cold = cache.targets(ids, teacher, vocab_size=vocab)
    warm = cache_for(tmp_path, teacher).targets(ids, teacher, vocab_size=vocab)  # a new process: disk only
    assert teacher.rows == 3 + 3  # uncached + cold; the warm lookup never ran the teacher
    for target in (cold, warm):
        for a, b in ((target.logprobs, uncached.logprobs), (target.indices, uncached.indices),
                     (target.tail, uncached.tail)):
            assert a.dtype == b.dtype and torch.equal(a, b)
        loss, grad = loss_and_grad(student, ids, target)
        ref_loss, ref_grad = loss_and_grad(student, ids, uncached)
        assert torch.equal(loss, ref_loss) and torch.equal(grad, ref_grad)  # bit for bit, not approx
    stored = next(tmp_path.rglob("*.safetensors"))
    from safetensors import safe_open

    with safe_open(str(stored), framework="pt") as f:
        assert f.metadata()["vocab_size"] == str(vocab)
        assert f.get_tensor("indices").dtype == (torch.uint16 if vocab <= 65_536 else torch.int32)


def test_an_entry_of_other_tokens_is_detected_and_recomputed(tmp_path: Path, caplog: Any) -> None:
    teacher = FakeTeacher(40, k=5)
    cache = cache_for(tmp_path, teacher)
    a, b = torch.arange(8)[None], torch.arange(1, 9)[None]
    cache.targets(a, teacher, vocab_size=40)
    # What a hash collision, a bug or a copied file would look like: a's entry under b's name.
    cache.path(b[0]).parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(cache.path(a[0]), cache.path(b[0]))
    with pytest.raises(TeacherCacheMismatchError, match="stored token ids differ"):
        cache.load(b[0], 40)
    got = cache.targets(b, teacher, vocab_size=40)
    assert cache.stats == {"hits": 0, "misses": 2, "rejected": 1} and "recomputing" in caplog.text
    assert torch.equal(got.logprobs, teacher(b).logprobs)  # b's own targets, not a's
    assert cache.load(b[0], 40) is not None  # and the bad entry was replaced


def test_entries_of_another_teacher_k_or_temperature_are_never_used(tmp_path: Path) -> None:
    teacher = FakeTeacher(40, k=5)
    ids = torch.arange(8)
    cache = cache_for(tmp_path, teacher)
    cache.targets(ids[None], teacher, vocab_size=40)
    others = [TeacherCache(tmp_path, teacher_id="other", k=5, temperature=0.9),
              TeacherCache(tmp_path, teacher_id="t", k=6, temperature=0.9),
              TeacherCache(tmp_path, teacher_id="t", k=5, temperature=1.0)]
    for other in others:  # different keys: a miss, never a hit
        assert other.load(ids, 40) is None
        # ... and a file moved under their name is refused by its metadata
        other.path(ids).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(cache.path(ids), other.path(ids))
        with pytest.raises(TeacherCacheMismatchError, match="!="):
            other.load(ids, 40)
    with pytest.raises(TeacherCacheMismatchError, match="vocab_size"):
        cache.load(ids, 41)


def test_a_kill_mid_write_leaves_no_entry_and_a_torn_file_is_refused(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    teacher = FakeTeacher(40, k=5)
    cache = cache_for(tmp_path, teacher)
    ids = torch.arange(8)[None]

    def killed(*args: Any) -> None:
        raise KeyboardInterrupt  # the process dies between writing the temp file and the rename

    monkeypatch.setattr(subnas._io.os, "replace", killed)
    with pytest.raises(KeyboardInterrupt):
        cache.targets(ids, teacher, vocab_size=40)
    monkeypatch.undo()
    assert cache.load(ids[0], 40) is None and not list(tmp_path.rglob("*.safetensors*"))
    cache.targets(ids, teacher, vocab_size=40)
    path = cache.path(ids[0])
    path.write_bytes(path.read_bytes()[:-100])  # torn by something that is not our atomic writer
    with pytest.raises(TeacherCacheMismatchError, match="unreadable"):
        cache.load(ids[0], 40)
    assert torch.equal(cache.targets(ids, teacher, vocab_size=40).logprobs, teacher(ids).logprobs)


def test_teacher_identity_sees_the_weights_not_only_the_architecture(tmp_path: Path) -> None:
    a = AutoModelForCausalLM.from_pretrained(tiny_model_dir(tmp_path, seed=0))
    b = AutoModelForCausalLM.from_pretrained(tiny_model_dir(tmp_path, seed=1))
    assert teacher_identity(a) == teacher_identity(AutoModelForCausalLM.from_pretrained(tiny_model_dir(tmp_path)))
    assert teacher_identity(a) != teacher_identity(b)
    assert teacher_identity(a) != teacher_identity(a, extra={"precision": "torch.bfloat16"})


def test_training_stores_every_sequence_survives_a_kill_and_reuses_the_cache(tmp_path: Path) -> None:
    model, data = tiny_model_dir(tmp_path), write_text(tmp_path / "train.txt", 300)
    subnet = {"n_layers": 2, "intermediate_size": 48}
    kw: dict[str, Any] = dict(**FAST, max_steps=5, checkpoint_every=2, subnet=subnet)

    def run(out: str, kill_at: int | None = None, **extra: Any) -> tuple[list[float], dict[str, Any]]:
        losses: list[float] = []

        def on_step(info: dict[str, Any]) -> None:
            losses.append(info["loss"])
            if info["step"] == kill_at:
                raise KeyboardInterrupt
        summary = distill(str(model), str(data), tmp_path / out, on_step=on_step, **{**kw, **extra})
        return losses, summary

    uncached, summary = run("off", teacher_cache="off")
    assert summary["teacher_cache"] is None
    with pytest.raises(KeyboardInterrupt):  # killed after step 3; the checkpoint of step 2 survives
        run("a", kill_at=3)
    files = set((tmp_path / "cache" / "teacher_topk").rglob("*.safetensors"))
    blocks = load_token_blocks(str(data), char_tokenizer(), seq_len=32)
    order = BlockOrder(len(blocks), batch_size=4, seed=42)
    first3 = {tuple(blocks[i].tolist()) for s in range(3) for i in order.batch(s)}
    assert len(files) == len(first3)  # every sequence of every step so far, not every n-th
    resumed, summary = run("a")  # steps 3-5: step 3 comes from the cache
    assert summary["teacher_cache"]["hits"] == 4 and summary["teacher_cache"]["rejected"] == 0
    all5 = {tuple(blocks[i].tolist()) for s in range(5) for i in order.batch(s)}
    assert len(set((tmp_path / "cache" / "teacher_topk").rglob("*.safetensors"))) == len(all5)
    warm, summary = run("b")  # another run on the same data: the teacher never runs
    assert summary["teacher_cache"]["misses"] == 0 and summary["teacher_cache"]["hits"] == 5 * 4
    assert warm == uncached  # bit for bit: the cache changes nothing but the time
    assert resumed == uncached[2:]


def test_an_unwritable_cache_slows_training_but_never_stops_it(tmp_path: Path, caplog: Any) -> None:
    teacher = FakeTeacher(40, k=5)
    (tmp_path / "file").write_text("not a folder")
    cache = TeacherCache(tmp_path / "file", teacher_id="t", k=5, temperature=0.9)  # mkdir under a file fails
    ids = torch.arange(8)[None]
    assert torch.equal(cache.targets(ids, teacher, vocab_size=40).logprobs, teacher(ids).logprobs)
    assert not cache.writable and "not writable" in caplog.text
