"""Training: pretrain (cross-entropy) or distill (from the teacher) an extracted small model.

- ``_run``: `pretrain`, `distill` and `TrainConfig`: what ``subnas pretrain``/``distill`` run.
- ``_loop``: the training loop behind both (resumable, mixed precision, DDP-aware).
- ``_losses``: next-token cross-entropy and knowledge distillation (top-k teacher logits).
- ``_teacher_cache``: a verified on-disk cache of the teacher's top-k logits.
- ``_checkpoints``: checkpoints written atomically and verified on resume.
- ``_log``: a CSV row per step, TensorBoard when installed, a training-curve plot.
- ``_distributed``: one code path for a single process and for ``torchrun``.
"""

from subnas.training._run import TrainConfig, TrainConfigError, VocabularyMismatchError, distill, pretrain

__all__ = ["TrainConfig", "TrainConfigError", "VocabularyMismatchError", "distill", "pretrain"]
