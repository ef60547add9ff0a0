"""Multi-objective search (issue #22): the front, its files, every sampler, determinism, kill and resume."""

from __future__ import annotations

import json
import math
import signal
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import optuna
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from optuna.trial import TrialState

import subnas
from subnas.pareto import hypervolume, parse_objectives
from subnas.samplers._mo_evolution import crowding_distances, non_dominated_ranks
from subnas.samplers._trials import KEY

optuna.logging.set_verbosity(optuna.logging.WARNING)

MAGNITUDE = dict(fitness="importance", fitness_options={"method": "magnitude"}, calibration="weights", seed=0,
                 progress=False)


def _supernet(tiny_models: dict) -> subnas.Supernet:
    return subnas.Supernet.from_model(tiny_models["llama-gqa"])


def _dominated(a: list[float], b: list[float]) -> bool:
    """Whether ``a`` is dominated by ``b`` (both minimised)."""
    return all(y <= x for x, y in zip(a, b)) and any(y < x for x, y in zip(a, b))


def test_front_is_legal_exported_as_counted_and_reevaluates(tmp_path: Path, tiny_models: dict) -> None:
    supernet = _supernet(tiny_models)
    result = subnas.search(supernet, objectives="importance,params,flops", trials=14, out_dir=tmp_path,
                           space="coarse-layerwise", **MAGNITUDE)
    assert result["mode"] == "pareto" and result["evaluations"] <= 14 and result["complete"]
    assert json.loads((tmp_path / "pareto.json").read_text()) == {k: v for k, v in result.items() if k != "plot"}
    assert (tmp_path / "pareto.png").stat().st_size > 0
    fitness = subnas.get_fitness("importance", supernet=supernet, method="magnitude")
    flops = subnas.get_metric("flops", supernet, subnas.SearchContext(seq_len=256))
    points = result["front"]
    assert points and 0 < result["hypervolume"]
    for p in points:
        subnet = subnas.SubNetwork.load(p["subnet_file"])  # the file evaluate/extract/distill take as it is
        subnet.resolve(supernet.subnas_config)  # legal
        assert p["objectives"]["params"] == p["parameters"] == subnas.count_parameters(supernet, subnet)
        assert p["objectives"]["importance"] == fitness(subnet)  # re-evaluates to what the study says
        assert p["objectives"]["flops"] == flops(subnet)
        with tempfile.TemporaryDirectory() as out:
            assert subnas.extract(supernet, subnet, out, overwrite=True).num_parameters == p["parameters"]
    # Non-dominated among themselves (importance is maximised: compare its negative).
    signed = [[-p["objectives"]["importance"], p["objectives"]["params"], p["objectives"]["flops"]] for p in points]
    assert not any(_dominated(a, b) for a in signed for b in signed if a is not b)
    assert result["full_model"]["params"] == subnas.count_parameters(supernet)
    assert result["measurement_spread"] == {} and not any("spread" in p for p in points)  # exact costs: no noise
    again = subnas.search(supernet, objectives="importance,params,flops", trials=14, out_dir=tmp_path,
                          space="coarse-layerwise", **MAGNITUDE)  # resumes: nothing left to do
    assert again["evaluations"] == result["evaluations"] and again["front"] == result["front"]


def test_a_measured_objective_records_its_noise_and_the_cli_says_when_it_is_large(tmp_path: Path,
                                                                                   tiny_models: dict) -> None:
    """Every front point of a latency objective carries its measurement's spread (interquartile range
    over median), the front its median; the command line adds a note when that exceeds 5%."""
    from subnas.cli import NOISY_MEASUREMENT, _pareto_text

    supernet = _supernet(tiny_models)
    result = subnas.search(supernet, objectives="importance,latency", trials=6, out_dir=tmp_path, seq_len=16,
                           **MAGNITUDE)
    points = result["front"]
    assert points and all(set(p["spread"]) == {"latency"} and p["spread"]["latency"] >= 0 for p in points)
    assert result["measurement_spread"]["latency"] == statistics.median(p["spread"]["latency"] for p in points)
    for t in _trials(tmp_path):
        if t.state == TrialState.COMPLETE and not t.user_attrs.get("duplicate"):
            assert t.user_attrs["latency:spread"] >= 0 and "importance:spread" not in t.user_attrs
    noisy = _pareto_text({**result, "measurement_spread": {"latency": 0.2}}, tmp_path)
    assert "note: latency is measured, and one measurement's repeats spread by 20%" in noisy
    assert "--objectives ...,flops" in noisy
    quiet = _pareto_text({**result, "measurement_spread": {"latency": NOISY_MEASUREMENT / 2}}, tmp_path)
    assert "note:" not in quiet


@pytest.mark.parametrize("sampler", ["nsga2", "nsga3", "tpe", "random", "mo-evolution"])
def test_every_sampler_searches_a_front(tmp_path: Path, tiny_models: dict, sampler: str) -> None:
    supernet = _supernet(tiny_models)
    result = subnas.search(supernet, objectives="importance,kv-bytes", trials=8, out_dir=tmp_path, sampler=sampler,
                           **MAGNITUDE)
    complete = [t for t in _trials(tmp_path) if t.state == TrialState.COMPLETE]
    assert len(complete) == 8 and all(len(t.values) == 2 for t in complete)
    for t in complete:
        subnas.SubNetwork.from_dict(t.user_attrs["subnet"]).resolve(supernet.subnas_config)
    assert result["front"]


def test_mo_evolution_is_seeded_and_deterministic(tmp_path: Path, tiny_models: dict) -> None:
    supernet = _supernet(tiny_models)

    def run(out: Path) -> list[str]:
        subnas.search(supernet, objectives="importance,params", trials=12, out_dir=out, **MAGNITUDE)
        data = json.loads((out / "pareto.json").read_text())
        return [subnas.SubNetwork.load(p["subnet_file"]).to_json() for p in data["front"]]

    assert run(tmp_path / "a") == run(tmp_path / "b")
    data = json.loads((tmp_path / "a" / "pareto.json").read_text())
    assert any(p["role"] == "one-shot" for p in data["front"])


def test_non_dominated_sorting_and_crowding() -> None:
    assert non_dominated_ranks([(1, 3), (2, 2), (3, 1), (2, 3), (3, 3)]) == [0, 0, 0, 1, 2]
    assert crowding_distances([(1, 3), (2, 2), (3, 1)]) == [math.inf, 2.0, math.inf]
    assert hypervolume([[0.5, 0.5], [2.0, 2.0]], [1.0, 1.0]) == pytest.approx(0.25)  # the second is beyond it


@settings(max_examples=60, deadline=None)
@given(st.integers(2, 3).flatmap(lambda d: st.lists(st.lists(st.floats(0.0, 1.2, allow_nan=False), min_size=d,
                                                               max_size=d), min_size=1, max_size=12)))
def test_hypervolume_equals_optunas(points: list[list[float]]) -> None:
    """subnas's exact hypervolume (no private Optuna import in the library) agrees with Optuna's own
    WFG implementation, dominated, duplicate and out-of-reference points included."""
    import numpy as np
    from optuna._hypervolume import compute_hypervolume

    reference = [1.0] * len(points[0])
    inside = [p for p in points if all(x < 1.0 for x in p)]
    expected = float(compute_hypervolume(np.asarray(inside), np.asarray(reference))) if inside else 0.0
    assert hypervolume(points, reference) == pytest.approx(expected, rel=1e-9, abs=1e-12)


def test_bad_objectives_are_named(tmp_path: Path, tiny_models: dict) -> None:
    supernet = _supernet(tiny_models)
    with pytest.raises(ValueError, match="two or three distinct"):
        parse_objectives("perplexity")
    with pytest.raises(ValueError, match="neither a metric"):
        subnas.search(supernet, objectives="importance,speed", trials=4, out_dir=tmp_path, **MAGNITUDE)
    with pytest.raises(ValueError, match="pruners judge one objective"):
        subnas.search(supernet, objectives="importance,params", trials=4, out_dir=tmp_path, pruner="median",
                      **MAGNITUDE)
    with pytest.raises(ValueError, match="cannot search a front"):
        subnas.search(supernet, objectives="importance,params", trials=4, out_dir=tmp_path, sampler="evolution",
                      **MAGNITUDE)
    with pytest.raises(ValueError, match="search's fitness is 'importance'"):
        subnas.search(supernet, objectives="perplexity,params", trials=4, out_dir=tmp_path, **MAGNITUDE)


WORKER = """
import sys, time
sys.path.insert(0, {root!r})
import subnas
from tests.conftest import tiny_hf_model
from subnas.interfaces import Fitness


class Slow(Fitness):
    direction = "minimize"
    data = "synthetic"

    def __init__(self, supernet=None):
        self.config = supernet.subnas_config

    def __call__(self, subnet):
        time.sleep({delay})
        r = subnet.resolve(self.config)
        return 1.0 + sum((s.intermediate_size - 40) ** 2 for s in r.layers) / 100 + len(r.embd) / 8


class Plugin:
    @subnas.hookimpl
    def register_fitness(self, register):
        register("slow", Slow)


from subnas.plugins import get_plugin_manager
get_plugin_manager().register(Plugin(), name="slow")
subnas.search(subnas.Supernet.from_model(tiny_hf_model("llama-gqa")), objectives="slow,params", fitness="slow",
              space="coarse-layerwise", calibration="weights", trials={trials}, out_dir={out!r}, seed=0,
              progress=False)
"""


def _worker(out: Path, trials: int, delay: float) -> subprocess.Popen[bytes]:
    root = str(Path(__file__).resolve().parents[1])
    return subprocess.Popen([sys.executable, "-c", WORKER.format(root=root, out=str(out), trials=trials, delay=delay)],
                            cwd=root)


def _trials(out: Path) -> list[optuna.trial.FrozenTrial]:
    from subnas.search_driver import open_storage

    return optuna.load_study(study_name="subnas-pareto", storage=open_storage(None, out)).get_trials()


def test_kill_and_resume_loses_and_repeats_nothing(tmp_path: Path) -> None:
    from tests._train_helpers import wait_for_completed_trials

    proc = _worker(tmp_path, trials=16, delay=0.4)
    wait_for_completed_trials(tmp_path / "search.journal",
                              lambda: sum(t.state == TrialState.COMPLETE for t in _trials(tmp_path)), 5, 120)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    before = {t.number: t.system_attrs[KEY] for t in _trials(tmp_path) if t.state == TrialState.COMPLETE}
    assert len(before) >= 5
    assert _worker(tmp_path, trials=16, delay=0.0).wait(timeout=300) == 0
    after = _trials(tmp_path)
    complete = [t for t in after if t.state == TrialState.COMPLETE]
    assert len(complete) == 16
    assert {t.number: t.system_attrs[KEY] for t in complete if t.number in before} == before  # nothing lost
    keys = [t.system_attrs[KEY] for t in complete]
    assert len(keys) == len(set(keys))  # nothing evaluated twice
    assert all(t.state != TrialState.RUNNING for t in after)
    assert json.loads((tmp_path / "pareto.json").read_text())["complete"] is True


def test_cli_objectives_with_two_workers(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``subnas search MODEL --objectives importance,params --workers 2``: the CLI prints the front and
    both workers share one study (the budget is not doubled)."""
    from subnas.cli import main
    from tests._train_helpers import tiny_model_dir

    out = tmp_path / "out"
    argv = ["search", str(tiny_model_dir(tmp_path)), "--objectives", "importance,params", "--fitness", "importance",
            "--fitness-options", '{"method": "magnitude"}', "--calibration", "weights", "--trials", "8",
            "--workers", "2", "--out", str(out)]
    assert main(argv) == 0
    text = capsys.readouterr().out
    assert "points on the front of importance x params" in text and "point 0:" in text
    complete = [t for t in _trials(out) if t.state == TrialState.COMPLETE]
    assert 8 <= len(complete) <= 9  # the budget, plus at most the trial the other worker started at once
    data = json.loads((out / "pareto.json").read_text())
    assert data["complete"] and Path(data["front"][0]["subnet_file"]).exists()
    # One point named on the command line: the front file and the point number.
    assert main(["params", str(tiny_model_dir(tmp_path)), "--subnet", f"{out}/pareto.json#1", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["parameters"] == data["front"][1]["parameters"]
    assert main(["params", str(tiny_model_dir(tmp_path)), "--subnet", f"{out}/pareto.json#99"]) == 2
    assert "no point '99'" in capsys.readouterr().err


def test_every_plugin_gets_one_context(tmp_path: Path, tiny_models: dict) -> None:
    """The driver hands the fitness (`Fitness.from_context`) and the metrics the same `SearchContext`:
    no plugin is special-cased by name."""
    from subnas.interfaces import Fitness, Metric
    from subnas.plugins import get_plugin_manager

    seen: dict[str, subnas.SearchContext] = {}

    class Contextual(Fitness):
        def __init__(self, supernet: object, seq_len: int, scale: float = 1.0) -> None:
            self.seq_len, self.scale = seq_len, scale

        @classmethod
        def from_context(cls, context: subnas.SearchContext, **options: object) -> Fitness:
            seen["fitness"] = context
            return cls(context.supernet, context.seq_len, **options)  # type: ignore[arg-type]

        def __call__(self, subnet: subnas.SubNetwork) -> float:
            return self.scale * self.seq_len + (subnet.n_layers or 0)

    class Depth(Metric):
        def __init__(self, model_or_config: object, context: subnas.SearchContext | None = None) -> None:
            super().__init__(model_or_config, context)
            seen["metric"] = self.context

        def __call__(self, subnet: subnas.SubNetwork | None) -> float:
            return float(len((subnet or subnas.SubNetwork()).resolve(self.config).layers))

    class Plugin:
        @subnas.hookimpl
        def register_fitness(self, register: object) -> None:
            register("contextual", Contextual)  # type: ignore[operator]

        @subnas.hookimpl
        def register_metrics(self, register: object) -> None:
            register("depth", Depth)  # type: ignore[operator]

    pm = get_plugin_manager()
    pm.register(Plugin(), name="contextual-test")
    try:
        subnas.search(_supernet(tiny_models), objectives="contextual,depth", fitness="contextual", seq_len=17,
                      num_seqs=3, fitness_options={"scale": 2.0}, calibration="weights", trials=4, out_dir=tmp_path,
                      progress=False)
    finally:
        pm.unregister(name="contextual-test")
    assert seen["fitness"] is seen["metric"]
    assert (seen["fitness"].seq_len, seen["fitness"].num_seqs, seen["fitness"].device) == (17, 3, "cpu")
    front = json.loads((tmp_path / "pareto.json").read_text())["front"]
    assert all(p["objectives"]["contextual"] >= 34 for p in front)  # scale 2 x seq_len 17: the options won


def test_confirmation_remeasures_every_front_point_once(tmp_path: Path, tiny_models: dict) -> None:
    from subnas.interfaces import Fitness
    from subnas.plugins import get_plugin_manager

    confirmed: list[str] = []

    class Noisy(Fitness):
        data, confirm_data = "synthetic", "synthetic, more"

        def __init__(self, supernet: subnas.Supernet) -> None:
            self.config = supernet.subnas_config

        def __call__(self, subnet: subnas.SubNetwork) -> float:
            r = subnet.resolve(self.config)
            return 10.0 / len(r.layers) + 1000.0 / sum(s.intermediate_size for s in r.layers)

        def confirm(self, subnet: subnas.SubNetwork) -> float:
            confirmed.append(subnet.to_json())
            return self(subnet) + 0.5

    class Plugin:
        @subnas.hookimpl
        def register_fitness(self, register: object) -> None:
            register("noisy", Noisy)  # type: ignore[operator]

    pm = get_plugin_manager()
    pm.register(Plugin(), name="noisy-test")
    try:
        kwargs = dict(objectives="noisy,params", fitness="noisy", calibration="weights", trials=10, confirm=2,
                      out_dir=tmp_path, progress=False)
        result = subnas.search(_supernet(tiny_models), **kwargs)
        again = subnas.search(_supernet(tiny_models), **kwargs)  # resumed: nothing measured twice
    finally:
        pm.unregister(name="noisy-test")
    front = result["front"]
    assert len(confirmed) == len(front) == len(set(confirmed))  # every point of the front, once
    assert all(p["confirmed_fitness"] == p["objectives"]["noisy"] + 0.5 for p in front)
    assert result["confirm_data"] == "synthetic, more" and again["front"] == front
