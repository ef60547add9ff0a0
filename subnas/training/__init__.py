"""Training: pretrain (cross-entropy) or distill (from the teacher) an extracted small model.

- ``_run``: `pretrain` and `distill`: what ``subnas pretrain``/``distill`` run.
- ``_supernet``: `train_supernet`: weight-sharing training of the sub-networks (``subnas train-supernet``).
- ``_config``: `TrainConfig`, every training option (a flag each), checked in one place.
- ``_loop``: the training loop behind both (resumable, mixed precision, DDP/FSDP-aware).
- ``_losses``: next-token cross-entropy and knowledge distillation (top-k teacher logits).
- ``_teacher_cache``: a verified on-disk cache of the teacher's top-k logits.
- ``_checkpoints``: checkpoints written atomically and verified on resume.
- ``_log``: a CSV row per step, TensorBoard when installed, a training-curve plot.
- ``_distributed``: one code path for a single process and for ``torchrun``.
- ``_fsdp``: DDP or FSDP2 under ``torchrun`` (sharded student and teacher, resharding checkpoints).
"""

from subnas.training._config import TrainConfig, TrainConfigError, make_config
from subnas.training._run import VocabularyMismatchError, distill, pretrain, teacher_for_student
from subnas.training._supernet import SizeRange, train_supernet

__all__ = ["SizeRange", "TrainConfig", "TrainConfigError", "VocabularyMismatchError", "distill", "make_config",
           "pretrain", "teacher_for_student", "train_supernet"]
