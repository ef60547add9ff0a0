"""Data-parallel training under ``torchrun`` (2 CPU processes, gloo, 127.0.0.1 only).

DDP on 2 processes, each with half of every global batch, must compute the same gradients — hence
the same weights — as one process on the whole batch.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file

from subnas.training import pretrain
from tests._train_helpers import tiny_model_dir, write_text

WORKER = textwrap.dedent("""
    import sys
    import torch
    from safetensors.torch import save_file
    from subnas.training import pretrain

    model, data, out, grads = sys.argv[1:5]

    def keep_grads(info):
        if info["step"] == 1:
            save_file({k: p.grad.contiguous() for k, p in info["model"].named_parameters()},
                      f"{grads}.rank{info['rank']}.safetensors")

    pretrain(model, data, out, seq_len=32, batch_size=8, micro_batch_size=2, max_steps=2, lr=3e-3,
             checkpoint_every=1, progress=False, val_data=None, on_step=keep_grads, bf16=False)
""")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.slow
def test_ddp_on_two_processes_matches_one_process(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SUBNAS_CACHE", str(tmp_path / "cache"))
    model, data = tiny_model_dir(tmp_path), write_text(tmp_path / "train.txt", 300)
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "SUBNAS_CACHE": str(tmp_path / "cache"), "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")])}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc-per-node", "2",
           "--master-addr", "127.0.0.1", "--master-port", str(free_port()),
           str(script), str(model), str(data), str(tmp_path / "ddp"), str(tmp_path / "grads")]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]

    reference: dict[str, Any] = {}

    def keep_grads(info: dict[str, Any]) -> None:
        if info["step"] == 1:
            reference.update({k: p.grad.clone() for k, p in info["model"].named_parameters()})

    # 8 sequences in one pass here; there, 4 per process in 2 accumulated passes of 2.
    # float32 on both sides (bf16 autocast, the default on CPUs with native bf16, rounds passes of 2
    # and of 8 sequences differently, ~1e-3): the test is about DDP's arithmetic, not precision.
    single = pretrain(str(model), str(data), tmp_path / "single", seq_len=32, batch_size=8, max_steps=2, lr=3e-3,
                      progress=False, val_data=None, on_step=keep_grads, bf16=False)
    assert single["world_size"] == 1
    for rank in (0, 1):  # DDP averaged the two halves: every rank holds the global-batch gradient
        grads = load_file(tmp_path / f"grads.rank{rank}.safetensors")
        assert grads.keys() == reference.keys()
        for k in grads:
            assert torch.allclose(grads[k], reference[k], atol=1e-6, rtol=1e-4), k
    ddp_w = load_file(tmp_path / "ddp" / "model" / "model.safetensors")
    one_w = load_file(tmp_path / "single" / "model" / "model.safetensors")
    assert all(torch.allclose(ddp_w[k], one_w[k], atol=1e-5) for k in one_w)
    ddp_log = (tmp_path / "ddp" / "log.csv").read_text().splitlines()
    assert len(ddp_log) == 3  # header + 2 steps: rank 1 wrote nothing


def test_shards_of_a_global_batch_are_disjoint_and_complete() -> None:
    from subnas.data._tokens import BlockOrder, shard

    batch = BlockOrder(100, batch_size=8, seed=0).batch(3)
    parts = [shard(batch, r, 4) for r in range(4)]
    assert sum(parts, []) == batch and len({i for p in parts for i in p}) == 8
    with pytest.raises(ValueError, match="split evenly"):
        shard(batch, 0, 3)
    from subnas.training import TrainConfig
    from subnas.training._loop import _micro_batching

    assert _micro_batching(TrainConfig(batch_size=8, micro_batch_size=2), world=2) == (2, 2)  # 2 passes each
    with pytest.raises(ValueError, match="micro_batch_size"):
        _micro_batching(TrainConfig(batch_size=6, micro_batch_size=4), world=1)
