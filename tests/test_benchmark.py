"""Sampler benchmarks (`subnas.benchmark._samplers`) and the cheap benchmark fitness plugins (replay, surrogate)."""

from __future__ import annotations

import csv
import json
import math
import random
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import subnas
from subnas.bins import ParameterBin
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


# ---------------------------------------------------------------------------- benchmarks/*.py scripts
def _benchmark_script(name: str) -> Any:
    """A script of benchmarks/ (not a package) loaded as a module."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, Path(__file__).resolve().parents[1] / "benchmarks" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# ---------------------------------------------------------------------------- benchmarks/search_quality.py
def _search_quality() -> Any:
    return _benchmark_script("search_quality")


def test_search_quality_cache_is_keyed_by_its_setup(tmp_path: Path) -> None:
    """A cached evaluation is never reused under another setup: keys carry the setup's digest, and a
    file written under another setup is refused."""
    sq = _search_quality()
    args = sq.argparse.Namespace(batch_size=4, seq_len=256, num_seqs=16, confirm_seqs=48, val_seqs=64,
                                 report_data="default:validation")
    path = tmp_path / "x.evaluations.json"
    cache = sq.EvaluationCache(sq.value_setup(args), path)
    cache.put("search", "k", {"subnet": {}, "trace": [[10, 5.0]]})
    cache.save()
    assert sq.EvaluationCache(sq.value_setup(args), path).get("search", "k") == {"subnet": {}, "trace": [[10, 5.0]]}
    for change in ({"num_seqs": 4}, {"seq_len": 128}, {"batch_size": 2}, {"confirm_seqs": 16}, {"val_seqs": 8},
                   {"val_seqs": 0}, {"report_data": "default:test"}):
        other = sq.value_setup(sq.argparse.Namespace(**{**vars(args), **change}))
        assert sq.EvaluationCache(other).key("search", "k") != cache.key("search", "k")
        with pytest.raises(SystemExit, match="another setup"):
            sq.EvaluationCache(other, path)
    bumped = {**sq.value_setup(args), "fitness_version": sq.FITNESS_VERSION + 1}
    with pytest.raises(SystemExit, match="another setup"):
        sq.EvaluationCache(bumped, path)


def test_search_quality_rows_hold_every_arms_tokens(tiny_models: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every arm's row says how many tokens it scored (confirmations included) and how many distinct
    candidates it evaluated; the paper arm runs λ = N = 20."""
    import torch

    sq = _search_quality()
    assert sq.PAPER_EVOLUTION["num_offspring"] == sq.PAPER_EVOLUTION["population_size"] == 20
    supernet = subnas.Supernet.from_model(tiny_models["llama-gqa"])
    cfg = supernet.subnas_config
    g = torch.Generator().manual_seed(0)
    search, confirm, val = (torch.randint(0, cfg.vocab_size, (n, 12), generator=g) for n in (4, 4, 2))

    class Toy(Fitness):
        direction = "maximize"

        def __call__(self, subnet: subnas.SubNetwork) -> float:
            return float(subnas.count_parameters(cfg, subnet))

    monkeypatch.setattr(sq.subnas, "get_fitness", lambda *a, **k: Toy())
    args = sq.argparse.Namespace(batch_size=2, seq_len=12, num_seqs=4, confirm_seqs=4, val_seqs=2, budget=8,
                                 confirm=2, report_data="default:validation")
    cache = sq.EvaluationCache(sq.value_setup(args))
    space = subnas.get_search_space("coarse-uniform", cfg)
    lo, hi = space.bounds()
    b = ParameterBin(lo + (hi - lo) // 4, lo + (hi - lo) // 2)
    per_eval, per_confirm = 4 * 11, 4 * 11
    for arm in sq.ARMS:
        row = sq._run_arm(arm, "coarse-uniform", space, supernet, b, "b", 0, args, cache, search, confirm, val)
        assert row["tokens"] > 0 and row["evaluations"] <= args.budget, row
        assert row["confirmations"] == (0 if arm == "importance" else min(2, row["distinct_evaluations"]))
        assert row["distinct_evaluations"] <= row["evaluations"] - row["confirmations"]
        if arm not in ("importance", "default+median"):  # pruned trials score fewer tokens
            evaluated = row["evaluations"] - row["confirmations"]
            assert row["tokens"] == evaluated * per_eval + row["confirmations"] * per_confirm, (arm, row)


def test_search_quality_space_report_compares_each_seed_with_coarse_uniform_and_one_shot(tmp_path: Path) -> None:
    """The four-space report names the reported split, and sets every space's winner against
    coarse-uniform's of the same seed (mean and worst seed) and against the one-shot prune."""
    sq = _search_quality()

    def row(space: str, arm: str, seed: int, ppl: float) -> dict[str, Any]:
        return {"space": space, "bin": "85M-100M", "seed": seed, "arm": arm, "val_perplexity": ppl, "tokens": 10,
                "parameters": 1, "evaluations": 1, "distinct_evaluations": 1, "values": [], "pruned": []}

    runs = [row("coarse-uniform", "one-shot", 0, 120.0), row("coarse-uniform", "one-shot", 1, 120.0),
            row("coarse-uniform", "default", 0, 100.0), row("coarse-uniform", "default", 1, 110.0),
            row("fine-uniform", "default", 0, 99.0), row("fine-uniform", "default", 1, 121.0)]
    path = tmp_path / "spaces.json"
    path.write_text(json.dumps({"setup": {"validation": {"data": "default:test"}}, "runs": runs,
                                "full_model_validation_perplexity": 20.0, "validation_tokens": 1000}))
    text = sq.report(sq.argparse.Namespace(json=str(path), plots=False))
    assert "Full model: test perplexity 20.0" in text and "| space | bin | arm | seed | parameters" in text
    # fine-uniform: -1% at seed 0, +10% at seed 1; one seed (121) is worse than the one-shot prune (120)
    assert "| 85M-100M | fine-uniform | +4.5% | +10.0% | 1 of 2 |" in text
    assert "| 85M-100M | coarse-uniform | +0.0% | +0.0% | 2 of 2 |" in text


def test_search_quality_collects_cli_runs_with_their_tokens(tmp_path: Path) -> None:
    """Rows from `subnas search` folders count the confirmations' tokens beside the search's."""
    sq = _search_quality()
    run = tmp_path / "fine-uniform-55M-65M"
    run.mkdir()
    subnet = subnas.SubNetwork(n_layers=2).to_dict()
    (run / "results.json").write_text(json.dumps({"bins": [{
        "bin": [55_000_000, 65_000_000], "evaluations": 40, "budget_used": 40 * 16 * 255, "best_fitness": 9.0,
        "best_parameters": 60_000_000, "best_subnet": subnet, "confirmed_fitness": 8.5,
        "confirm_data": "default:search sequences 16-63 (256 tokens each)",
        "confirmed": [{"trial": 1, "fitness": 9.0, "confirmed_fitness": 8.5}] * 4}]}))
    (run / "val64.json").write_text(json.dumps({"perplexity": 10.0, "tokens": 64 * 256}))
    out = tmp_path / "cli.json"
    sq.collect([str(run)], out)
    row = json.loads(out.read_text())["runs"][0]
    assert row["space"] == "fine-uniform" and row["bin"] == "55M-65M" and row["confirmations"] == 4
    assert row["tokens"] == 40 * 16 * 255 + 4 * 48 * 255 and row["val_perplexity"] == 10.0


# ---------------------------------------------------------------------------- benchmarks/pareto.py
def _pareto_benchmark() -> Any:
    return _benchmark_script("pareto")


def test_pareto_benchmark_reports_a_latency_front(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """With ``--cost latency`` the table has no parameter-bin columns, hypervolumes are averaged
    over seeds with their spread, and the plot's x axis is the latency."""
    bench = _pareto_benchmark()
    run = {"evaluations": 3, "hypervolume_search": 2.0, "hypervolume_val": 2.5, "bins": {},
           "val_front": [{"val_perplexity": 400.0, "latency_ms": 20.0}, {"val_perplexity": 40.0, "latency_ms": 35.0}]}
    data = {"setup": {"cost": "latency"}, "full_model": {"val_perplexity": 23.0, "latency_ms": 40.0},
            "runs": {"mo-evolution/seed0": run, "mo-evolution/seed1": {**run, "hypervolume_val": 2.7}}}
    bench.report(data, tmp_path / "front.png")
    table = capsys.readouterr().out.splitlines()
    assert "val. ppl" not in table[0]
    assert table[2].startswith("| mo-evolution | 3 | 2.0000 ± 0.0000 | 2.6000 ± 0.1414 |")
    assert (tmp_path / "front.png").stat().st_size > 0
    # the hypervolume is normalised by the full model's latency: a point at 20 of 40 ms, ln(400)
    assert bench.hv([(400.0, 20.0, None)], 40.0) == pytest.approx((math.log(1e4) - math.log(400.0)) * 0.5)


def test_pareto_benchmark_finds_each_bins_winner() -> None:
    """With the parameter cost, every bin an arm reached gets its best candidate (on the search split)."""
    bench = _pareto_benchmark()
    run = {"points": [[300.0, 60_000_000, {"n_layers": 1}], [100.0, 90_000_000, {"n_layers": 2}],
                      [120.0, 95_000_000, {"n_layers": 3}]]}
    out = bench.report_arm(run, lambda subnet: 50.0 + subnet["n_layers"], 134_515_008.0, "params")
    assert {b: w["parameters"] for b, w in out["bins"].items()} == {"55M-65M": 60_000_000, "85M-100M": 90_000_000}
    assert out["bins"]["85M-100M"]["val_perplexity"] == 52.0


def test_latency_noise_benchmark_reports_spreads_across_rounds(capsys: pytest.CaptureFixture[str]) -> None:
    """Each architecture's spread is its slowest over its fastest measurement, minus one; relative
    to the full model timed in the same round, a drift shared by the whole round cancels."""
    bench = _benchmark_script("latency_noise")
    rounds = []
    for i, drift in enumerate((1.0, 1.2)):  # the second round is 20% slower across the board
        for name, ms, flops in (("full model", 100.0, 1e9), ("50.0M", 40.0, 4e8)):
            rounds.append({"round": i, "name": name, "ms": ms * drift, "min_ms": ms * drift * 0.9,
                           "iqr_ms": ms * 0.05, "model_class": "LlamaForCausalLM", "parameters": int(flops / 2),
                           "flops_per_token": flops})
    data = {"setup": {"seq_len": 256, "rounds_done": 2}, "names": ["full model", "50.0M"], "rounds": rounds}
    data["summary"] = bench.summarise(data)
    small = data["summary"]["rows"][1]
    assert small["ms_spread"] == pytest.approx(0.2) and small["min_ms_spread"] == pytest.approx(0.2)
    assert small["relative_to_full_spread"] == pytest.approx(0.0)
    assert small["ms"] == pytest.approx(44.0)  # the median of 40 and 48
    # throughput from the fastest runs: 4e8 FLOPs/token x 256 tokens in 0.9 x 44 ms
    assert small["gflops_per_s"] == pytest.approx(4e8 * 256 / (0.9 * 44.0 / 1000) / 1e9)
    bench.report(data)
    out = capsys.readouterr().out
    assert "median-of-repeats 20.0%" in out and "| 50.0M | 200,000,000 |" in out
    assert bench.spread([10.0, 12.0]) == pytest.approx(0.2)
