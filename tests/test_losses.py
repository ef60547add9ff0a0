"""Distillation and cross-entropy losses against values computed by hand (math module, no torch)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from subnas.training._losses import TeacherTopK, distillation_loss, kl_divergence, teacher_topk


def softmax(z: list[float], T: float = 1.0) -> list[float]:
    e = [math.exp(x / T) for x in z]
    return [x / sum(e) for x in e]


def kl(p: list[float], q: list[float]) -> float:
    return sum(a * math.log(a / b) for a, b in zip(p, q) if a > 0)


TEACHER = [2.0, 1.0, 0.0, -1.0]
STUDENT = [0.5, 0.0, 1.0, 0.0]


def test_full_forward_kl_matches_hand_computation() -> None:
    p, q = softmax(TEACHER), softmax(STUDENT)
    got = kl_divergence(torch.tensor([STUDENT]), torch.tensor([TEACHER]), temperature=1.0)
    assert got.item() == pytest.approx(kl(p, q), rel=1e-6)


def test_reverse_kl_swaps_the_distributions() -> None:
    p, q = softmax(TEACHER), softmax(STUDENT)
    got = kl_divergence(torch.tensor([STUDENT]), torch.tensor([TEACHER]), temperature=1.0, kind="reverse")
    assert got.item() == pytest.approx(kl(q, p), rel=1e-6)
    assert kl(q, p) != pytest.approx(kl(p, q), rel=1e-3)  # the test would not notice a swap otherwise


def test_temperature_softens_both_distributions() -> None:
    T = 0.5
    p, q = softmax(TEACHER, T), softmax(STUDENT, T)
    got = kl_divergence(torch.tensor([STUDENT]), torch.tensor([TEACHER]), temperature=T)
    assert got.item() == pytest.approx(kl(p, q), rel=1e-6)


def test_top_k_keeps_the_rest_as_one_tail_bucket() -> None:
    # Teacher top-2 = tokens 0 and 1; tail = tokens 2 and 3, for teacher and student alike.
    T = 0.9
    p, q = softmax(TEACHER, T), softmax(STUDENT, T)
    p_buckets = [p[0], p[1], p[2] + p[3]]
    q_buckets = [q[0], q[1], q[2] + q[3]]
    top = teacher_topk(torch.tensor([TEACHER]), k=2, temperature=T)
    assert top.indices.tolist() == [[0, 1]]
    assert top.logprobs.exp().tolist()[0] == pytest.approx(p_buckets[:2], rel=1e-6)
    assert top.tail.exp().item() == pytest.approx(p_buckets[2], rel=1e-6)
    for kind, want in (("forward", kl(p_buckets, q_buckets)), ("reverse", kl(q_buckets, p_buckets))):
        got = kl_divergence(torch.tensor([STUDENT]), top, temperature=T, kind=kind)  # type: ignore[arg-type]
        assert got.item() == pytest.approx(want, rel=1e-6)
    # By hand: p = [.6787, .2235, .0736+.0242], q = [.2570, .1475, .4480+.1475];
    # .6787·ln(.6787/.2570) + .2235·ln(.2235/.1475) + .0978·ln(.0978/.5955) = .6591 + .0929 − .1767.
    assert kl(p_buckets, q_buckets) == pytest.approx(0.5753, abs=2e-4)


def test_top_k_of_the_whole_vocabulary_is_the_full_kl() -> None:
    torch.manual_seed(0)
    s, t = torch.randn(6, 50), torch.randn(6, 50)
    for kind in ("forward", "reverse"):
        full = kl_divergence(s, t, temperature=0.9, kind=kind)  # type: ignore[arg-type]
        top = kl_divergence(s, teacher_topk(t, 50, 0.9), temperature=0.9, kind=kind)  # type: ignore[arg-type]
        assert torch.allclose(full, top, atol=1e-5)


def test_tail_bucket_is_stable_when_top_k_holds_almost_all_mass() -> None:
    # Teacher mass outside the top-1 is ~e^-100: 1 - sum(p) would round to 0 in float32.
    t = torch.tensor([[100.0, 0.0, 0.0, 0.0]])
    top = teacher_topk(t, k=1, temperature=1.0)
    assert top.tail.item() == pytest.approx(math.log(3) - 100, abs=1e-4)
    s = torch.zeros(1, 4, requires_grad=True)
    loss = kl_divergence(s, top, temperature=1.0).sum()
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(s.grad).all()  # type: ignore[arg-type]


def test_alpha_beta_weight_cross_entropy_and_kl() -> None:
    # One sequence of two tokens: position 0 predicts label 2 (the second token).
    s = torch.tensor([[STUDENT, STUDENT]])
    t = torch.tensor([[TEACHER, TEACHER]])
    labels = torch.tensor([[0, 2]])
    ce = -math.log(softmax(STUDENT)[2])
    d = kl(softmax(TEACHER, 0.9), softmax(STUDENT, 0.9))
    out = distillation_loss(s, labels, t, alpha=0.2, beta=0.8, temperature=0.9)
    assert out.ce.item() == pytest.approx(ce, rel=1e-6)
    assert out.kd.item() == pytest.approx(d, rel=1e-6)
    assert out.loss.item() == pytest.approx(0.2 * ce + 0.8 * d, rel=1e-6)  # no T² factor (paper eq. 2)
    s.requires_grad_()
    pure_ce = distillation_loss(s, labels, None)
    assert pure_ce.loss.item() == pytest.approx(ce, rel=1e-6)
    (g,) = torch.autograd.grad(pure_ce.loss, s)
    (g_ref,) = torch.autograd.grad(F.cross_entropy(s[0, :1], labels[0, 1:]), s)
    assert torch.allclose(g, g_ref, atol=1e-7)


def test_chunked_loss_and_gradients_equal_unchunked() -> None:
    torch.manual_seed(1)
    s = torch.randn(3, 9, 37, requires_grad=True)
    t, y = torch.randn(3, 9, 37), torch.randint(0, 37, (3, 9))
    ref = 0.3 * F.cross_entropy(s[:, :-1].reshape(-1, 37), y[:, 1:].reshape(-1)) + 0.7 * F.kl_div(
        F.log_softmax(s[:, :-1] / 2.0, -1), F.log_softmax(t[:, :-1] / 2.0, -1), log_target=True,
        reduction="none").sum(-1).mean()
    (g_ref,) = torch.autograd.grad(ref, s)
    for target in (t, teacher_topk(t, 37, 2.0)):
        out = distillation_loss(s, y, target, alpha=0.3, beta=0.7, temperature=2.0, chunk_size=2)
        (g,) = torch.autograd.grad(out.loss, s)
        assert out.loss.item() == pytest.approx(ref.item(), rel=1e-5)
        assert torch.allclose(g, g_ref, atol=1e-6)


def test_ignored_labels_are_skipped_by_both_terms() -> None:
    torch.manual_seed(2)
    s, t = torch.randn(1, 5, 7), torch.randn(1, 5, 7)
    y = torch.randint(0, 7, (1, 5))
    masked = y.clone()
    masked[0, 3:] = -100  # positions 2 and 3 have no target
    short = distillation_loss(s[:, :3], y[:, :3], t[:, :3])
    out = distillation_loss(s, masked, t)
    assert out.loss.item() == pytest.approx(short.loss.item(), rel=1e-6)


def test_errors_name_the_problem() -> None:
    s, t = torch.randn(1, 3, 5), torch.randn(1, 3, 6)
    with pytest.raises(ValueError, match="same vocabulary"):
        distillation_loss(s, torch.zeros(1, 3, dtype=torch.long), t)
    with pytest.raises(ValueError, match="temperature"):
        kl_divergence(s[0], teacher_topk(torch.randn(3, 5), 2, 1.0), temperature=0.5)
    with pytest.raises(ValueError, match="kind"):
        distillation_loss(s, torch.zeros(1, 3, dtype=torch.long), torch.randn(1, 3, 5), kind="sideways")  # type: ignore[arg-type]
    assert isinstance(teacher_topk(torch.randn(2, 3, 5), 2, 1.0)[0, 1:], TeacherTopK)


@pytest.mark.parametrize("kind", ["forward", "reverse"])
@pytest.mark.parametrize("k", [None, 5, 37])
def test_closed_form_gradients_match_autograd_of_the_reference(kind: str, k: int | None) -> None:
    torch.manual_seed(3)
    s = (3 * torch.randn(2, 6, 37)).requires_grad_()
    t, y = 3 * torch.randn(2, 6, 37), torch.randint(0, 37, (2, 6))
    y[1, 4] = -100
    target = t if k is None else teacher_topk(t, k, 0.7)
    rows, labels = s[:, :-1].reshape(-1, 37), y[:, 1:].reshape(-1)
    keep = labels != -100
    ref_kd = kl_divergence(rows[keep], t[:, :-1].reshape(-1, 37)[keep] if k is None else
                           teacher_topk(t[:, :-1].reshape(-1, 37)[keep], k, 0.7), temperature=0.7, kind=kind)  # type: ignore[arg-type]
    ref = 0.2 * F.cross_entropy(rows, labels, ignore_index=-100) + 0.8 * ref_kd.mean()
    (g_ref,) = torch.autograd.grad(ref, s)
    out = distillation_loss(s, y, target, temperature=0.7, kind=kind, chunk_size=4)  # type: ignore[arg-type]
    (g,) = torch.autograd.grad(out.loss, s)
    assert out.loss.item() == pytest.approx(ref.item(), rel=1e-5)
    assert torch.allclose(g, g_ref, atol=1e-6), (g - g_ref).abs().max()
    with torch.no_grad():  # evaluation: the same numbers without building a gradient
        assert distillation_loss(s, y, target, temperature=0.7, kind=kind).loss.item() == pytest.approx(ref.item(), rel=1e-5)  # type: ignore[arg-type]


@pytest.mark.parametrize("kind", ["forward", "reverse"])
def test_student_tail_that_underflows_float32_keeps_loss_and_gradient_exact(kind: str) -> None:
    # The student puts all but ~e^-150 of its mass on one token of the teacher's top-2: summing
    # its tail probabilities would underflow to 0 (log → -inf); the log-space fallback must match
    # the masked log-sum-exp reference, value and gradient.
    torch.manual_seed(4)
    t = torch.randn(1, 3, 20)
    s = torch.zeros(1, 3, 20)
    top = teacher_topk(t, 2, 1.0)
    s[0, :, :] = -150.0
    s[0, 0, top.indices[0, 0]] = 0.0  # row 0: the student's peak is inside the teacher's top-k
    s[0, 1, top.indices[0, 1]] = 0.0
    s.requires_grad_()
    out = distillation_loss(s, torch.zeros(1, 3, dtype=torch.long), top, alpha=0.0, beta=1.0, temperature=1.0,
                            kind=kind)  # type: ignore[arg-type]
    (g,) = torch.autograd.grad(out.loss, s)
    ref = kl_divergence(s[0, :2], top[0, :2], temperature=1.0, kind=kind).mean()  # type: ignore[arg-type]
    (g_ref,) = torch.autograd.grad(ref, s)
    assert torch.isfinite(out.loss) and out.loss.item() == pytest.approx(ref.item(), rel=1e-5)
    assert torch.allclose(g, g_ref, atol=1e-6)


@pytest.mark.parametrize("k", [None, 1, 64, 999])  # 999: a one-token tail
def test_chunked_fused_loss_matches_plain_autograd_at_a_larger_vocabulary(k: int | None) -> None:
    # The textbook loss (log_softmax + kl_div + cross_entropy through autograd) is the reference;
    # every chunk size, including chunks that split sequences unevenly, must give the same value
    # and gradient within float32 tolerance.
    torch.manual_seed(5)
    V = 1000
    s = (2 * torch.randn(2, 7, V)).requires_grad_()
    t, y = 2 * torch.randn(2, 7, V), torch.randint(0, V, (2, 7))
    rows, labels = s[:, :-1].reshape(-1, V), y[:, 1:].reshape(-1)
    logp = F.log_softmax(t[:, :-1].reshape(-1, V) / 0.9, -1)
    if k is not None:  # the reference with the tail bucket, in plain torch
        top = logp.topk(k, -1)
        tail = torch.logsumexp(logp.scatter(-1, top.indices, float("-inf")), -1, keepdim=True)
        logq = F.log_softmax(rows / 0.9, -1)
        logq_b = torch.cat([logq.gather(-1, top.indices),
                            torch.logsumexp(logq.scatter(-1, top.indices, float("-inf")), -1, keepdim=True)], -1)
        kd = F.kl_div(logq_b, torch.cat([top.values, tail], -1), log_target=True, reduction="none").sum(-1).mean()
    else:
        kd = F.kl_div(F.log_softmax(rows / 0.9, -1), logp, log_target=True, reduction="none").sum(-1).mean()
    ref = 0.2 * F.cross_entropy(rows, labels) + 0.8 * kd
    (g_ref,) = torch.autograd.grad(ref, s)
    target = t if k is None else teacher_topk(t, k, 0.9)
    for chunk in (1, 4, None):
        out = distillation_loss(s, y, target, chunk_size=chunk)
        (g,) = torch.autograd.grad(out.loss, s)
        assert out.loss.item() == pytest.approx(ref.item(), rel=1e-5)
        assert torch.allclose(g, g_ref, atol=1e-7, rtol=1e-4), (g - g_ref).abs().max()


@pytest.mark.parametrize("k", [None, 3, 37])
def test_the_branch_free_gpu_path_gives_the_same_loss_and_gradient(k: int | None,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    # On a GPU the loss never branches on tensor values (that would stall the stream); run that
    # path on CPU and compare it with the CPU path, including ignored labels and a student whose
    # tail underflows.
    import subnas.training._losses

    torch.manual_seed(6)
    s, t = 3 * torch.randn(2, 6, 37), 3 * torch.randn(2, 6, 37)
    s[0, 1] = -200.0
    s[0, 1, 0] = 0.0
    y = torch.randint(0, 37, (2, 6))
    y[1, 3] = -100
    target = t if k is None else teacher_topk(t, k, 0.8)
    results = []
    for branch_free in (False, True):
        monkeypatch.setattr(subnas.training._losses, "_branch_free", lambda _: branch_free)
        x = s.clone().requires_grad_()
        out = distillation_loss(x, y, target, temperature=0.8, chunk_size=4)
        results.append((out.loss.detach(), torch.autograd.grad(out.loss, x)[0]))
    (a, ga), (b, gb) = results
    assert torch.isfinite(a) and a.item() == pytest.approx(b.item(), rel=1e-6)
    assert torch.allclose(ga, gb, atol=1e-7)
