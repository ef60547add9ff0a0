"""Sharded training (FSDP2, `subnas.training._fsdp`) on 2 CPU processes with gloo: the same loss curve
as one process, and a run killed at 2 processes resumes at 1 from its sharded checkpoint."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file

from subnas.training import distill
from tests._train_helpers import tiny_model_dir, write_text
from tests.test_distributed import free_port

#: One distillation: a 2-layer sub-network of the tiny Llama (whose supernet is the teacher, sharded too).
ARGS = dict(subnet={"n_layers": 2}, seq_len=32, batch_size=8, micro_batch_size=2, max_steps=4, lr=3e-3,
            checkpoint_every=2, top_k=16, teacher_cache="off", progress=False, val_data=None, bf16=False,
            tensorboard=False, parallel="fsdp")

WORKER = textwrap.dedent("""
    import json, sys
    from subnas.training import distill
    teacher, data, out, stop, args = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), json.loads(sys.argv[5])

    def kill(info):
        if info["step"] == stop:
            raise SystemExit(3)  # after the checkpoint of this step: a kill between steps

    distill(teacher, data, out, on_step=kill, **args)
""")


def losses(run: Path) -> dict[int, float]:
    with open(run / "log.csv") as f:
        return {int(r["step"]): float(r["loss"]) for r in csv.DictReader(f) if r.get("loss")}


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("fsdp")
    teacher, data = tiny_model_dir(root), write_text(root / "train.txt", 300)
    script = root / "worker.py"
    script.write_text(WORKER)
    repo = Path(__file__).resolve().parents[1]
    env = {**os.environ, "SUBNAS_CACHE": str(root / "cache"), "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([str(repo), os.environ.get("PYTHONPATH", "")])}

    def torchrun(out: Path, stop: int) -> subprocess.CompletedProcess[str]:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc-per-node", "2",
               "--master-addr", "127.0.0.1", "--master-port", str(free_port()),
               str(script), str(teacher), str(data), str(out), str(stop), json.dumps(ARGS)]
        return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)

    sharded = torchrun(root / "sharded", stop=0)
    assert sharded.returncode == 0, sharded.stderr[-4000:]
    killed = torchrun(root / "killed", stop=2)
    assert killed.returncode != 0 and (root / "killed" / "checkpoints" / "step-00000002" / "dcp").is_dir(), \
        killed.stderr[-4000:]
    os.environ["SUBNAS_CACHE"] = env["SUBNAS_CACHE"]
    try:
        single = distill(str(teacher), str(data), root / "single", **ARGS)
        resumed = distill(str(teacher), str(data), root / "killed", **ARGS)  # one process, from 2's shards
    finally:
        os.environ.pop("SUBNAS_CACHE")
    return {"root": root, "single": single, "resumed": resumed}


@pytest.mark.slow
def test_two_sharded_processes_follow_the_single_process_loss_curve(runs: dict[str, Any]) -> None:
    root = runs["root"]
    one, two = losses(root / "single"), losses(root / "sharded")
    assert sorted(one) == sorted(two) == [1, 2, 3, 4]
    for step in one:
        assert two[step] == pytest.approx(one[step], rel=1e-5), step
    # The finished model is the same stock folder as a single-process run's.
    for name in ("config.json",):
        assert json.loads((root / "sharded" / "model" / name).read_text())["architectures"] == \
            json.loads((root / "single" / "model" / name).read_text())["architectures"] == ["LlamaForCausalLM"]
    a, b = load_file(root / "sharded" / "model" / "model.safetensors"), load_file(root / "single" / "model" / "model.safetensors")
    assert a.keys() == b.keys()
    for key in a:
        assert torch.allclose(a[key], b[key], rtol=1e-4, atol=1e-5), key


@pytest.mark.slow
def test_killed_at_two_processes_resumes_at_one(runs: dict[str, Any]) -> None:
    root = runs["root"]
    resumed, uninterrupted = losses(root / "killed"), losses(root / "sharded")
    assert runs["resumed"]["resumed_from"].endswith("step-00000002")
    assert sorted(resumed) == [1, 2, 3, 4]  # every step once: nothing lost, nothing repeated
    for step in resumed:
        assert resumed[step] == pytest.approx(uninterrupted[step], rel=1e-5), step
    a = load_file(root / "killed" / "model" / "model.safetensors")
    b = load_file(root / "sharded" / "model" / "model.safetensors")
    for key in a:
        assert torch.allclose(a[key], b[key], rtol=1e-4, atol=1e-5), key


def test_sharded_checkpoint_loads_into_one_process_exactly(tmp_path: Path) -> None:
    """``torch.distributed.checkpoint`` round trip without a process group: weights and AdamW state bit for bit."""
    from subnas.training import _fsdp

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Linear(8, 2))
    opt = torch.optim.AdamW(model.parameters(), lr=0.1)
    model(torch.randn(3, 4)).sum().backward()
    opt.step()
    _fsdp.save_sharded(tmp_path, model, opt)
    other = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Linear(8, 2))
    other_opt = torch.optim.AdamW(other.parameters(), lr=0.1)
    _fsdp.load_sharded(tmp_path, other, other_opt)
    for p, q in zip(model.parameters(), other.parameters()):
        assert torch.equal(p, q)
        for key in ("exp_avg", "exp_avg_sq"):
            assert torch.equal(opt.state[p][key], other_opt.state[q][key])


def test_auto_choice() -> None:
    from subnas.training._fsdp import choose

    small = torch.nn.Linear(2, 2)
    assert choose("auto", world_size=1, device=torch.device("cpu"), student=small, teacher=None) == "single"
    assert choose("auto", world_size=2, device=torch.device("cpu"), student=small, teacher=small) == "ddp"
    assert choose("fsdp", world_size=2, device=torch.device("cpu"), student=small, teacher=None) == "fsdp"
    with pytest.raises(ValueError, match="parallel="):
        choose("zero3", world_size=2, device=torch.device("cpu"), student=small, teacher=None)
