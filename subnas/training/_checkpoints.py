"""Training checkpoints: written atomically, verified on resume (docs/design.md#invariants, invariant 6; docs/design.md#reliability).

A checkpoint is a folder ``<run>/checkpoints/step-00000012/`` holding

- ``model.safetensors`` — the weights (`safetensors.torch.save_model`: tied tensors stored once);
- ``optimizer.pt`` — the AdamW state; only tensors, numbers and lists, so it loads with
  ``torch.load(weights_only=True)`` and nothing in it can run code;
- ``state.json`` — the step, tokens seen, the run's fingerprint, and whatever the trainer adds.

A run sharded with FSDP writes ``dcp/`` (``torch.distributed.checkpoint``: each process's shards and
their metadata) in place of the first two; it loads at any number of processes.

The learning rate is a pure function of the step and the data order a pure function of
``(seed, step)`` (`subnas.data.BlockOrder`), and the trainer reseeds torch's RNG from
``(seed, step, rank)`` at every step, so no scheduler or RNG state needs saving: the step *is*
that state, on any number of processes.

The folder is built under a temporary name, fsynced and renamed (`subnas._io.atomic_directory`),
so a kill at any moment leaves either the previous checkpoint or the new one, never half of one;
the last ``keep`` are kept.

Example:
    >>> from pathlib import Path
    >>> latest_checkpoint(Path("/nonexistent/run")) is None
    True
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_model, save_model

from subnas._io import CorruptCheckpointError, atomic_directory

CHECKPOINTS = "checkpoints"
_PREFIX = "step-"


class CheckpointMismatchError(ValueError):
    """The run folder's checkpoint was written by a different model, data or configuration."""


def checkpoint_dir(run_dir: Path, step: int) -> Path:
    return Path(run_dir) / CHECKPOINTS / f"{_PREFIX}{step:08d}"


def list_checkpoints(run_dir: Path) -> list[Path]:
    """Complete checkpoints of a run, oldest first (a folder without ``state.json`` is skipped)."""
    root = Path(run_dir) / CHECKPOINTS
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if p.name.startswith(_PREFIX) and (p / "state.json").is_file()]
    return sorted(found, key=lambda p: int(p.name[len(_PREFIX):]))


def latest_checkpoint(run_dir: Path) -> Path | None:
    found = list_checkpoints(run_dir)
    return found[-1] if found else None


def save_checkpoint(run_dir: Path, *, step: int, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                    state: dict[str, Any], keep: int = 2, is_main: bool = True) -> Path:
    """Write the checkpoint of ``step`` atomically and delete all but the newest ``keep``.

    A model sharded by FSDP (`subnas.training._fsdp`) is written by every process through
    ``torch.distributed.checkpoint`` into ``dcp/`` instead of ``model.safetensors`` + ``optimizer.pt``;
    then every process calls this, and ``is_main`` says which one writes ``state.json``.
    """
    from subnas.training import _fsdp

    target = checkpoint_dir(run_dir, step)
    sharded = _fsdp.is_sharded(model)
    folder = _fsdp.shared_directory(target, is_main=is_main) if sharded else atomic_directory(target, overwrite=True)
    with folder as tmp:
        if sharded:
            _fsdp.save_sharded(tmp, model, optimizer)
        else:
            save_model(model, str(tmp / "model.safetensors"))
            torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
        if is_main:
            (tmp / "state.json").write_text(json.dumps({"step": step, **state}, indent=1, default=str) + "\n")
    if is_main:
        _prune(Path(run_dir) / CHECKPOINTS, keep)
    return target


def _prune(root: Path, keep: int) -> None:
    complete = list_checkpoints(root.parent)
    for old in complete[:max(0, len(complete) - max(keep, 1))]:
        shutil.rmtree(old, ignore_errors=True)
    for leftover in root.glob(f".{_PREFIX}*"):  # temp folders of a write that was killed
        shutil.rmtree(leftover, ignore_errors=True)


def read_state(folder: Path) -> dict[str, Any]:
    try:
        state: dict[str, Any] = json.loads((Path(folder) / "state.json").read_text())
    except (OSError, ValueError) as exc:
        raise CorruptCheckpointError(f"cannot read {folder / 'state.json'}: {exc}; delete the folder "
                                     "to resume from the previous checkpoint") from exc
    return state


def check_fingerprint(folder: Path, expected: dict[str, Any]) -> dict[str, Any]:
    """The checkpoint's state, or `CheckpointMismatchError` naming every setting that differs."""
    state = read_state(folder)
    require_same_run(folder.parent.parent, state.get("fingerprint", {}), expected, what="a checkpoint")
    return state


def require_same_run(run_dir: Path, found: dict[str, Any], expected: dict[str, Any], *, what: str) -> None:
    """`CheckpointMismatchError` naming every setting in which ``found`` differs from ``expected``."""
    # Round-trip through JSON so tuples/lists and ints/floats compare as they were stored.
    expected = json.loads(json.dumps(expected, default=str))
    diffs = [f"{key}: checkpoint has {found.get(key)!r}, this run has {expected.get(key)!r}"
             for key in sorted(set(found) | set(expected)) if found.get(key) != expected.get(key)]
    if diffs:
        raise CheckpointMismatchError(
            f"the run folder {str(run_dir)!r} holds {what} of a different run (" + "; ".join(diffs)
            + "). Resume with the original settings, or choose a new output folder.")


def load_checkpoint(folder: Path, *, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                    fingerprint: dict[str, Any]) -> dict[str, Any]:
    """Verify ``fingerprint``, then load weights and optimizer state in place; returns the state."""
    from subnas.training import _fsdp

    state = check_fingerprint(folder, fingerprint)
    if (folder / _fsdp.DCP).is_dir():  # written sharded: re-sharded to this run's processes, one included
        try:
            _fsdp.load_sharded(folder, model, optimizer)
        except (OSError, RuntimeError, ValueError) as exc:
            raise CorruptCheckpointError(f"cannot load checkpoint {folder}: {exc}; delete it to resume from the "
                                         "previous one") from exc
        return state
    if _fsdp.is_sharded(model):
        raise CheckpointMismatchError(f"checkpoint {folder} was written by a single-process or DDP run; resume it "
                                      "the same way (parallel='ddp', or one process), not sharded")
    device = next(model.parameters()).device
    try:
        missing, unexpected = load_model(model, str(folder / "model.safetensors"), strict=False, device=str(device))
        opt_state = torch.load(folder / "optimizer.pt", map_location=device, weights_only=True)
    except (OSError, SafetensorError, RuntimeError) as exc:
        raise CorruptCheckpointError(f"cannot load checkpoint {folder}: {exc}; delete it to resume from the "
                                     "previous one") from exc
    if missing or unexpected:
        raise CheckpointMismatchError(f"checkpoint {folder} does not fit the model: missing {sorted(missing)[:5]}, "
                                      f"unexpected {sorted(unexpected)[:5]}")
    optimizer.load_state_dict(opt_state)
    return state
