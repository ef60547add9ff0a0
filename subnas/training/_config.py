"""`TrainConfig`: every training option of `pretrain` and `distill`, checked in one place.

Each field is a flag of ``subnas pretrain``/``subnas distill`` (``lr`` -> ``--lr``); the help is the
field's entry under ``Attributes`` below.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from typing import Any, Callable, Literal

Init = Literal["pretrained", "random"]
INITS = ("pretrained", "random")


@dataclass(frozen=True, kw_only=True)
class TrainConfig:
    """Hyperparameters of a training run; defaults are the paper's (Appendix C, §4.4).

    Batches are counted in sequences of ``seq_len`` tokens: ``batch_size`` is the global batch per
    optimizer step; each process runs ``micro_batch_size`` sequences per forward pass and
    accumulates gradients over ``batch_size / (micro_batch_size · processes)`` passes.

    Attributes:
        seq_len: tokens per sequence.
        batch_size: sequences per optimizer step (over all processes).
        micro_batch_size: sequences per forward pass in each process (default: the whole
            per-process share in one pass).
        max_tokens: the token budget; steps = max_tokens // (batch_size · seq_len).
        max_steps: optimizer steps; overrides ``max_tokens``.
        lr: peak learning rate (linear warmup, then cosine to ``min_lr``).
        min_lr: learning rate at the end of the cosine decay.
        warmup_steps: linear warmup steps.
        weight_decay: AdamW weight decay.
        beta1: AdamW's first-moment decay.
        beta2: AdamW's second-moment decay.
        grad_clip: gradient-norm clipping threshold; <= 0: no clipping.
        seed: seed of the data order and of a random init.
        alpha: weight of the cross-entropy in ``alpha·CE + beta·KL`` (distillation, paper §4.4: 0.2).
        beta: weight of the KL term (paper: 0.8).
        temperature: distillation temperature (paper: 0.9).
        top_k: teacher logits kept per position; ``None``: the full logits.
        kl: ``forward`` KL(teacher‖student) or ``reverse``.
        loss_chunk_size: positions per loss chunk (default: ~1M floats on CPU, 32M on GPU).
        teacher_cache: top-k teacher targets cached on disk and reused by every run on the same
            sequences (`subnas.training._teacher_cache`): ``auto`` (on CPU, under the subnas cache),
            ``on``, ``off``, or a folder.
        streaming: read the training text as a stream, up to the token budget (large corpora).
        eval_every: steps between validations; 0: only at the start and the end.
        eval_seqs: validation sequences.
        checkpoint_every: steps between checkpoints.
        keep_checkpoints: checkpoints kept (the latest).
        keep_final_checkpoint: a finished run keeps only its model (checkpoints hold the optimizer
            state: ~3x the model); true keeps the last checkpoint, to continue training the run later.
        device: where to train: cpu, cuda, cuda:1, ... (default: this process's GPU if available,
            else cpu).
        bf16: bf16 autocast where native: CUDA, CPUs with AVX512-BF16/AMX
            (`subnas.training._loop.precision`).
        parallel: how several processes (``torchrun``) train: ``ddp`` (each holds the whole student
            and teacher), ``fsdp`` (both sharded per layer, `subnas.training._fsdp`), or ``auto``: FSDP
            on CUDA when DDP's 16 bytes per student parameter plus 4 per teacher parameter exceed half
            a GPU, else DDP.
        progress: show progress bars.
        tensorboard: also log to TensorBoard (when installed).
    """

    seq_len: int = 512
    batch_size: int = 8
    micro_batch_size: int | None = None
    max_tokens: int = 1_000_000
    max_steps: int | None = None
    lr: float = 3e-4
    min_lr: float = 3e-5
    warmup_steps: int = 0
    weight_decay: float = 0.01
    beta1: float = 0.9
    beta2: float = 0.95
    grad_clip: float = 1.0
    seed: int = 42
    # distillation (paper §4.4)
    alpha: float = 0.2
    beta: float = 0.8
    temperature: float = 0.9
    top_k: int | None = 1024
    kl: str = "forward"
    loss_chunk_size: int | None = None
    teacher_cache: str = "auto"
    # data
    streaming: bool = False
    # bookkeeping (free to change between a run and its resume)
    eval_every: int = 100
    eval_seqs: int = 16
    checkpoint_every: int = 100
    keep_checkpoints: int = 2
    keep_final_checkpoint: bool = False
    device: str | None = None
    bf16: bool = True
    parallel: Literal["auto", "ddp", "fsdp"] = "auto"
    progress: bool = True
    tensorboard: bool = True

    #: Fields that do not change the training trajectory: a resume may change them.
    RESUMABLE_CHANGES = frozenset({"micro_batch_size", "eval_every", "eval_seqs", "checkpoint_every",
                                   "keep_checkpoints", "keep_final_checkpoint", "device", "progress", "tensorboard",
                                   "teacher_cache", "parallel"})

    def __post_init__(self) -> None:
        # (field, legal?, what is legal): every problem is reported at once, with its legal range.
        n = self.batch_size
        checks = [
            ("seq_len", self.seq_len >= 2, "an integer >= 2 (tokens per sequence)"),
            ("batch_size", self.batch_size >= 1, "an integer >= 1 (sequences per optimizer step)"),
            ("micro_batch_size", self.micro_batch_size is None or 1 <= self.micro_batch_size <= max(n, 1),
             f"an integer from 1 to the batch size ({n}): sequences per forward pass"),
            ("max_tokens", self.max_tokens >= 1, "an integer >= 1 (the token budget)"),
            ("max_steps", self.max_steps is None or self.max_steps >= 1, "an integer >= 1, or none"),
            ("lr", self.lr > 0, "a number > 0"),
            ("min_lr", 0 <= self.min_lr <= self.lr, f"a number from 0 to lr ({self.lr})"),
            ("warmup_steps", self.warmup_steps >= 0, "an integer >= 0"),
            ("weight_decay", self.weight_decay >= 0, "a number >= 0"),
            ("beta1", 0 <= self.beta1 < 1, "a number in [0, 1) (AdamW's first-moment decay)"),
            ("beta2", 0 <= self.beta2 < 1, "a number in [0, 1) (AdamW's second-moment decay)"),
            ("temperature", self.temperature > 0, "a number > 0 (paper: 0.9)"),
            ("top_k", self.top_k is None or self.top_k >= 1, "an integer >= 1, or none for the full logits"),
            ("kl", self.kl in ("forward", "reverse"), "'forward' or 'reverse'"),
            ("parallel", self.parallel in ("auto", "ddp", "fsdp"), "'auto', 'ddp' or 'fsdp'"),
            ("alpha", self.alpha >= 0, "a number >= 0 (weight of the cross-entropy; paper: 0.2)"),
            ("beta", self.beta >= 0, "a number >= 0 (weight of the KL term; paper: 0.8)"),
            ("checkpoint_every", self.checkpoint_every >= 1, "an integer >= 1 (steps)"),
            ("keep_checkpoints", self.keep_checkpoints >= 1, "an integer >= 1"),
            ("eval_every", self.eval_every >= 0, "an integer >= 0 (steps; 0: only at the start and the end)"),
            ("eval_seqs", self.eval_seqs >= 1, "an integer >= 1"),
        ]
        bad = [((name,), (getattr(self, name),), legal) for name, ok, legal in checks if not ok]
        if bad:
            raise TrainConfigError(bad)

    def check_distillation(self) -> None:
        """Raise `TrainConfigError` if ``alpha·CE + beta·KL`` cannot train (both weights 0)."""
        if self.alpha == 0 and self.beta == 0:
            raise TrainConfigError([(("alpha", "beta"), (self.alpha, self.beta),
                                     "the distillation loss alpha*CE + beta*KL would be 0 at every step and "
                                     "nothing would be learned; give alpha > 0 or beta > 0 (paper: 0.2 and 0.8)")])

    def identity(self) -> dict[str, Any]:
        """The fields a checkpoint must agree on to be resumed."""
        return {k: v for k, v in asdict(self).items() if k not in self.RESUMABLE_CHANGES}

    def total_steps(self) -> int:
        return self.max_steps or max(1, self.max_tokens // (self.batch_size * self.seq_len))


def make_config(config: TrainConfig | None = None, **overrides: Any) -> TrainConfig:
    """``config`` (default `TrainConfig()`) with keyword overrides; unknown names are an error."""
    names = {f.name for f in fields(TrainConfig)}
    unknown = sorted(set(overrides) - names)
    if unknown:
        raise TypeError(f"unknown training option(s) {unknown}; the options are {sorted(names)}")
    return replace(config or TrainConfig(), **overrides)


class TrainConfigError(ValueError):
    """Training options outside their legal range.

    ``problems`` holds ``(fields, values, what is legal)`` triples, so the CLI can name its flags
    (``--batch-size 0``) where the Python API names fields (``batch_size=0``).
    """

    Problem = tuple[tuple[str, ...], tuple[Any, ...], str]

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        super().__init__(self.describe(lambda name, value: f"{name}={value!r}"))

    def describe(self, show: Callable[[str, Any], str]) -> str:
        """One line naming every bad option with ``show(field, value)`` and what is legal."""
        return "invalid training option(s): " + "; ".join(
            " and ".join(show(f, v) for f, v in zip(fields_, values)) + f": {'give ' if len(fields_) == 1 else ''}"
            + legal for fields_, values, legal in self.problems)
