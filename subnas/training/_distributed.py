"""Distributed training helpers: one code path for a single process and for ``torchrun`` (DDP or
FSDP, chosen and applied by `subnas.training._fsdp`).

Under ``torchrun`` the environment names this process (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``,
``MASTER_ADDR``/``MASTER_PORT``); `setup` joins the process group (NCCL on CUDA, gloo on CPU).
Every rank trains on a disjoint shard of each global batch (`subnas.data._tokens.shard`); only rank 0
writes files (under FSDP every rank writes its checkpoint shards); the others wait at `barrier` where
files are read back.

Example:
    >>> info = setup()      # a plain `python` run: rank 0 of 1, no process group
    >>> (info.rank, info.world_size, info.is_main)
    (0, 1, True)
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistInfo:
    rank: int
    world_size: int
    local_rank: int

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def setup(device: str | None = None) -> DistInfo:
    """Join the process group when launched by ``torchrun`` (``WORLD_SIZE`` > 1); idempotent."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and dist.is_available() and not dist.is_initialized():
        cuda = torch.cuda.is_available() and (device is None or str(device).startswith("cuda"))
        dist.init_process_group(backend="nccl" if cuda else "gloo")
    if dist.is_available() and dist.is_initialized():
        return DistInfo(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))
    return DistInfo(0, 1, 0)


def barrier() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def mean_across_ranks(values: torch.Tensor) -> torch.Tensor:
    """Average a small tensor over all ranks (a no-op in one process)."""
    if dist.is_available() and dist.is_initialized():
        values = values.clone()
        dist.all_reduce(values, op=dist.ReduceOp.SUM)
        values /= dist.get_world_size()
    return values


def broadcast_object(obj: object) -> object:
    """Rank 0's ``obj`` on every rank (used for errors found by rank 0 alone)."""
    if dist.is_available() and dist.is_initialized():
        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]
    return obj
