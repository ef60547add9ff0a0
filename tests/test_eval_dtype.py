"""Evaluation precision (`dtype` of the perplexity fitness, ``subnas search --dtype``) and the GPU
benchmark's command line, which must explain itself on a machine without CUDA."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from subnas import SubNetwork, Supernet
from subnas.evaluation._perplexity import auto_batch_size, eval_autocast
from tests._train_helpers import tiny_model_dir, write_text

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def fitness_setup(tmp_path_factory: pytest.TempPathFactory) -> tuple[Supernet, str]:
    root = tmp_path_factory.mktemp("dtype")
    return Supernet.from_pretrained(str(tiny_model_dir(root))), str(write_text(root / "text.txt", 100))


def test_bf16_fitness_is_close_to_fp32_and_auto_is_fp32_on_cpu(fitness_setup: tuple[Supernet, str]) -> None:
    from subnas.lookups import get_fitness

    supernet, data = fitness_setup
    subnet = SubNetwork(n_layers=2)
    scores = {dtype: get_fitness("perplexity", supernet=supernet, data=data, seq_len=16, num_seqs=4, confirm_seqs=0,
                                 dtype=dtype)(subnet) for dtype in ("auto", "float32", "bfloat16")}
    assert scores["auto"] == scores["float32"]
    assert math.isfinite(scores["bfloat16"]) and scores["bfloat16"] == pytest.approx(scores["float32"], rel=0.05)
    assert scores["bfloat16"] != scores["float32"]  # bf16 really ran


def test_bad_dtype_is_named(fitness_setup: tuple[Supernet, str]) -> None:
    from subnas.lookups import get_fitness

    supernet, data = fitness_setup
    with pytest.raises(ValueError, match="dtype='fp8' is not one of auto, float32, bfloat16"):
        get_fitness("perplexity", supernet=supernet, data=data, seq_len=16, num_seqs=4, dtype="fp8")
    with pytest.raises(ValueError, match="dtype="):
        eval_autocast(torch.device("cpu"), "half")


def test_auto_batch_size_on_cpu_is_the_measured_one(fitness_setup: tuple[Supernet, str]) -> None:
    config = fitness_setup[0].subnas_config
    assert auto_batch_size(config, 256, 16, torch.device("cpu")) == 4
    assert auto_batch_size(config, 256, 2, torch.device("cpu")) == 2


def test_spearman_of_the_benchmark() -> None:
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        from eval_dtype import spearman
    finally:
        sys.path.pop(0)
    assert spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    assert spearman([1, 2, 3], [1, 3, 2]) == pytest.approx(0.5)


def test_gpu_speed_explains_itself_without_cuda() -> None:
    script = str(ROOT / "benchmarks" / "gpu_speed.py")
    help_ = subprocess.run([sys.executable, script, "--help"], capture_output=True, text=True, timeout=120)
    assert help_.returncode == 0 and "CUDA" in help_.stdout and "--batch-sizes" in help_.stdout, help_.stderr
    if not torch.cuda.is_available():
        run = subprocess.run([sys.executable, script], capture_output=True, text=True, timeout=120)
        assert run.returncode == 2 and "needs a CUDA GPU" in run.stderr, run.stderr
