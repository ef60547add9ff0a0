"""Sampler benchmarks (`subnas.benchmark._samplers`) and the cheap benchmark fitness plugins (replay, surrogate)."""

from __future__ import annotations

import csv
import json
import random
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import subnas
from subnas.benchmark._report import LOG_COLUMNS
from subnas.benchmark._samplers import benchmark_samplers, record_table
from subnas.benchmark._fitness_table import FitnessTable, architecture_features
from subnas.interfaces import Fitness

CONFIG = subnas.SubnasConfig(vocab_size=100, hidden_size=64, num_hidden_layers=6, num_attention_heads=4,
                             num_key_value_heads=2, intermediate_size=256)
BINS = ["60K-90K", "100K-130K"]


class Toy(Fitness):
    """Cheap, architecture-dependent fitness (lower is better) that counts its calls."""

    def __init__(self, fail_after: int | None = None) -> None:
        self.calls, self.fail_after = 0, fail_after

    def __call__(self, subnet: subnas.SubNetwork) -> float:
        if self.fail_after is not None and self.calls >= self.fail_after:
            raise KeyboardInterrupt("killed")  # what a kill looks like to the loop
        self.calls += 1
        r = subnet.resolve(CONFIG)
        return 1 + sum((x.intermediate_size - 160) ** 2 / 1e4 + abs(x.num_heads - 3) for x in r.layers) \
            + abs(len(r.embd) - 40) / 10


@pytest.fixture(scope="module")
def table_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("table") / "toy.json"
    record_table(CONFIG, "coarse-layerwise", Toy(), n=80, out_path=path, bins=BINS, progress=False)
    return path


def bench(table: Path, out: Path, **kw: Any) -> dict[str, Any]:
    args: dict[str, Any] = dict(space="coarse-layerwise", bins=BINS, fitness="replay",
                                fitness_options={"table": table}, samplers=("evolution", "tpe"), seeds=(0, 1),
                                budget_evals=10, out_dir=out, progress=False,
                                sampler_options={"evolution": {"population_size": 6, "num_elites": 2}})
    return benchmark_samplers(None, **{**args, **kw})


def strip_times(log: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: v for k, v in row.items() if k != "wall_time"} for row in log]


def test_benchmark_is_deterministic_per_seed_and_writes_everything(table_path: Path, tmp_path: Path) -> None:
    a = bench(table_path, tmp_path / "a")
    bench(table_path, tmp_path / "b")
    log_a = json.loads((tmp_path / "a" / "trials.json").read_text())
    log_b = json.loads((tmp_path / "b" / "trials.json").read_text())
    assert strip_times(log_a) == strip_times(log_b)
    assert a["methods"] == ["evolution", "tpe", "random"]  # random search always included
    for name in ("trials.csv", "trials.json", "summary.md", "summary.json", "curves_evaluations.png",
                 "curves_time.png"):
        assert (tmp_path / "a" / name).stat().st_size > 0, name
    with open(tmp_path / "a" / "trials.csv", newline="") as f:
        assert tuple(csv.DictReader(f).fieldnames or ()) == LOG_COLUMNS
    # Equal budgets: every (method, seed, bin) ran exactly budget_evals trials, all inside its bin.
    runs: dict[tuple[str, int, str], int] = {}
    for row in log_a:
        runs[(row["method"], row["seed"], row["bin"])] = runs.get((row["method"], row["seed"], row["bin"]), 0) + 1
        if row["feasible"]:
            assert row["bin_lo"] <= row["parameters"] <= row["bin_hi"]
    assert len(runs) == 3 * 2 * 2 and set(runs.values()) == {10}
    table = a["table"]
    assert [r["method"] for r in table] == ["evolution", "tpe", "random"]
    for r in table:
        assert set(r["best"]) == {str(subnas.ParameterBin.parse(b)) for b in BINS}
        assert 1 <= r["avg_rank"] <= 3 and 0 <= r["norm_regret"] <= 1
    assert json.loads((tmp_path / "a" / "summary.json").read_text())["table"] == json.loads(json.dumps(table))
    assert "| evolution |" in (tmp_path / "a" / "summary.md").read_text()
    # Other seeds give other trajectories.
    c = bench(table_path, tmp_path / "c", seeds=(5, 6))
    assert c["methods"] == a["methods"]
    assert strip_times(json.loads((tmp_path / "c" / "trials.json").read_text())) != strip_times(log_a)


def test_workers_give_the_same_log(table_path: Path, tmp_path: Path) -> None:
    kw: dict[str, Any] = dict(samplers=("evolution",), seeds=(0, 1), budget_evals=6)
    bench(table_path, tmp_path / "one", **kw)
    bench(table_path, tmp_path / "two", workers=2, **kw)
    logs = [json.loads((tmp_path / d / "trials.json").read_text()) for d in ("one", "two")]
    assert strip_times(logs[0]) == strip_times(logs[1])


def test_time_budget_is_honoured(table_path: Path, tmp_path: Path) -> None:
    # Replayed evaluations cost the time recorded with them: 0.1 s each here.
    table = FitnessTable.load(table_path)
    for row in table.rows:
        row["seconds"] = 0.1
    slow = tmp_path / "slow.json"
    table.save(slow)
    result = bench(slow, tmp_path / "t", samplers=("random",), seeds=(0,), budget_evals=None, budget_seconds=1.0,
                   fitness_options={"table": slow, "simulate_time": True}, sampler_options=None)
    assert result["methods"] == ["random"]
    log = json.loads((tmp_path / "t" / "trials.json").read_text())
    for b in {row["bin"] for row in log}:
        times = [row["wall_time"] for row in log if row["bin"] == b]
        assert times[-1] >= 1.0 > times[-2]  # stopped by the first trial that reached the budget
        # The replayed 0.1 s each reach the budget by the 10th trial; real time (sampler overhead,
        # larger on a loaded machine) can only end it sooner, never later.
        assert 1 <= len(times) <= 11


def test_budget_is_required(table_path: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="give a budget"):
        bench(table_path, tmp_path, budget_evals=None)


def test_replay_exact_nearest_and_error(table_path: Path) -> None:
    table = FitnessTable.load(table_path)
    replay = subnas.get_fitness("replay", table=table_path)
    row = table.rows[3]
    assert replay(subnas.SubNetwork.from_dict(row["subnet"])) == row["fitness"]
    assert replay.last_lookup == {"lookup": "exact", "key": row["key"], "distance": 0.0}

    space = subnas.get_search_space("coarse-layerwise", CONFIG)
    rng = random.Random(123)
    missing = next(s for s in iter(lambda: space.sample(rng), None) if table.lookup(s) is None)
    feats = table.features()
    z = (feats - feats.mean(0)) / np.where(feats.std(0) > 0, feats.std(0), 1)
    q = (architecture_features(CONFIG, missing) - feats.mean(0)) / np.where(feats.std(0) > 0, feats.std(0), 1)
    nearest = table.rows[int(np.argmin(((z - q) ** 2).sum(1)))]
    assert replay(missing) == nearest["fitness"]
    assert replay.last_lookup["lookup"] == "nearest" and replay.last_lookup["key"] == nearest["key"]
    assert replay.lookups == {"exact": 1, "nearest": 1}

    strict = subnas.get_fitness("replay", table=table_path, missing="error")
    with pytest.raises(KeyError, match="not in the fitness table"):
        strict(missing)
    with pytest.raises(ValueError, match="recorded on model"):
        subnas.get_fitness("replay", table=table_path, config=subnas.SubnasConfig(num_hidden_layers=3))


def test_table_csv_round_trip(table_path: Path, tmp_path: Path) -> None:
    table = FitnessTable.load(table_path)
    table.save(tmp_path / "t.csv")
    again = FitnessTable.load(tmp_path / "t.csv")
    assert again.rows == table.rows and again.metadata["direction"] == "minimize"
    replay = subnas.get_fitness("replay", table=tmp_path / "t.csv")
    assert replay(subnas.SubNetwork.from_dict(table.rows[0]["subnet"])) == table.rows[0]["fitness"]


def test_surrogate_is_deterministic_per_noise_seed(table_path: Path) -> None:
    table = FitnessTable.load(table_path)
    space = subnas.get_search_space("coarse-layerwise", CONFIG)
    candidates = [space.sample(random.Random(i)) for i in range(5)]
    make = lambda seed: subnas.get_fitness("surrogate", table=table_path, noise=0.1, noise_seed=seed)  # noqa: E731
    a, b, c = make(0), make(0), make(1)
    va = [a(s) for s in candidates]
    assert va == [b(s) for s in candidates] == [a(s) for s in candidates]  # same (seed, candidate): same noise
    assert va != [c(s) for s in candidates]
    clean = subnas.get_fitness("surrogate", table=table_path)
    exact = subnas.SubNetwork.from_dict(table.rows[0]["subnet"])
    assert clean(exact) == pytest.approx(table.rows[0]["fitness"])  # a recorded candidate is predicted exactly
    assert np.isfinite(clean.leave_one_out()).all()


def test_record_table_resumes_without_re_evaluating(tmp_path: Path) -> None:
    path = tmp_path / "t.json"
    with pytest.raises(KeyboardInterrupt):
        record_table(CONFIG, "coarse-uniform", Toy(fail_after=7), n=20, out_path=path, bins=BINS, progress=False)
    assert len(FitnessTable.load(path)) == 7  # every finished evaluation was saved
    again = Toy()
    table = record_table(CONFIG, "coarse-uniform", again, n=20, out_path=path, bins=BINS, progress=False)
    assert again.calls == len(table) - 7  # only the missing ones were evaluated
    fresh = record_table(CONFIG, "coarse-uniform", Toy(), n=20, out_path=tmp_path / "fresh.json", bins=BINS,
                         progress=False)
    assert [r["key"] for r in table.rows] == [r["key"] for r in fresh.rows]
    assert all(r["bin"] is not None and r["bin"][0] <= r["parameters"] <= r["bin"][1] for r in table.rows)
    with pytest.raises(ValueError, match="recorded with fitness"):
        record_table(CONFIG, "coarse-uniform", "replay", n=1, out_path=path, progress=False,
                     fitness_options={"table": path})
