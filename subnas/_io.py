"""Atomic writes and verified reads: a killed process never leaves a half-written file behind, and a
half-copied model folder is named as such before `transformers` fails on it (docs/design.md#reliability).

The temporary files and folders behind an atomic write are private while being written
(`tempfile` creates them 0600 / 0700); once complete they get the permissions a plain ``open`` or
``mkdir`` would have given them — 0666 / 0777 minus the umask — so results are shared exactly as
the user's umask says.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from safetensors import SafetensorError, safe_open


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _umask() -> int:
    """The process umask, read without changing it where the OS allows (Linux: /proc)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)  # elsewhere: the classic swap (briefly process-wide)
    os.umask(mask)
    return mask


def plain_mode(*, folder: bool = False) -> int:
    """What ``open(..., "w")`` (0666) or ``mkdir`` (0777) would create under the current umask."""
    return (0o777 if folder else 0o666) & ~_umask()


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path``: temporary file in the same folder, fsync, rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fchmod(f.fileno(), plain_mode())
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


@contextmanager
def atomic_directory(path: Path, *, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary sibling folder; on success it replaces ``path`` in one rename."""
    path = Path(path)
    if path.exists() and not overwrite and any(path.iterdir()):
        raise FileExistsError(f"output folder {str(path)!r} exists and is not empty; choose another or pass overwrite")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        yield tmp
        # Whatever wrote inside (transformers writes model.safetensors 0600 through its own temp
        # file) gets what a plain open / mkdir would have given it.
        file_mode, folder_mode = plain_mode(), plain_mode(folder=True)
        for root, dirs, files in os.walk(tmp):
            os.chmod(root, folder_mode)
            for name in files:
                f = Path(root) / name
                if not f.is_symlink():
                    os.chmod(f, file_mode)
                    with open(f, "rb") as fh:
                        os.fsync(fh.fileno())
        if path.exists():
            old = path.with_name(f".{path.name}.old.{os.getpid()}")
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
        _fsync_dir(path.parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


class CorruptCheckpointError(RuntimeError):
    """A checkpoint folder that cannot be read back."""


def model_fingerprint(model: Any, *, weights: bool = True, extra: dict[str, Any] | None = None) -> str:
    """A hash of what decides a model's outputs: class, config and every weight, plus ``extra``
    (e.g. the active sub-network of a supernet and the autocast precision).

    With ``weights`` (the teacher-logit cache's key) the weights are hashed byte for byte (0.3 s for
    SmolLM2-135M), so two checkpoints of one architecture never share cache entries. Without, only
    the names and shapes count (16 hex digits): a training run's identity, which its checkpoints
    must match to resume — the weights change at every step.
    """
    import hashlib

    import torch

    h = hashlib.sha256(type(model).__name__.encode())
    config = {k: v for k, v in model.config.to_dict().items()
              if k not in ("_name_or_path", "transformers_version", "dtype", "torch_dtype", "architectures")}
    h.update(json.dumps(config, sort_keys=True, default=str).encode())
    if not weights:
        for name, p in model.state_dict().items():
            h.update(f"{name}:{tuple(p.shape)};".encode())
        return h.hexdigest()[:16]
    h.update(json.dumps(extra or {}, sort_keys=True, default=str).encode())
    h.update(repr(getattr(model, "active", None)).encode())  # a supernet's active sub-network
    for name, p in model.state_dict().items():
        t = p.detach().contiguous().cpu()
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)};".encode())
        h.update(t.view(torch.uint8).numpy().data if t.numel() else b"")
    return h.hexdigest()[:32]


@contextmanager
def transformers_bars_off() -> Iterator[None]:
    """Silence `transformers`' own progress bars ("Loading weights", "Writing model shards") inside
    one of subnas's steps: a 135M model loads in under a second, and twenty such bars between
    subnas's own would bury them. The setting is restored afterwards."""
    from transformers.utils import logging as hf_logging

    was_on = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_on:
            hf_logging.enable_progress_bar()


def check_model_files(folder: str | Path) -> None:
    """Raise `CorruptCheckpointError` naming the file if a model folder's ``config.json`` is not
    JSON or one of its ``*.safetensors`` files is truncated or corrupt.

    Opening a safetensors file reads only its header and checks that the header's tensors cover
    the file exactly, so this catches a half-copied or half-downloaded model in milliseconds,
    before `transformers` fails on it with a bare ``SafetensorError`` (or a "hub unreachable"
    message for a broken config) that names no file.
    """
    fix = ("it was probably copied or downloaded only in part: re-export it (subnas extract, or rerun the "
           "training that wrote it) or download the model again")
    config = Path(folder) / "config.json"
    if config.is_file():
        try:
            if not isinstance(json.loads(config.read_text(encoding="utf-8")), dict):
                raise ValueError("not a JSON object")
        except (ValueError, OSError) as exc:
            raise CorruptCheckpointError(f"the model config {str(config)!r} is truncated or corrupt ({exc}); "
                                         f"{fix}") from None
    for path in sorted(Path(folder).glob("*.safetensors")):
        try:
            with safe_open(str(path), framework="pt"):
                pass
        except (SafetensorError, OSError) as exc:
            raise CorruptCheckpointError(f"the weights file {str(path)!r} is truncated or corrupt ({exc}); "
                                         f"{fix}") from None
