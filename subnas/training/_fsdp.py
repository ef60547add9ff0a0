"""Sharded training (FSDP2) beside DDP: which one a run uses, and what changes with it.

Under DDP every process holds the whole student, its gradients and AdamW state (16 bytes per
parameter in float32) and the whole teacher. With ``parallel="fsdp"`` the engine PyTorch ships
(``torch.distributed.fsdp.fully_shard``, "FSDP2") shards them instead:

- the student per decoder layer, then the root (embeddings, final norm, head): each process keeps
  ``1/world`` of every weight, gradient and optimizer moment, and a layer's weights are gathered
  only while it runs (forward and backward);
- the teacher the same way (forward only, no gradients, no optimizer state);
- on CUDA with ``bf16``, the gathered weights are bf16 for compute while the shards, the gradient
  reduction and AdamW stay float32 (``MixedPrecisionPolicy``); on CPU everything is float32;
- checkpoints go through ``torch.distributed.checkpoint`` (a ``dcp/`` folder of per-process
  shards and their metadata), which re-shards on load: a run resumes at any number of processes,
  one included (`subnas.training._checkpoints.load_checkpoint`);
- the finished model is gathered once on rank 0 and written as the same stock safetensors folder
  as a single-process run.

``parallel="auto"`` (the default) picks DDP unless the replicated training state would not fit:
FSDP when there is more than one process on CUDA and ``16·student + 4·teacher`` bytes exceed half
of one GPU's memory (`choose`). One process never shards. Forward passes of a sharded model are
collective, so under FSDP every process runs the validation too.

Example:
    >>> import torch
    >>> choose("auto", world_size=1, device=torch.device("cpu"), student=torch.nn.Linear(2, 2), teacher=None)
    'single'
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any, Iterator

import torch
from torch import nn

PARALLEL = ("auto", "ddp", "fsdp")
#: Bytes per parameter every DDP process holds: float32 weights, gradients and AdamW's two moments.
TRAINED_BYTES = 16
#: Bytes per teacher parameter (float32 weights, no gradients).
FROZEN_BYTES = 4


def choose(parallel: str, *, world_size: int, device: torch.device, student: nn.Module,
           teacher: nn.Module | None) -> str:
    """``"single"``, ``"ddp"`` or ``"fsdp"``: how a run of ``world_size`` processes trains (see the module doc)."""
    if parallel not in PARALLEL:
        raise ValueError(f"parallel={parallel!r} is not one of {PARALLEL}")
    if world_size == 1:
        return "single"
    if parallel != "auto":
        return parallel
    if device.type != "cuda":
        return "ddp"
    need = TRAINED_BYTES * _numel(student) + (FROZEN_BYTES * _numel(teacher) if teacher is not None else 0)
    return "fsdp" if need > 0.5 * torch.cuda.get_device_properties(device).total_memory else "ddp"


def _numel(model: nn.Module) -> int:
    return sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())


def decoder_layers(model: nn.Module) -> list[nn.Module]:
    """The model's decoder layers: its longest `nn.ModuleList` (``model.layers``, ``transformer.h``, ...)."""
    lists = [m for m in model.modules() if isinstance(m, nn.ModuleList)]
    return list(max(lists, key=len)) if lists else []


def shard(model: nn.Module, device: torch.device, *, bf16: bool, frozen: bool = False) -> nn.Module:
    """``fully_shard`` each decoder layer of ``model``, then the root; moves the shards to ``device``.

    FSDP keeps the root's weights (embeddings, head) gathered between forward and backward; a
    ``frozen`` model (the teacher) has no backward, so its root is re-sharded after the forward too.
    """
    import torch.distributed as dist
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    if device.type == "cuda":
        torch.cuda.set_device(device)  # the mesh and FSDP place shards on the current device
    mesh = init_device_mesh(device.type, (dist.get_world_size(),))
    policy = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32) \
        if bf16 and device.type == "cuda" else MixedPrecisionPolicy()
    for layer in decoder_layers(model):
        fully_shard(layer, mesh=mesh, mp_policy=policy)
    fully_shard(model, mesh=mesh, mp_policy=policy, reshard_after_forward=True if frozen else None)
    return model


def wrap(kind: str, student: nn.Module, teacher: nn.Module | None, device: torch.device, *,
         bf16: bool, objective_module: nn.Module | None = None) -> nn.Module:
    """The module the loop runs forward and backward on: ``student`` itself (single process; FSDP,
    which shards ``student`` and ``teacher`` in place) or its DDP wrapper; with an objective's
    module (supernet training, which runs several sub-networks of ``student`` per step) that module
    instead, under DDP with unused parameters allowed (a small sub-network leaves some without a
    gradient). Supernet training is not sharded yet: it asks for DDP."""
    if kind == "fsdp":
        if objective_module is not None:
            raise ValueError("supernet training runs under DDP, not FSDP (not supported yet); give --parallel ddp")
        if teacher is not None:
            shard(teacher, device, bf16=bf16, frozen=True)
        return shard(student, device, bf16=bf16)
    module = objective_module if objective_module is not None else student
    if kind == "ddp":
        return nn.parallel.DistributedDataParallel(module, device_ids=[device.index] if device.type == "cuda" else None,
                                                   find_unused_parameters=objective_module is not None)
    return module


def sync(kind: str, model: nn.Module, *, last: bool) -> contextlib.AbstractContextManager[Any]:
    """Gradient synchronisation for one micro-batch: only on the last of an accumulated step."""
    if kind == "ddp" and not last:
        return model.no_sync()  # type: ignore[operator]
    if kind == "fsdp":
        model.set_requires_gradient_sync(last)  # type: ignore[operator]
    return contextlib.nullcontext()


def clip_grad_norm(model: nn.Module, max_norm: float) -> float:
    """``clip_grad_norm_`` as a float; a sharded model's norm is a DTensor, made whole first."""
    norm = torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm)
    full = getattr(norm, "full_tensor", None)
    return float(full() if full is not None else norm)


def is_sharded(model: nn.Module) -> bool:
    from torch.distributed.fsdp import FSDPModule

    return isinstance(model, FSDPModule)


# ---------------------------------------------------------------------------- checkpoints
DCP = "dcp"  # the sub-folder of a checkpoint written by torch.distributed.checkpoint


def save_sharded(folder: Path, model: nn.Module, optimizer: torch.optim.Optimizer) -> None:
    """Every process writes its shards of the weights and the optimizer state into ``folder/dcp``."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict

    model_state, optim_state = get_state_dict(model, optimizer)
    dcp.save({"model": model_state, "optim": optim_state}, checkpoint_id=str(folder / DCP), no_dist=_single())


def _single() -> bool:
    """No process group: one process reads or writes the whole checkpoint."""
    import torch.distributed as dist

    return not (dist.is_available() and dist.is_initialized())


def load_sharded(folder: Path, model: nn.Module, optimizer: torch.optim.Optimizer) -> None:
    """Load ``folder/dcp`` into ``model`` and ``optimizer``, sharded or not, at any number of processes."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

    model_state, optim_state = get_state_dict(model, optimizer)
    state = {"model": model_state, "optim": optim_state}
    dcp.load(state, checkpoint_id=str(folder / DCP), no_dist=_single())
    set_state_dict(model, optimizer, model_state_dict=state["model"], optim_state_dict=state["optim"])


def full_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The whole model's weights on rank 0's CPU (empty elsewhere); collective for a sharded model."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    return get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))


def save_pretrained(model: nn.Module, folder: Path, state: dict[str, torch.Tensor]) -> None:
    """Write a sharded ``model`` with the gathered ``state`` as its stock class would (rank 0 only):
    the same ``config.json`` (``architectures`` names the stock class, not FSDP's subclass) and
    safetensors as an unsharded run."""
    from torch.distributed.fsdp import FSDPModule
    from transformers.initialization import no_init_weights

    cls = next(c for c in type(model).__mro__ if not issubclass(c, FSDPModule))
    with no_init_weights():
        plain = cls(model.config)
    plain.load_state_dict(state, strict=False, assign=True)
    if getattr(plain.config, "tie_word_embeddings", False):
        plain.tie_weights()
    plain.save_pretrained(folder, safe_serialization=True)


@contextlib.contextmanager
def shared_directory(target: Path, *, is_main: bool) -> Iterator[Path]:
    """`subnas._io.atomic_directory` for a folder every process writes into: rank 0 creates the
    temporary folder and renames it once all processes are done."""
    from subnas._io import atomic_directory
    from subnas.training._distributed import barrier, broadcast_object

    if not is_main:
        tmp = Path(str(broadcast_object(None)))
        yield tmp
        barrier()
        return
    with atomic_directory(target, overwrite=True) as tmp:
        broadcast_object(str(tmp))
        yield tmp
        barrier()
