"""Training losses: next-token cross-entropy and knowledge distillation (paper §2.3, docs/design.md#the-method).

``L = α·CE(y, s) + β·D(p_t, p_s)`` (paper eq. 2) with ``D`` the forward KL ``KL(p_t ‖ p_s)``
(eq. 3) or the reverse KL ``KL(p_s ‖ p_t)``, both distributions softened by the same temperature
``T`` (eq. 1). Paper defaults: α = 0.2, β = 0.8, T = 0.9, top-1024 teacher logits (§4.4).

**No T² factor.** Hinton et al. multiply the KD term by T² so its gradients keep their size as T
grows; the paper's eq. 2–3 have no such factor, and we follow the paper. With T = 0.9 it would
only scale β by 0.81; pass ``beta * T**2`` to get Hinton's weighting.

**Top-k with a tail bucket.** The teacher is reduced to its k largest logits (`teacher_topk`).
Instead of renormalising over those k tokens (which would tell the student that every other token
is impossible) the remaining probability mass is kept as one extra bucket: the teacher's tail is
``1 − Σ_top-k p_t`` and the student's is ``1 − Σ_top-k p_s`` on the *teacher's* indices. Both tails
are computed as a log-sum-exp over the vocabulary with the top-k entries masked out, which is
exact in log space and never suffers the cancellation of ``log(1 − Σp)`` when Σp ≈ 1. The KL is
then taken over k + 1 buckets; for k ≥ V it equals the full-logit KL.

**Memory and speed.** Every loss is computed in chunks of positions: float32 upcasts, softmaxes
and masked copies exist for one chunk at a time. The gradient with respect to the logits has a
closed form, so each chunk writes its gradient during the forward pass (one logits-sized tensor,
which backward needs anyway) and autograd keeps none of the vocabulary-sized intermediates:
one pass over the logits instead of forward + backward through a dozen elementwise ops. Within
a chunk every vocabulary-sized step is one fused kernel (``log_softmax``, in-place ``exp_``,
``mul_``), the student's softmax becomes the gradient in place, and the student's tail mass is
summed directly (with a log-space fallback when it underflows). Nothing depends on the
vocabulary size.

Example:
    >>> import torch
    >>> s, t = torch.randn(2, 5, 11), torch.randn(2, 5, 11)
    >>> y = torch.randint(0, 11, (2, 5))
    >>> full = distillation_loss(s, y, t, alpha=0.0, beta=1.0, temperature=1.0)
    >>> topk = distillation_loss(s, y, teacher_topk(t, k=11, temperature=1.0), alpha=0.0, beta=1.0,
    ...                          temperature=1.0)
    >>> torch.allclose(full.kd, topk.kd, atol=1e-5)
    True
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, NamedTuple

import torch
import torch.nn.functional as F

KLKind = Literal["forward", "reverse"]
KL_KINDS = ("forward", "reverse")
# Elements of float32 work per chunk, whatever the vocabulary size. On CPU 1M (4 MB per temporary,
# ~21 positions at V = 49152) keeps a chunk's passes in the caches: the top-k loss with its gradient
# took 0.40 s of CPU per 4×256 positions against 0.47 s at 4M, 0.84–0.97 s for the earlier version
# of `_chunk` at 4M, and 1.5 s for plain autograd on full logits (one thread, AMD EPYC, V = 49152).
# On GPU 32M (128 MB) keeps kernel launches few.
_CHUNK_ELEMENTS = {"cpu": 1 << 20, "cuda": 1 << 25}


@dataclass(frozen=True)
class TeacherTopK:
    """The teacher's k most likely tokens per position, at one temperature, plus the tail mass.

    Attributes:
        logprobs: ``[..., k]`` float32 ``log softmax(z_t / T)`` of the top-k tokens (normalised over
            the whole vocabulary, not over the k tokens).
        indices: ``[..., k]`` int64 token ids.
        tail: ``[...]`` float32 log of the probability mass outside the top k (``-inf`` if none).
        temperature: the ``T`` these were computed at; the loss checks it matches its own.
    """

    logprobs: torch.Tensor
    indices: torch.Tensor
    tail: torch.Tensor
    temperature: float

    def __getitem__(self, item: object) -> TeacherTopK:
        """Index the leading (position) dimensions alike, e.g. ``topk[b, s:e]``."""
        i: Any = item
        return TeacherTopK(self.logprobs[i], self.indices[i], self.tail[i], self.temperature)

    @property
    def shape(self) -> torch.Size:
        return self.logprobs.shape


class LossParts(NamedTuple):
    """The total loss and its two terms (each a mean over predicted tokens)."""

    loss: torch.Tensor
    ce: torch.Tensor
    kd: torch.Tensor


def _rows_per_chunk(vocab: int, chunk_size: int | None, device: torch.device) -> int:
    elements = _CHUNK_ELEMENTS.get(device.type, _CHUNK_ELEMENTS["cuda"])
    return chunk_size if chunk_size else max(1, elements // max(vocab, 1))


@torch.no_grad()
def teacher_topk(logits: torch.Tensor, k: int, temperature: float, *, chunk_size: int | None = None) -> TeacherTopK:
    """Reduce teacher logits ``[..., V]`` to a `TeacherTopK` (computed chunk by chunk, float32).

    Args:
        logits: teacher logits, any leading shape.
        k: tokens to keep; ``k >= V`` keeps all of them (tail ``-inf``).
        temperature: ``T`` of the softened distribution (paper eq. 1).
        chunk_size: positions per chunk (default: ~1M float32 elements per chunk on CPU, 32M on GPU).

    Example:
        >>> import torch
        >>> top = teacher_topk(torch.tensor([[2.0, 1.0, 0.0, -1.0]]), k=2, temperature=1.0)
        >>> top.indices.tolist(), round(float(top.logprobs.exp().sum() + top.tail.exp()), 6)
        ([[0, 1]], 1.0)
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    if k < 1:
        raise ValueError(f"top-k needs k >= 1, got {k}")
    V = logits.shape[-1]
    k = min(k, V)
    flat = logits.reshape(-1, V)
    rows = _rows_per_chunk(V, chunk_size, logits.device)
    out_lp = torch.empty(flat.shape[0], k, dtype=torch.float32, device=logits.device)
    out_ix = torch.empty(flat.shape[0], k, dtype=torch.long, device=logits.device)
    out_tail = torch.empty(flat.shape[0], dtype=torch.float32, device=logits.device)
    for s in range(0, flat.shape[0], rows):
        z = flat[s:s + rows].float() / temperature
        lse = torch.logsumexp(z, dim=-1)
        values, idx = z.topk(k, dim=-1)
        out_lp[s:s + rows] = values - lse[:, None]
        out_ix[s:s + rows] = idx
        out_tail[s:s + rows] = torch.logsumexp(z.scatter(-1, idx, float("-inf")), dim=-1) - lse
    lead = logits.shape[:-1]
    return TeacherTopK(out_lp.view(*lead, k), out_ix.view(*lead, k), out_tail.view(lead), float(temperature))


def _kl(logp: torch.Tensor, logq: torch.Tensor) -> torch.Tensor:
    """``Σ p (log p − log q)`` over the last dim; terms with p = 0 are 0 (not NaN)."""
    # Fill masked entries *before* the arithmetic: a NaN in the unused branch of `where` would
    # still poison the gradient (0 * NaN).
    mask = logp > float("-inf")
    lp, lq = logp.masked_fill(~mask, 0.0), logq.masked_fill(~mask, 0.0)
    return (lp.exp() * (lp - lq) * mask).sum(-1)


def _student_buckets(z: torch.Tensor, indices: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Student log-probs on the teacher's top-k indices and of its own tail (log-sum-exp, masked)."""
    lse = torch.logsumexp(z, dim=-1)
    top = z.gather(-1, indices) - lse[:, None]
    tail = torch.logsumexp(z.scatter(-1, indices, float("-inf")), dim=-1) - lse
    return top, tail


def kl_divergence(student_logits: torch.Tensor, teacher: torch.Tensor | TeacherTopK, *, temperature: float,
                  kind: KLKind = "forward") -> torch.Tensor:
    """Per-position KL between softened teacher and student distributions over rows ``[N, V]``.

    Args:
        student_logits: ``[N, V]``.
        teacher: ``[N, V]`` logits, or a `TeacherTopK` with ``[N, k]`` entries (k + 1 buckets).
        temperature: ``T``, applied to both.
        kind: ``"forward"`` = KL(p_t ‖ p_s) (paper eq. 3), ``"reverse"`` = KL(p_s ‖ p_t).

    Returns:
        ``[N]`` float32 divergences (nats).
    """
    z = student_logits.float() / temperature
    if isinstance(teacher, TeacherTopK):
        if abs(teacher.temperature - temperature) > 1e-12:
            raise ValueError(f"teacher top-k was computed at temperature {teacher.temperature}, "
                             f"the loss uses {temperature}")
        if teacher.indices.shape[-1] >= z.shape[-1]:  # k = V: no tail bucket, the plain full KL
            logq = torch.log_softmax(z, dim=-1).gather(-1, teacher.indices)
            logp = teacher.logprobs.float()
        else:
            top, tail = _student_buckets(z, teacher.indices)
            logq = torch.cat([top, tail[:, None]], dim=-1)
            logp = torch.cat([teacher.logprobs.float(), teacher.tail.float()[:, None]], dim=-1)
    else:
        if teacher.shape != student_logits.shape:
            raise ValueError(f"teacher logits {tuple(teacher.shape)} and student logits "
                             f"{tuple(student_logits.shape)} differ in shape (same vocabulary needed)")
        logq = F.log_softmax(z, dim=-1)
        logp = F.log_softmax(teacher.float() / temperature, dim=-1)
    if kind == "forward":
        return _kl(logp, logq)
    if kind == "reverse":
        return _kl(logq, logp)
    raise ValueError(f"kind={kind!r} is not one of {KL_KINDS}")


def _branch_free(t: torch.Tensor) -> bool:
    """Whether to avoid branching on tensor values: on a GPU each such test stalls the stream
    until the values exist, so there the general path runs unconditionally."""
    return t.device.type != "cpu"


def _tail_logmass(zt: torch.Tensor, lse: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """``log Σ_{j ∉ idx} softmax(zt)_j`` as a masked log-sum-exp: exact however small the mass."""
    return torch.logsumexp(zt.scatter(-1, idx, float("-inf")), dim=-1) - lse


def _chunk(s: torch.Tensor, y: torch.Tensor, t: torch.Tensor | TeacherTopK | None, alpha: float, beta: float,
           temperature: float, kind: KLKind, ignore_index: int, scale: float,
           want_grad: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """CE sum, KL sum and (optionally) ``scale · d(α·CE_sum + β·KL_sum)/d s`` for rows ``s`` ``[n, V]``.

    The gradients are closed forms (``q`` = student softmax at T, buckets b = teacher top-k
    singletons plus the tail, ``P_b``/``Q_b`` their teacher/student mass):

    - CE: ``softmax(s) − onehot(y)``;
    - forward KL: ``(q_j − P_b(j) · q_j / Q_b(j)) / T``, i.e. ``(q_j − p_j)/T`` on the top-k and
      ``q_j (1 − P_tail/Q_tail)/T`` on the tail: one scale of ``q`` per row;
    - reverse KL: ``q_j (log Q_b(j) − log P_b(j) − KL) / T``.

    One pass computes value and gradient, instead of autograd's forward, saved tensors and
    backward over several vocabulary-sized intermediates. Each vocabulary-sized step is one fused
    kernel (``log_softmax``, in-place ``exp_``/``mul_``), and ``q`` is turned into the gradient in
    place, so a chunk makes ~8 passes over ``V`` floats. `kl_divergence` is the reference these
    are tested against.
    """
    valid = y != ignore_index
    z = s.float()  # a no-op for float32 logits: never modified in place below
    zero = torch.zeros((), dtype=torch.float32, device=s.device)
    ce_sum, kd_sum, ce_grad = zero, zero, None
    if alpha != 0 or t is None:
        safe_y = y.masked_fill(~valid, 0)[:, None]
        logp1 = torch.log_softmax(z, dim=-1)
        ce_sum = -(logp1.gather(-1, safe_y).squeeze(-1) * valid).sum()
        if want_grad:
            ce_grad = logp1.exp_()  # softmax(s), in place
            ce_grad.scatter_add_(-1, safe_y, torch.full_like(safe_y, -1, dtype=ce_grad.dtype))
            if t is None:
                return ce_sum, kd_sum, ce_grad.mul_(valid[:, None] * scale)
    if t is None or beta == 0:
        if ce_grad is not None:
            ce_grad.mul_(valid[:, None] * (alpha * scale))
        return ce_sum, kd_sum, ce_grad
    zt = z / temperature if temperature != 1 else z
    logq = torch.log_softmax(zt, dim=-1)
    c = beta * scale / temperature  # d KL / d z = (d KL / d zt) / T
    g: torch.Tensor | None = None
    if isinstance(t, TeacherTopK):
        if abs(t.temperature - temperature) > 1e-12:
            raise ValueError(f"teacher top-k was computed at temperature {t.temperature}, the loss uses {temperature}")
        idx, logp_top = t.indices, t.logprobs.float()
        logq_top = logq.gather(-1, idx)
        q = logq.exp_()  # logq is not needed past its top-k entries: reuse its memory
        has_tail = idx.shape[-1] < z.shape[-1]
        if has_tail:
            # The student's tail mass summed directly over the non-top-k probabilities: no 1 − Σq
            # cancellation. Rows whose tail underflows float32 are redone in log space.
            q.scatter_(-1, idx, 0.0)
            logq_tail = q.sum(-1).log()
            # On CPU only the (rare) underflowing rows are redone; on a GPU every row is (see
            # `_branch_free`).
            redo = torch.arange(len(z), device=z.device) if _branch_free(z) else (logq_tail < -80.0).nonzero()[:, 0]
            if len(redo):
                lse = torch.logsumexp(zt[redo], dim=-1)
                logq_tail[redo] = _tail_logmass(zt[redo], lse, idx[redo])
            logp_tail = t.tail.float()
            logp_b = torch.cat([logp_top, logp_tail[:, None]], dim=-1)
            logq_b = torch.cat([logq_top, logq_tail[:, None]], dim=-1)
        else:
            logp_b, logq_b = logp_top, logq_top
        if kind == "forward":
            kl = _kl(logp_b, logq_b)
            if want_grad:
                top = logq_top.exp() - logp_top.exp()
                if has_tail:
                    ratio = (logp_tail - logq_tail).exp()  # P_tail / Q_tail
                    g = q.mul_(((1 - ratio) * c)[:, None])
                    if len(redo):  # q_j / Q_tail from logs: q_j alone may have underflowed
                        log_qj = zt[redo] - lse[:, None]
                        g[redo] = c * (log_qj.exp() - (log_qj - logq_tail[redo, None] + logp_tail[redo, None]).exp())
                else:
                    g = q
                g.scatter_(-1, idx, top * c)
        else:
            kl = _kl(logq_b, logp_b)
            if want_grad:
                top = logq_top.exp() * (logq_top - logp_top - kl[:, None])
                g = q.mul_(((logq_tail - logp_tail - kl) * c)[:, None]) if has_tail else q
                g.scatter_(-1, idx, top * c)
    else:
        logp = torch.log_softmax(t.float() / temperature, dim=-1)
        finite = not _branch_free(z) and bool(torch.isfinite(logp).all())  # else p = 0 entries need masking
        if kind == "forward":
            p = logp.exp()
            kl = (logp - logq).mul_(p).sum(-1) if finite else _kl(logp, logq)
            g = logq.exp_().sub_(p).mul_(c) if want_grad else None
        else:
            q, d = logq.exp(), logq - logp
            kl = (d * q).sum(-1) if finite else _kl(logq, logp)
            g = q.mul_(d.sub_(kl[:, None])).mul_(c) if want_grad else None
    kd_sum = (kl * valid).sum()
    if g is not None:
        if ce_grad is not None:
            g.add_(ce_grad, alpha=alpha * scale)
        if _branch_free(z) or not bool(valid.all()):
            g.mul_(valid[:, None])
    return ce_sum, kd_sum, g


def _total(logits: torch.Tensor, labels: torch.Tensor, teacher: Any, alpha: float, beta: float, temperature: float,
           kind: KLKind, rows: int, ignore_index: int,
           want_grad: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """``(loss, ce, kd, d loss / d logits)`` over all chunks (the gradient only if ``want_grad``)."""
    B, T, _ = logits.shape
    n_valid = int((labels[:, 1:] != ignore_index).sum())
    n = max(n_valid, 1)
    grad = torch.zeros_like(logits) if want_grad else None  # the last position predicts nothing: stays 0
    sums = torch.zeros(2, dtype=torch.float32, device=logits.device)
    for b in range(B):  # per sequence: logits[b, s:e] is a contiguous view, never a copy of the batch
        for s in range(0, T - 1, rows):
            e = min(s + rows, T - 1)
            ce, kd, g = _chunk(logits[b, s:e], labels[b, s + 1:e + 1], None if teacher is None else teacher[b, s:e],
                               alpha, beta, temperature, kind, ignore_index, 1.0 / n, want_grad)
            sums += torch.stack([ce, kd])
            if grad is not None and g is not None:
                grad[b, s:e] = g
    ce_mean, kd_mean = sums[0] / n, sums[1] / n
    loss = ce_mean if teacher is None else alpha * ce_mean + beta * kd_mean
    return loss, ce_mean, kd_mean, grad


class _FusedLoss(torch.autograd.Function):
    """``α·CE + β·KL`` whose gradient is computed chunk by chunk during the forward pass."""

    @staticmethod
    def forward(ctx: Any, logits: torch.Tensor, labels: torch.Tensor, teacher: Any, alpha: float, beta: float,
                temperature: float, kind: KLKind, rows: int, ignore_index: int) -> tuple[torch.Tensor, ...]:
        loss, ce, kd, grad = _total(logits, labels, teacher, alpha, beta, temperature, kind, rows, ignore_index,
                                    want_grad=True)
        ctx.save_for_backward(grad)
        ctx.mark_non_differentiable(ce, kd)
        return loss.clone(), ce, kd  # a clone: for plain CE `loss` is `ce`, which is non-differentiable

    @staticmethod
    def backward(ctx: Any, grad_loss: torch.Tensor, *_: Any) -> tuple[Any, ...]:
        (grad,) = ctx.saved_tensors
        return (grad * grad_loss.to(grad.dtype),) + (None,) * 8


def distillation_loss(
    student_logits: torch.Tensor,
    labels: torch.Tensor,
    teacher: torch.Tensor | TeacherTopK | None = None,
    *,
    alpha: float = 0.2,
    beta: float = 0.8,
    temperature: float = 0.9,
    kind: KLKind = "forward",
    chunk_size: int | None = None,
    ignore_index: int = -100,
) -> LossParts:
    """``α·CE + β·KL`` for causal LM logits, shifted: position i predicts token i + 1.

    With ``teacher=None`` only the CE term is computed (plain pretraining; ``kd`` is 0). Only
    ``loss`` carries a gradient; ``ce`` and ``kd`` are for logging.

    Args:
        student_logits: ``[B, T, V]``.
        labels: ``[B, T]`` target ids (usually the input ids); ``ignore_index`` entries are skipped.
        teacher: ``[B, T, V]`` logits or a `TeacherTopK` of ``[B, T, k]`` (see `teacher_topk`).
        alpha: weight of the cross-entropy with the data (paper: 0.2).
        beta: weight of the KL term (paper: 0.8). No T² factor (see the module docstring).
        temperature: softmax temperature of the KL term (paper: 0.9); CE always uses T = 1.
        kind: ``"forward"`` (paper) or ``"reverse"`` KL.
        chunk_size: positions per chunk (default: ~1M float32 elements per chunk on CPU, 32M on GPU).
        ignore_index: label value that marks positions without a target.

    Returns:
        `LossParts` ``(loss, ce, kd)``, each a float32 mean over predicted tokens.
    """
    if student_logits.dim() != 3 or labels.shape != student_logits.shape[:2]:
        raise ValueError(f"need logits [B, T, V] and labels [B, T], got {tuple(student_logits.shape)} "
                         f"and {tuple(labels.shape)}")
    if teacher is not None:
        if tuple(teacher.shape[:2]) != tuple(labels.shape):
            raise ValueError(f"teacher covers positions {tuple(teacher.shape[:2])}, the batch is {tuple(labels.shape)}")
        if isinstance(teacher, torch.Tensor) and teacher.shape != student_logits.shape:
            raise ValueError(f"teacher logits {tuple(teacher.shape)} and student logits {tuple(student_logits.shape)} "
                             "differ in shape (same vocabulary needed)")
    if kind not in KL_KINDS:
        raise ValueError(f"kind={kind!r} is not one of {KL_KINDS}")
    rows = _rows_per_chunk(student_logits.shape[-1], chunk_size, student_logits.device)
    labels = labels.to(student_logits.device)
    if torch.is_grad_enabled() and student_logits.requires_grad:
        loss, ce, kd = _FusedLoss.apply(student_logits, labels, teacher, alpha, beta,  # type: ignore[no-untyped-call]
                                        temperature, kind, rows, ignore_index)
        return LossParts(loss, ce, kd)
    with torch.no_grad():
        loss, ce, kd, _ = _total(student_logits, labels, teacher, alpha, beta, temperature, kind, rows, ignore_index,
                                 want_grad=False)
    return LossParts(loss, ce, kd)
