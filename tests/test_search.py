"""BinEvolutionSampler (Algorithm 1) and the search driver: bookkeeping, determinism, resume, workers."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
import torch
from optuna.trial import TrialState

import subnas
from subnas import SubnasConfig
from subnas.bins import InfeasibleBinError, ParameterBin
from subnas.samplers._evolution import GEN, KEY, ROLE, SLOT, BinEvolutionSampler
from subnas.interfaces import Fitness
from subnas.search_driver import open_storage

optuna.logging.set_verbosity(optuna.logging.WARNING)

CONFIG = SubnasConfig(vocab_size=1000, hidden_size=128, num_hidden_layers=8, num_attention_heads=8,
                      num_key_value_heads=4, head_dim=16, intermediate_size=512)


def space_and_bin() -> tuple[object, ParameterBin]:
    space = subnas.get_search_space("coarse-layerwise", CONFIG)
    lo, hi = space.bounds()
    return space, ParameterBin(lo + (hi - lo) // 5, lo + (hi - lo) // 2)


def synthetic(space: object, subnet: subnas.SubNetwork) -> float:
    """A cheap, deterministic, architecture-dependent fitness (lower is better)."""
    r = subnet.resolve(CONFIG)
    return sum((s.intermediate_size - 300) ** 2 + 50 * (s.num_heads - 5) ** 2 for s in r.layers) / 1e4 + len(r.embd) / 64


def run_study(seed: int, trials: int, **kw: object) -> tuple[optuna.Study, BinEvolutionSampler]:
    space, b = space_and_bin()
    sampler = BinEvolutionSampler(space, b, seed=seed, **kw)  # type: ignore[arg-type]
    study = optuna.create_study(sampler=sampler)
    study.optimize(lambda t: synthetic(space, space.suggest(t)), n_trials=trials)  # type: ignore[attr-defined]
    return study, sampler


def test_algorithm_1_bookkeeping() -> None:
    N, k = 8, 3
    study, sampler = run_study(0, 60, population_size=N, num_elites=k, num_offspring=8, num_random=2,
                               mutation_prob=0.5, crossover_prob=0.5)
    space, b = sampler.space, sampler.bin
    trials = study.get_trials()
    gens = sampler._by_generation(trials)
    # Seeded evolution: the bin's one-shot prunes first, random members of the bin after them.
    # All seeds, even more than N (P(0) keeps the best N of them).
    seeds = [x.key(space.config) for x in space.one_shot(b)]  # type: ignore[attr-defined]
    assert len(seeds) > 0
    assert [t.system_attrs[ROLE] for t in gens[0]] == ["one-shot"] * len(seeds) + ["init"] * max(0, N - len(seeds))
    assert [t.system_attrs[KEY] for t in gens[0][: len(seeds)]] == seeds
    assert len(gens) >= 3
    for t in trials:  # every candidate legal and in its bin
        subnet = sampler.space.suggest  # noqa: F841 - the candidate is stored with the trial
        s = subnas.SubNetwork.from_dict(t.system_attrs["subnas:subnet"])
        assert space.count(s) in b  # type: ignore[attr-defined]
    for g in sorted(gens)[1:]:
        roles = {t.system_attrs[ROLE] for t in gens[g]}
        assert roles <= {"mutation", "crossover", "random"}
        if g < max(gens):  # the last epoch may be cut short by the trial budget
            assert sum(t.system_attrs[ROLE] == "random" for t in gens[g] if t.system_attrs[SLOT] is not None) == 2
        previous = sampler.population(study, g - 1)
        assert len(previous) <= N
        # P(g) = best N of elites(P(g-1)) and epoch g.
        pool = {t.number: t for t in previous[:k] + [t for t in gens[g] if t.state == TrialState.COMPLETE]}
        expected = sorted(pool.values(), key=lambda t: (t.value, t.number))[:N]
        if all(t.state == TrialState.COMPLETE for t in gens[g]):
            assert [t.number for t in sampler.population(study, g)] == [t.number for t in expected]
    # The best found is never worse than the best of the initial population.
    assert study.best_value <= min(t.value for t in gens[0])
    keys = [t.system_attrs[KEY] for t in trials]
    assert len(keys) == len(set(keys)), "a candidate was proposed twice"


def test_unseeded_evolution_is_the_papers_random_start() -> None:
    study, sampler = run_study(0, 8, population_size=8, seed_one_shot=False)
    assert {t.system_attrs[ROLE] for t in study.get_trials()} == {"init"}


def test_mutants_descend_from_elites() -> None:
    study, sampler = run_study(1, 40, population_size=6, num_elites=2, num_offspring=6, num_random=0,
                               mutation_prob=1.0, crossover_prob=0.0)
    gens = sampler._by_generation(study.get_trials())
    for g in sorted(gens)[1:]:
        assert {t.system_attrs[ROLE] for t in gens[g]} == {"mutation"}


def test_same_seed_same_trajectory() -> None:
    a, _ = run_study(7, 30, population_size=6, num_elites=2)
    b, _ = run_study(7, 30, population_size=6, num_elites=2)
    c, _ = run_study(8, 30, population_size=6, num_elites=2)
    keys = lambda s: [t.system_attrs[KEY] for t in s.get_trials()]  # noqa: E731
    assert keys(a) == keys(b)
    assert keys(a) != keys(c)


def test_plain_optuna_objective_with_other_params() -> None:
    space, b = space_and_bin()
    sampler = BinEvolutionSampler(space, b, population_size=4, num_elites=2, seed=0)
    study = optuna.create_study(sampler=sampler)

    def objective(trial: optuna.Trial) -> float:
        subnet = space.suggest(trial)  # type: ignore[attr-defined]
        lr = trial.suggest_float("lr", 1e-5, 1e-1, log=True)
        steps = trial.suggest_int("steps", 1, 10)
        opt = trial.suggest_categorical("optimizer", ["adam", "sgd"])
        assert space.count(subnet) in b  # type: ignore[attr-defined]
        return synthetic(space, subnet) + lr + steps / 100 + (opt == "sgd")

    study.optimize(objective, n_trials=10)
    assert all(t.state == TrialState.COMPLETE for t in study.trials)
    # A study with no subnas space at all: every parameter goes to the inner sampler.
    other = optuna.create_study(sampler=BinEvolutionSampler(space, b, seed=0))
    other.optimize(lambda t: t.suggest_float("x", -1, 1) ** 2 + t.suggest_int("n", 0, 3), n_trials=5)
    assert len(other.trials) == 5


def test_params_match_the_candidate() -> None:
    """The dashboard's params are the candidate's sizes (the sampler answers them from the genome)."""
    study, sampler = run_study(3, 12, population_size=4, num_elites=2)
    for t in study.trials:
        s = subnas.SubNetwork.from_dict(t.system_attrs["subnas:subnet"]).resolve(CONFIG)
        assert t.params["n_layers"] == len(s.layers)
        assert t.params["n_embd"] == len(s.embd)


def test_unreachable_bin_is_rejected_up_front() -> None:
    space, _ = space_and_bin()
    lo, hi = space.bounds()  # type: ignore[attr-defined]
    with pytest.raises(InfeasibleBinError, match=f"{lo:,}"):
        BinEvolutionSampler(space, (hi + 1, hi + 10))


# --------------------------------------------------------------------------- the driver
WORKER_SCRIPT = """
import sys, time, optuna, subnas
sys.path.insert(0, {root!r})
from tests.test_search import space_and_bin, synthetic
from subnas.samplers._evolution import BinEvolutionSampler
from subnas.search_driver import BinSearch, open_storage, _optimize
from subnas.samplers._trials import fail_dead_trials
from pathlib import Path
optuna.logging.set_verbosity(optuna.logging.WARNING)
space, b = space_and_bin()

from subnas.interfaces import Fitness
from subnas.search_driver import open_storage

class Fit(Fitness):
    direction = "minimize"
    def __call__(self, subnet):
        time.sleep({delay})
        return synthetic(space, subnet)

storage = open_storage({storage!r}, Path({storage!r}).parent)
study = optuna.create_study(storage=storage, study_name="s", load_if_exists=True,
                            sampler=BinEvolutionSampler(space, b, population_size=6, num_elites=2, seed=0))
fail_dead_trials(study)
run = BinSearch(b, study, space, Fit(), "evolution")
_optimize(run, epochs=None, trials={trials}, progress=False, label="t", on_trial=lambda: None)
"""


def _worker(tmp_path: Path, trials: int, delay: float) -> subprocess.Popen[bytes]:
    root = str(Path(__file__).resolve().parents[1])
    script = WORKER_SCRIPT.format(root=root, storage=str(tmp_path / "s.journal"), trials=trials, delay=delay)
    return subprocess.Popen([sys.executable, "-c", script], cwd=root)


def _load(tmp_path: Path) -> optuna.Study:
    from subnas.search_driver import open_storage

    return optuna.load_study(study_name="s", storage=open_storage(str(tmp_path / "s.journal"), tmp_path))


def test_kill_and_resume_loses_and_repeats_nothing(tmp_path: Path) -> None:
    from tests._train_helpers import wait_for_completed_trials

    proc = _worker(tmp_path, trials=14, delay=0.3)
    wait_for_completed_trials(tmp_path / "s.journal",
                              lambda: len(_load(tmp_path).get_trials(states=(TrialState.COMPLETE,))), 5, 60)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    before = {t.number: t.system_attrs[KEY] for t in _load(tmp_path).get_trials(states=(TrialState.COMPLETE,))}
    assert len(before) >= 5
    assert _worker(tmp_path, trials=14, delay=0.0).wait() == 0
    after = _load(tmp_path).get_trials()
    complete = [t for t in after if t.state == TrialState.COMPLETE]
    assert len(complete) == 14
    assert {t.number: t.system_attrs[KEY] for t in complete if t.number in before} == before  # nothing lost
    keys = [t.system_attrs[KEY] for t in complete]
    assert len(keys) == len(set(keys))  # nothing evaluated twice
    assert all(t.state != TrialState.RUNNING for t in after)


def test_two_processes_share_one_study(tmp_path: Path) -> None:
    procs = [_worker(tmp_path, trials=26, delay=0.2) for _ in range(2)]
    assert [p.wait(timeout=300) for p in procs] == [0, 0]
    trials = _load(tmp_path).get_trials(states=(TrialState.COMPLETE,))
    # The budget, plus at most the one trial the other worker started at the same moment (<= 4%):
    # a worker with no free slot waits at the epoch barrier instead of evaluating extras.
    assert 26 <= len(trials) <= 27
    assert all(t.system_attrs[SLOT] is not None for t in trials), "a worker evaluated an extra, unplanned candidate"
    keys = [t.system_attrs[KEY] for t in trials]
    assert len(keys) == len(set(keys)), "two workers evaluated the same candidate"
    slots = [(t.system_attrs[GEN], t.system_attrs[SLOT]) for t in trials if t.system_attrs[SLOT] is not None]
    assert len(slots) == len(set(slots)), "two workers took the same slot"


def test_search_driver_end_to_end(tmp_path: Path, tiny_models: dict) -> None:
    """`subnas.search` with the importance fitness (no data needed) on a tiny supernet; rerun resumes."""
    supernet = subnas.Supernet.from_model(tiny_models["llama-gqa"])
    space = subnas.get_search_space("coarse-uniform", supernet.subnas_config)
    lo, hi = space.bounds()
    bins = [(lo + (hi - lo) // 10, lo + (hi - lo) // 3), (lo + (hi - lo) // 2, hi)]
    kwargs = dict(space="coarse-uniform", bins=bins, fitness="importance", fitness_options={"method": "magnitude"},
                  calibration="weights", sampler="evolution", epochs=2, out_dir=tmp_path, seed=0,
                  sampler_options={"population_size": 4, "num_elites": 2}, progress=False)
    result = subnas.search(supernet, **kwargs)
    assert len(result["bins"]) == 2
    for i, entry in enumerate(result["bins"]):
        assert entry["bin"][0] <= entry["best_parameters"] <= entry["bin"][1]
        saved = subnas.SubNetwork.load(tmp_path / f"bin{i}_best_subnet.json")
        assert subnas.count_parameters(supernet, saved) == entry["best_parameters"]
    assert json.loads((tmp_path / "results.json").read_text()) == {k: v for k, v in result.items() if k != "plot"}
    assert (tmp_path / "trajectory.png").stat().st_size > 0
    again = subnas.search(supernet, **kwargs)  # resumes: nothing left to do
    assert [b["evaluations"] for b in again["bins"]] == [b["evaluations"] for b in result["bins"]]
    # Random search through the same driver: every evaluated candidate is repaired into the bin.
    rnd = subnas.search(supernet, **{**kwargs, "sampler": "random", "epochs": None, "trials": 6,
                                     "study_name": "rnd", "sampler_options": {}})
    for entry in rnd["bins"]:
        assert entry["bin"][0] <= entry["best_parameters"] <= entry["bin"][1]


def _chunk_value(subnet: subnas.SubNetwork) -> float:
    import hashlib

    return 1.0 + int(hashlib.sha1(subnet.to_json().encode()).hexdigest()[:6], 16) % 1000


class _ChunkedFitness(Fitness):
    """A multi-step synthetic fitness: 8 chunks, the running value converges to the final one."""

    direction = "minimize"
    data = "synthetic"

    def __call__(self, subnet: subnas.SubNetwork) -> float:
        return _chunk_value(subnet)

    def steps(self, subnet: subnas.SubNetwork):  # type: ignore[no-untyped-def]
        final = _chunk_value(subnet)
        for i in range(1, 9):
            yield 100 * i, final * (1 + 0.5 / i) if i < 8 else final


class _ChunkedPlugin:
    @subnas.hookimpl
    def register_fitness(self, register: object) -> None:
        register("chunked", lambda supernet=None, **kw: _ChunkedFitness())  # type: ignore[operator]


@pytest.fixture
def chunked_fitness():  # type: ignore[no-untyped-def]
    from subnas.plugins import get_plugin_manager

    pm = get_plugin_manager()
    pm.register(_ChunkedPlugin(), name="chunked-test")
    yield
    pm.unregister(name="chunked-test")


def test_median_pruner_saves_budget_and_keeps_the_winner(tmp_path: Path, tiny_models: dict, chunked_fitness) -> None:
    """Multi-fidelity search: Optuna's MedianPruner stops candidates after a few chunks."""
    supernet = subnas.Supernet.from_model(tiny_models["llama-gqa"])
    space = subnas.get_search_space("coarse-layerwise", supernet.subnas_config)
    lo, hi = space.bounds()
    common = dict(space="coarse-layerwise", bins=[(lo + (hi - lo) // 5, lo + (hi - lo) // 2)], fitness="chunked",
                  calibration="weights", trials=30, seed=0, progress=False)
    full = subnas.search(supernet, out_dir=tmp_path / "full", **common)["bins"][0]
    pruned = subnas.search(supernet, out_dir=tmp_path / "pruned", pruner="median", **common)["bins"][0]
    assert full["pruned"] == 0 and full["budget_used"] == 800 * full["evaluations"]
    assert pruned["pruned"] > 0 and pruned["budget_used"] < full["budget_used"]
    results = json.loads((tmp_path / "pruned" / "results.json").read_text())
    assert results["fitness_data"] == "synthetic" and results["order"] == "magnitude"
    # The pruned search's winner is a complete evaluation.
    assert pruned["best_fitness"] == _chunk_value(subnas.SubNetwork.from_dict(pruned["best_subnet"]))


def test_evolution_on_the_example_plugin_evaluates_what_it_bred() -> None:
    """The SearchSpace contract: suggest() returns the bred sub-network; encode() feeds the params."""
    import importlib.util
    import sys as _sys

    path = Path(__file__).parents[1] / "docs" / "examples" / "subnas-example-plugin" / "subnas_depth_only.py"
    spec = importlib.util.spec_from_file_location("subnas_depth_only_for_test", path)
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    _sys.modules[spec.name] = module  # type: ignore[union-attr]
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    space = module.DepthOnlySpace(CONFIG)
    b = ParameterBin(space.count(subnas.SubNetwork(n_layers=3)), space.count(subnas.SubNetwork(n_layers=6)))
    sampler = BinEvolutionSampler(space, b, population_size=3, num_elites=1, seed=0)
    study = optuna.create_study(sampler=sampler)
    evaluated = []

    def objective(trial: optuna.Trial) -> float:
        subnet = space.suggest(trial)
        evaluated.append((trial.number, subnet))
        return float(subnet.n_layers)

    study.optimize(objective, n_trials=4)  # the bin has 4 members
    for number, subnet in evaluated:
        bred = subnas.SubNetwork.from_dict(study.trials[number].system_attrs["subnas:subnet"])
        assert subnet == bred and study.trials[number].params["n_layers"] == subnet.n_layers
    # The bin is used up now: a clear error, never a loop (nor RecursionError).
    with pytest.raises(subnas.bins.BinExhaustedError, match="every member the search reaches has been evaluated"):
        study.optimize(objective, n_trials=1)


def _tiny_search(tiny_models: dict, tmp_path: Path, **kw: object) -> dict:
    supernet = subnas.Supernet.from_model(tiny_models["llama-gqa"])
    space = subnas.get_search_space("coarse-uniform", supernet.subnas_config)
    lo, hi = space.bounds()
    args = dict(space="coarse-uniform", bins=[(lo + (hi - lo) // 10, lo + (hi - lo) // 2)], fitness="importance",
                fitness_options={"method": "magnitude"}, calibration="weights", trials=6, out_dir=tmp_path,
                seed=0, progress=False)
    return subnas.search(supernet, **{**args, **kw})  # type: ignore[arg-type]


def test_bad_budgets_and_a_changed_seed_are_refused(tiny_models: dict, tmp_path: Path) -> None:
    for bad in ({"trials": 0}, {"trials": -1}, {"workers": 0}, {"epochs": 0, "trials": None}):
        with pytest.raises(ValueError, match="not a positive number"):
            _tiny_search(tiny_models, tmp_path / "bad", **bad)
    _tiny_search(tiny_models, tmp_path / "run")
    with pytest.raises(ValueError, match="started with --seed 0; rerun with --seed 0"):
        _tiny_search(tiny_models, tmp_path / "run", seed=1)
    # Another unit order would change what the stored trials' "first n" and seeds mean.
    with pytest.raises(ValueError, match="ranked as 'magnitude', but this run ranks them as 'natural'"):
        _tiny_search(tiny_models, tmp_path / "run", order="natural")
    assert _tiny_search(tiny_models, tmp_path / "run")["order"] == "magnitude"  # the same options resume


def test_a_failing_candidate_is_recorded_and_the_search_goes_on(tiny_models: dict, tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    from subnas_plugins.fitness import ImportanceFitness

    calls = []
    original = ImportanceFitness.__call__

    def flaky(self, subnet):  # type: ignore[no-untyped-def]
        calls.append(subnet)
        if len(calls) == 2:
            raise RuntimeError("out of memory on this candidate")
        return original(self, subnet)

    monkeypatch.setattr(ImportanceFitness, "__call__", flaky)
    result = _tiny_search(tiny_models, tmp_path)["bins"][0]
    study = optuna.load_study(study_name=result["study"],
                              storage=open_storage(None, tmp_path))
    failed = [t for t in study.trials if "error" in t.user_attrs]
    assert len(failed) == 1 and failed[0].state == TrialState.PRUNED
    assert "RuntimeError: out of memory on this candidate" in failed[0].user_attrs["error"]
    assert result["evaluations"] == 5  # the other candidates of the budget of 6 were evaluated


def test_a_bin_no_member_reaches_is_reported(tiny_models: dict, tmp_path: Path) -> None:
    supernet = subnas.Supernet.from_model(tiny_models["llama-gqa"])
    space = subnas.get_search_space("coarse-uniform", supernet.subnas_config, intermediate_size=[48, 96],
                                    n_embd=[32, 64])
    counts = sorted({space.count(space.sample(__import__("random").Random(i))) for i in range(200)})
    gap = next((a, b) for a, b in zip(counts, counts[1:]) if b - a > 2)
    # Reported before the model is used, from counts alone (the search never starts).
    with pytest.raises(InfeasibleBinError, match="found no sub-network in bin .* widen it or give finer choices"):
        _tiny_search(tiny_models, tmp_path, bins=[(gap[0] + 1, gap[1] - 1)],
                     space_choices={"intermediate_size": [48, 96], "n_embd": [32, 64]})


def test_two_workers_reading_one_free_slot_keep_one_claim(tmp_path: Path) -> None:
    """Two workers on PostgreSQL both kept (generation 0, slot 1) and evaluated one candidate twice
    (docs/search.md, Several machines). The interleaving, replayed deterministically on a journal:
    A (trial 0) reads slot 0 as free; B (trial 1) reads, claims it, checks for a rival (none yet)
    and keeps it; then A writes its claim and checks: it must see B's claim and withdraw (the old
    "lower trial number wins" rule kept both)."""
    space, b = space_and_bin()
    storage = open_storage(str(tmp_path / "s.journal"), tmp_path)
    sampler = BinEvolutionSampler(space, b, population_size=6, num_elites=2, seed=0)
    study = optuna.create_study(storage=storage, sampler=sampler)
    a, b_id = (storage.create_new_trial(study._study_id) for _ in range(2))
    stale = sampler._next(study, study.get_trials(deepcopy=False), sampler._study_seed(study), storage.get_trial(a))
    assert stale is not None and stale[1] == 0  # A's read: slot 0 is free
    sampler.before_trial(study, storage.get_trial(b_id))  # B claims slot 0 and keeps it
    real_next, calls = sampler._next, []

    def next_once(*args: object) -> object:  # A acts on what it read before B's claim
        calls.append(1)
        return stale if len(calls) == 1 else real_next(*args)  # type: ignore[arg-type]

    sampler._next = next_once  # type: ignore[method-assign]
    sampler.before_trial(study, storage.get_trial(a))
    claims = [(t.system_attrs.get(GEN), t.system_attrs.get(SLOT)) for t in study.get_trials(deepcopy=False)]
    assert len(claims) == len(set(claims)), f"two trials hold one slot: {claims}"


def test_results_say_whether_the_search_is_complete(tiny_models: dict, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    from subnas_plugins.fitness import ImportanceFitness

    seen = []
    original = ImportanceFitness.__call__

    def watched(self, subnet):  # type: ignore[no-untyped-def]
        if (tmp_path / "results.json").exists():  # what a reader sees while the search runs
            seen.append(json.loads((tmp_path / "results.json").read_text()))
        if len(seen) == 3:
            raise KeyboardInterrupt  # the search is stopped mid-way
        return original(self, subnet)

    monkeypatch.setattr(ImportanceFitness, "__call__", watched)
    with pytest.raises(KeyboardInterrupt):
        _tiny_search(tiny_models, tmp_path)
    assert seen and all(r["complete"] is False and r["bins"][0]["finished"] is False for r in seen)
    assert json.loads((tmp_path / "results.json").read_text())["complete"] is False  # killed: not complete
    monkeypatch.setattr(ImportanceFitness, "__call__", original)
    result = _tiny_search(tiny_models, tmp_path)  # resumed to the end
    assert result["complete"] is True and result["bins"][0]["finished"] is True
    assert json.loads((tmp_path / "results.json").read_text())["complete"] is True
    more = _tiny_search(tiny_models, tmp_path, trials=8, progress=False)
    assert more["complete"] is True and more["bins"][0]["evaluations"] == 8


def test_sqlite_storage_in_a_missing_folder_and_unknown_fitness_options(tiny_models: dict, tmp_path: Path) -> None:
    db = tmp_path / "no" / "such" / "folder" / "s.db"
    result = _tiny_search(tiny_models, tmp_path / "out", storage=f"sqlite:///{db}")
    assert db.exists() and result["complete"] is True
    with pytest.raises(ValueError, match="'importance' has no option 'nope'; its options are method, data, seq_len"):
        _tiny_search(tiny_models, tmp_path / "bad", fitness_options={"nope": 1})
    assert not (tmp_path / "bad" / "search.journal").exists()  # refused before anything was written


class _ConfirmedFitness(_ChunkedFitness):
    """`_ChunkedFitness` plus a second measurement that ranks the top candidates differently."""

    calls: list[str] = []
    confirm_data = "synthetic, more of it"

    def confirm(self, subnet: subnas.SubNetwork) -> float | None:
        import hashlib

        _ConfirmedFitness.calls.append(subnet.to_json())
        return float(int(hashlib.md5(subnet.to_json().encode()).hexdigest()[:6], 16) % 997)


class _ConfirmedPlugin:
    @subnas.hookimpl
    def register_fitness(self, register: object) -> None:
        register("confirmed", lambda supernet=None, **kw: _ConfirmedFitness())  # type: ignore[operator]


def test_the_best_confirmed_candidate_wins_and_confirmation_resumes(tmp_path: Path, tiny_models: dict) -> None:
    """--confirm K: the K best distinct candidates are re-measured once, on text the search never
    scored, and the best confirmed one is the bin's winner (written to results and the best file)."""
    from subnas.plugins import get_plugin_manager

    pm = get_plugin_manager()
    pm.register(_ConfirmedPlugin(), name="confirmed-test")
    try:
        supernet = subnas.Supernet.from_model(tiny_models["llama-gqa"])
        space = subnas.get_search_space("coarse-layerwise", supernet.subnas_config)
        lo, hi = space.bounds()
        common = dict(space="coarse-layerwise", bins=[(lo + (hi - lo) // 5, lo + (hi - lo) // 2)],
                      fitness="confirmed", calibration="weights", trials=20, seed=0, progress=False)
        _ConfirmedFitness.calls.clear()
        entry = subnas.search(supernet, out_dir=tmp_path / "c", confirm=4, **common)["bins"][0]
        assert len(_ConfirmedFitness.calls) == 4 == len(set(_ConfirmedFitness.calls))
        confirmed = entry["confirmed"]
        # The four best by the search's own fitness, best first, each with its second measurement.
        assert [c["fitness"] for c in confirmed] == sorted(c["fitness"] for c in confirmed)
        plain = subnas.search(supernet, out_dir=tmp_path / "plain", confirm=0, **common)["bins"][0]
        assert "confirmed" not in plain and plain["best_fitness"] == confirmed[0]["fitness"]
        best = min(confirmed, key=lambda c: c["confirmed_fitness"])
        assert entry["best_trial"] == best["trial"] and entry["confirmed_fitness"] == best["confirmed_fitness"]
        assert entry["confirm_data"] == "synthetic, more of it"
        winner = subnas.SubNetwork.load(entry["best_subnet_file"])
        assert _ConfirmedFitness().confirm(winner) == entry["confirmed_fitness"]
        assert winner.to_dict() == entry["best_subnet"]
        # Rerun: nothing new to evaluate or confirm, same winner.
        _ConfirmedFitness.calls.clear()
        again = subnas.search(supernet, out_dir=tmp_path / "c", confirm=4, **common)["bins"][0]
        assert _ConfirmedFitness.calls == [] and again["best_trial"] == entry["best_trial"]
        with pytest.raises(ValueError, match="--confirm -1 is negative"):
            subnas.search(supernet, out_dir=tmp_path / "bad", confirm=-1, **common)
    finally:
        pm.unregister(name="confirmed-test")


def test_perplexity_confirms_on_the_sequences_after_its_own(tmp_path: Path) -> None:
    from subnas.data._assets import DataSourceError
    from subnas.evaluation._perplexity import perplexity
    from tests._train_helpers import tiny_model_dir, write_text

    supernet = subnas.Supernet.from_pretrained(tiny_model_dir(tmp_path))
    text = write_text(tmp_path / "t.txt", n=300)
    fit = subnas.get_fitness("perplexity", supernet=supernet, data=str(text), seq_len=16, num_seqs=4,
                             confirm_seqs=6)
    assert fit.confirm_tokens.shape == (6, 16)
    from subnas.evaluation._perplexity import supernet_tokens

    stream = supernet_tokens(supernet, str(text), 16, 10)
    assert torch.equal(stream[:4], fit.tokens) and torch.equal(stream[4:], fit.confirm_tokens)
    subnet = subnas.SubNetwork(n_layers=2)
    with supernet.sub_network(subnet):
        expected = perplexity(supernet.model, stream[4:], batch_size=4, progress=False)
    assert fit.confirm(subnet) == pytest.approx(expected, rel=1e-6)
    assert "sequences 4-9" in fit.confirm_data
    off = subnas.get_fitness("perplexity", supernet=supernet, data=str(text), seq_len=16, num_seqs=4, confirm_seqs=0)
    assert off.confirm(subnet) is None
    with pytest.raises(DataSourceError, match="too little text to confirm.*--confirm 0"):
        subnas.get_fitness("perplexity", supernet=supernet, data=str(text), seq_len=16, num_seqs=4,
                           confirm_seqs=100_000)


def test_a_trial_left_without_a_worker_record_is_freed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A process killed between creating a trial and writing who runs it leaves a RUNNING trial with
    no worker record: once it is older than any live worker's first write, it is failed (else a
    resumed evolution would wait for its slot forever); a fresh one is left alone."""
    from subnas.samplers import _trials
    from subnas.samplers._trials import fail_dead_trials
    from subnas.search_driver import open_storage

    study = optuna.create_study(storage=open_storage(str(tmp_path / "s.journal"), tmp_path), study_name="s")
    orphan = study._storage.create_new_trial(study._study_id)
    assert fail_dead_trials(study) == 0  # young: maybe a live worker about to write
    monkeypatch.setattr(_trials, "UNCLAIMED_SECONDS", -1)
    assert fail_dead_trials(study) == 1
    assert study._storage.get_trial(orphan).state == TrialState.FAIL
