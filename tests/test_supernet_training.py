"""Supernet training (issue #23): strategies, the plugin hook, the trained supernet as a model, resume."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM

import subnas
from subnas import Supernet, SubNetwork, count_parameters
from subnas.cli import main
from subnas.interfaces import TrainingStrategy
from subnas.plugins import PluginError, get_plugin_manager, plugins_report, reset_plugins
from subnas.search_driver import make_space
from subnas.spaces._ordering import UNIT_ORDER_FILE, UnitOrder
from subnas.training import train_supernet
from subnas.training._supernet import SupernetStep
from tests._train_helpers import tiny_model_dir, write_text
from tests.family_configs import SPACES
from tests.strategies import subnetworks
from tests.test_invariants import assert_evaluated_equals_exported, tokens
from tests.test_train import losses_of, recorder

FAST = dict(seq_len=32, batch_size=4, lr=3e-3, min_lr=3e-4, progress=False, val_data=None, calibration="weights",
            strategy_options={"random_samples": 1})


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SUBNAS_CACHE", str(tmp_path / "cache"))


@pytest.fixture()
def setup(tmp_path: Path) -> dict[str, Path]:
    return {"model": tiny_model_dir(tmp_path), "data": write_text(tmp_path / "train.txt", 300)}


class Draw:
    """A `SubNetworkDraw` whose members are named by their depth."""

    def largest(self) -> SubNetwork:
        return SubNetwork(n_layers=9)

    def smallest(self) -> SubNetwork:
        return SubNetwork(n_layers=1)

    def random(self, rng: random.Random) -> SubNetwork:
        return SubNetwork(n_layers=rng.randint(2, 8))


def depths(strategy: TrainingStrategy, step: int, total: int = 10, seed: int = 0) -> list[int | None]:
    return [s.n_layers for s in strategy.sample(Draw(), step=step, total=total, rng=random.Random(seed))]


# ---------------------------------------------------------------------------- strategies
def test_built_in_strategies_draw_what_their_docstrings_say() -> None:
    get = subnas.get_training_strategy
    assert depths(get("standard"), 3) == [9]
    sandwich = depths(get("sandwich", random_samples=2), 3)
    assert sandwich[:2] == [9, 1] and len(sandwich) == 4 and all(2 <= d <= 8 for d in sandwich[2:])  # type: ignore[operator]
    assert len(depths(get("random", random_samples=3), 3, seed=1)) in (1, 2, 3)  # distinct draws only
    assert all(2 <= d <= 8 for d in depths(get("random"), 5))  # type: ignore[operator]
    ats = get("ats")
    assert depths(ats, 1) != [9] and depths(ats, 2) == [9]  # odd steps: random; even steps: the largest
    linear = get("random-linear")
    assert depths(linear, 1) == [9]  # p = 0 at the first step
    assert depths(linear, 10) != [9]  # p = 1 at the last
    for name in ("sandwich", "random", "ats"):
        with pytest.raises(ValueError, match="random_samples=-1 is not valid"):
            get(name, random_samples=-1)


def test_a_strategy_from_a_plugin_registered_inside_a_test(setup: dict[str, Path], tmp_path: Path) -> None:
    class SmallestOnly(TrainingStrategy):
        def sample(self, draw: Any, *, step: int, total: int, rng: random.Random) -> list[SubNetwork]:
            return [draw.smallest()]

    class Plugin:
        @subnas.hookimpl
        def register_training_strategies(self, register: Any) -> None:
            register("smallest-only", SmallestOnly)

    reset_plugins()
    get_plugin_manager().register(Plugin(), name="strategy-plugin")
    try:
        assert isinstance(subnas.get_training_strategy("smallest-only"), SmallestOnly)
        report = {p["name"]: p for p in plugins_report()}
        assert report["strategy-plugin"]["registers"]["training_strategies"] == ["smallest-only"]
        assert set(report["subnas_plugins.strategies"]["registers"]["training_strategies"]) == {
            "standard", "sandwich", "random", "random-linear", "ats"}
        drawn: list[int] = []
        summary = train_supernet(str(setup["model"]), str(setup["data"]), tmp_path / "run", strategy="smallest-only",
                                 max_steps=1, **{**FAST, "strategy_options": {}},
                                 on_step=lambda info: drawn.append(info["step"]))
        assert summary["complete"] and drawn == [1] and summary["supernet"]["strategy"] == "smallest-only"
    finally:
        get_plugin_manager().unregister(name="strategy-plugin")
        reset_plugins()
    with pytest.raises(PluginError, match="unknown training strategy 'smallest-only'; registered: ats"):
        subnas.get_training_strategy("smallest-only")


# ---------------------------------------------------------------------------- the trained supernet is a model
@pytest.mark.parametrize("space", SPACES)
@pytest.mark.parametrize("family", ["llama-gqa", "qwen3", "gemma3", "gpt_neox"])
def test_trained_supernet_is_a_model_with_the_same_units(tmp_path: Path, family: str, space: str) -> None:
    """After a few sandwich steps: the folder loads with stock Auto classes and computes what the
    trained weights compute; a search on it ranks units in the order training used (stored, not
    recomputed); and every sub-network evaluated on it equals its export, counted by the one counter."""
    model, data = tiny_model_dir(tmp_path, family), write_text(tmp_path / "train.txt", 200)
    supernet = Supernet.from_pretrained(model)
    before = UnitOrder.from_dict(make_space(space, supernet, order="importance", calibration="weights",
                                            choices={}).order.to_dict())  # type: ignore[union-attr]
    summary = train_supernet(supernet, str(data), tmp_path / "run", space=space, max_steps=2, **FAST)
    folder = Path(summary["model_dir"])
    ids = tokens(supernet.subnas_config.vocab_size, seed=3)
    stock = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    assert stock.config.model_type == model_type(model)
    with torch.no_grad():
        supernet.reset()
        torch.testing.assert_close(stock(ids).logits, supernet(ids).logits, rtol=2e-5, atol=2e-5)
    trained = Supernet.from_pretrained(folder)
    assert trained.count_parameters() == supernet.count_parameters() == count_parameters(stock.config)
    stored = json.loads((folder / UNIT_ORDER_FILE).read_text())
    assert UnitOrder.from_dict(stored["order"]) == before and stored["strategy"] == "sandwich"
    again = make_space(space, trained, order="importance", calibration="weights", choices={})
    assert again.order == before  # the stored order, not one ranked afresh on the trained weights
    assert not torch.equal(stock.get_input_embeddings().weight,
                           AutoModelForCausalLM.from_pretrained(model).get_input_embeddings().weight)

    @settings(max_examples=3, deadline=None, derandomize=True,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(subnet=subnetworks(trained.subnas_config, fine=space.startswith("fine"), layerwise="layerwise" in space))
    def check(subnet: SubNetwork) -> None:
        assert_evaluated_equals_exported(trained, subnet, ids)
        # The same file means the same units in the original and in the trained supernet.
        assert subnet.resolve(trained.subnas_config) == subnet.resolve(supernet.subnas_config)

    check()
    for subnet in (again.sample(random.Random(0)), *again.one_shot(subnas.ParameterBin(*again.bounds()))[:2]):
        assert_evaluated_equals_exported(trained, subnet, ids)


def model_type(folder: Path) -> str:
    return str(json.loads((folder / "config.json").read_text())["model_type"])


def test_each_step_trains_the_drawn_subnetworks_in_place(setup: dict[str, Path], tmp_path: Path) -> None:
    """The step module sums one loss per drawn sub-network (the largest first for in-place
    distillation) and leaves the full network active; the gradient reaches the shared weights."""
    supernet = Supernet.from_pretrained(setup["model"])
    seen: list[int] = []
    forward = supernet.model.forward

    def spy(*args: Any, **kwargs: Any) -> Any:
        seen.append(len(supernet.model.active.layers))
        return forward(*args, **kwargs)

    supernet.model.forward = spy  # type: ignore[method-assign]
    captured: dict[str, Any] = {}

    def grab(info: dict[str, Any]) -> None:
        captured.setdefault("grads", {n: p.grad is not None for n, p in info["model"].named_parameters()})

    summary = train_supernet(supernet, str(setup["data"]), tmp_path / "run", distill_from="largest", max_steps=1,
                             on_step=grab, **FAST)
    full = supernet.subnas_config.num_hidden_layers
    assert summary["complete"] and seen[0] == full  # the largest first: its logits are the others' targets
    assert 2 <= len(seen) <= 3 and seen[1] < full  # then the smallest (and the random one, unless a duplicate)
    assert all(captured["grads"].values())  # the largest is drawn every step: every weight gets a gradient
    assert len(supernet.model.active.layers) == full  # the full network is active after training


def test_step_module_draws_by_seed_and_step(setup: dict[str, Path]) -> None:
    from subnas.training import SizeRange, TrainConfig

    supernet = Supernet.from_pretrained(setup["model"])
    space = make_space("coarse-layerwise", supernet, order="importance", calibration="weights", choices={})
    draw = SizeRange(space, subnas.ParameterBin(*space.bounds()))

    def plan(step: int, seed: int) -> list[Any]:
        return SupernetStep(supernet.model, draw, subnas.get_training_strategy("sandwich"), TrainConfig(seed=seed),
                            total=5, distill_from="largest").plan(step)

    assert plan(3, 0) == plan(3, 0) and plan(3, 0) != plan(4, 0) and plan(3, 0) != plan(3, 1)
    assert plan(3, 0)[0] == SubNetwork().resolve(supernet.subnas_config)  # the largest first
    for resolved in plan(2, 0):
        assert count_parameters(supernet.subnas_config, resolved) in draw.bin


# ---------------------------------------------------------------------------- resume, input, CLI
@pytest.mark.parametrize("distill_from", ["teacher", "largest"])
def test_kill_and_resume_equals_an_uninterrupted_run(tmp_path: Path, setup: dict[str, Path], distill_from: str) -> None:
    kw = dict(**FAST, strategy="sandwich", distill_from=distill_from, micro_batch_size=2, max_steps=4,
              checkpoint_every=2)
    straight: list[dict[str, Any]] = []
    train_supernet(str(setup["model"]), str(setup["data"]), tmp_path / "a", on_step=recorder(straight), **kw)
    first: list[dict[str, Any]] = []
    with pytest.raises(KeyboardInterrupt):  # killed after step 3: the checkpoint of step 2 survives
        train_supernet(str(setup["model"]), str(setup["data"]), tmp_path / "b", on_step=recorder(first, kill_at=3),
                       **kw)
    second: list[dict[str, Any]] = []
    summary = train_supernet(str(setup["model"]), str(setup["data"]), tmp_path / "b", on_step=recorder(second), **kw)
    assert summary["resumed_from"].endswith("step-00000002") and [c["step"] for c in second] == [3, 4]
    assert losses_of(first[:2]) + losses_of(second) == losses_of(straight)  # bit-for-bit
    a, b = (load_file(tmp_path / run / "model" / "model.safetensors") for run in ("a", "b"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_a_resume_with_another_strategy_is_refused(tmp_path: Path, setup: dict[str, Path]) -> None:
    from subnas.training._checkpoints import CheckpointMismatchError

    kw = dict(**FAST, max_steps=2, keep_final_checkpoint=True)
    with pytest.raises(KeyboardInterrupt):
        train_supernet(str(setup["model"]), str(setup["data"]), tmp_path / "run", on_step=recorder([], kill_at=1),
                       **{**kw, "checkpoint_every": 1})
    with pytest.raises(CheckpointMismatchError, match="objective"):
        train_supernet(str(setup["model"]), str(setup["data"]), tmp_path / "run", strategy="random",
                       **{**kw, "checkpoint_every": 1})


def test_bad_input_is_named_before_training(tmp_path: Path, setup: dict[str, Path]) -> None:
    args = (str(setup["model"]), str(setup["data"]))
    with pytest.raises(PluginError, match="unknown training strategy 'sandwhich'; registered: ats, random"):
        train_supernet(*args, tmp_path / "a", strategy="sandwhich", **FAST)
    with pytest.raises(ValueError, match="distill_from='teacher-ish' is not one of teacher, largest"):
        train_supernet(*args, tmp_path / "b", distill_from="teacher-ish", **FAST)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="holds no member of the search space"):
        train_supernet(*args, tmp_path / "c", sizes="1G-2G", **FAST)


def test_cli_train_supernet(tmp_path: Path, setup: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["train-supernet", str(setup["model"]), "--data", str(setup["data"]), "--out", str(tmp_path / "run"),
                 "--strategy", "ats", "--calibration", "weights", "--max-steps", "2", "--seq-len", "32",
                 "--batch-size", "2", "--progress", "false", "--json"])
    assert code == 0
    result = json.loads(capsys.readouterr().out)
    assert result["complete"] and result["supernet"]["strategy"] == "ats" and result["steps"] == 2
    assert main(["train-supernet", str(setup["model"]), "--out", str(tmp_path / "x"), "--lr", "0"]) == 2
    assert "--lr 0" in capsys.readouterr().err


DDP_WORKER = """
import sys
from safetensors.torch import save_file
from subnas.training import train_supernet

model, data, out, grads = sys.argv[1:5]

def keep_grads(info):
    if info["step"] == 1:
        save_file({k: p.grad.contiguous() for k, p in info["model"].named_parameters() if p.grad is not None},
                  f"{grads}.rank{info['rank']}.safetensors")

train_supernet(model, data, out, strategy="random", distill_from="largest", calibration="weights", seq_len=32,
               batch_size=8, micro_batch_size=2, max_steps=2, lr=3e-3, progress=False, val_data=None,
               on_step=keep_grads, bf16=False, strategy_options={"random_samples": 2})
"""


@pytest.mark.slow
def test_ddp_on_two_processes_matches_one_process(tmp_path: Path, setup: dict[str, Path]) -> None:
    """Under torchrun every rank trains the step's sub-networks in one forward of the wrapped step
    module; the all-reduced gradients equal one process's on the whole batch (sub-networks that
    leave parameters unused included)."""
    import os
    import subprocess
    import sys

    from tests.test_distributed import free_port

    script = tmp_path / "worker.py"
    script.write_text(DDP_WORKER)
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")])}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc-per-node", "2",
           "--master-addr", "127.0.0.1", "--master-port", str(free_port()),
           str(script), str(setup["model"]), str(setup["data"]), str(tmp_path / "ddp"), str(tmp_path / "grads")]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    reference: dict[str, Any] = {}

    def keep_grads(info: dict[str, Any]) -> None:
        if info["step"] == 1:
            reference.update({k: p.grad.clone() for k, p in info["model"].named_parameters() if p.grad is not None})

    train_supernet(str(setup["model"]), str(setup["data"]), tmp_path / "single", strategy="random",
                   distill_from="largest", calibration="weights", seq_len=32, batch_size=8, max_steps=2, lr=3e-3,
                   progress=False, val_data=None, on_step=keep_grads, bf16=False,
                   strategy_options={"random_samples": 2})
    for rank in (0, 1):
        grads = load_file(tmp_path / f"grads.rank{rank}.safetensors")
        for k in reference.keys() | grads.keys():
            got = grads.get(k, torch.zeros_like(reference.get(k, grads.get(k))))
            want = reference.get(k, torch.zeros_like(got))
            assert torch.allclose(got, want, atol=1e-6, rtol=1e-4), k
