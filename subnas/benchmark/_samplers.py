"""Benchmarking search strategies (docs/design.md#who-uses-it, "researchers benchmarking search strategies").

* `benchmark_samplers` runs several samplers on the same space, bins and fitness, with several
  seeds and an equal budget (evaluations or seconds) per (sampler, seed, bin), through the search
  driver's own `subnas.search_driver.BinSearch` objective — so bin repair, infeasibility and dedup behave
  exactly as in ``subnas search`` — on in-memory Optuna storages (a benchmark needs no resume).
  It writes a per-trial log, anytime curves and a final table (`subnas.benchmark._report`).
* `record_table` evaluates a real fitness on sampled candidates and writes a
  `subnas.benchmark.FitnessTable`, so that benchmarks can replay it (fitness ``replay``) or
  fit a surrogate to it (fitness ``surrogate``) at no cost.

Example:
    >>> import subnas, tempfile
    >>> from pathlib import Path
    >>> cfg = subnas.SubnasConfig(num_hidden_layers=4, hidden_size=64, num_attention_heads=4,
    ...                           num_key_value_heads=2, intermediate_size=256, vocab_size=100)
    >>> out = Path(tempfile.mkdtemp())
    >>> class Width(subnas.interfaces.Fitness):  # a stand-in for perplexity: wider is worse
    ...     def __call__(self, subnet): return float(subnet.resolve(cfg).layers[0].intermediate_size)
    >>> table = record_table(cfg, "coarse-uniform", Width(), n=20, out_path=out / "t.json", progress=False)
    >>> result = benchmark_samplers(cfg, space="coarse-uniform", bins=[(40_000, 80_000)], fitness="replay",
    ...     fitness_options={"table": out / "t.json"}, samplers=("evolution",), seeds=(0, 1),
    ...     budget_evals=8, out_dir=out / "bench", progress=False)
    >>> [row["method"] for row in result["table"]]  # random search is always included
    ['evolution', 'random']
"""

from __future__ import annotations

import json
import math
import multiprocessing
import os
import random
import time
from pathlib import Path
from typing import Any, Mapping, Sequence

import optuna
from optuna.trial import FrozenTrial, TrialState

from subnas.benchmark._report import write_report, write_trial_log
from subnas.bins import InfeasibleBinError, ParameterBin
from subnas.benchmark._fitness_table import FitnessTable, model_signature
from subnas.interfaces import Fitness, SearchSpace
from subnas.lookups import get_fitness, get_sampler, get_search_space
from subnas.search_driver import BinSearch
from subnas.subnet import SubNetwork

BinSpec = str | ParameterBin | tuple[int, int]


def _bin(spec: BinSpec) -> ParameterBin:
    return ParameterBin.coerce(spec)


def _space(space: str | SearchSpace, model_or_config: Any, choices: dict[str, Any] | None) -> SearchSpace:
    if isinstance(space, SearchSpace):
        return space
    return get_search_space(space, model_or_config, **(choices or {}))


def _fitness(fitness: str | Fitness, model_or_config: Any, options: dict[str, Any] | None) -> tuple[Fitness, Any]:
    """A registered fitness by name, and the model it was built on. Ones marked
    ``needs_weights = False`` (replay, surrogate) get the model or config as it is; the others a
    loaded `subnas.Supernet` (loaded once here, and returned for reuse)."""
    if not isinstance(fitness, str):
        return fitness, model_or_config
    from subnas.plugins import registry

    factory = registry("fitness")[fitness]
    # A factory that is not a Fitness class cannot say; it gets the weights.
    needs_weights = factory.needs_weights if isinstance(factory, type) and issubclass(factory, Fitness) else True
    model = model_or_config
    if needs_weights and model is None:
        raise ValueError(f"fitness {fitness!r} runs the model: pass model_or_config (a name, folder or Supernet)")
    if needs_weights and not hasattr(model, "sub_network"):
        from subnas.supernet import Supernet

        model = Supernet.from_pretrained(model)
    return get_fitness(fitness, supernet=model, **(options or {})), model


def _jsonable(value: Any) -> Any:
    """Options as the table stores them (paths as strings, tuples as lists), to compare on resume."""
    return json.loads(json.dumps(value, default=str))


def _model_name(model: Any) -> str:
    if isinstance(model, (str, os.PathLike)):
        return str(model)
    source = getattr(model, "source", None)  # a Supernet
    return str(source) if source is not None else type(model).__name__


# ---------------------------------------------------------------------------- the benchmark
class _Probe(Fitness):
    """Wraps the fitness to see what one evaluation did: replay lookups and simulated seconds."""

    def __init__(self, inner: Fitness) -> None:
        self.inner, self.direction = inner, inner.direction
        self.info: Mapping[str, Any] | None = None
        self.simulated = 0.0

    def __call__(self, subnet: SubNetwork) -> float:
        value = self.inner(subnet)
        self.info = self.inner.last_lookup
        self.simulated += float(self.inner.last_cost or 0.0)
        return value


def _run(method: str, seed: int, bin: ParameterBin, space: SearchSpace, fitness: Fitness, *,
         budget_evals: int | None, budget_seconds: float | None, options: dict[str, Any]) -> list[dict[str, Any]]:
    """One (method, seed, bin) search; the trial log rows, in trial order."""
    sampler = get_sampler(method, space, bin, seed=seed, **options)
    study = optuna.create_study(storage=optuna.storages.InMemoryStorage(), sampler=sampler,
                                direction=fitness.direction, study_name=f"{method}-{seed}-{bin.lo}-{bin.hi}")
    probe = _Probe(fitness)
    run = BinSearch(bin, study, space, probe, method, seed=seed)
    minimize = fitness.direction == "minimize"
    rows: list[dict[str, Any]] = []
    best: float | None = None
    start = time.perf_counter()

    def elapsed() -> float:
        # Real time (sampler overhead) plus what a replayed evaluation cost when it was recorded.
        return time.perf_counter() - start + probe.simulated

    def spent() -> bool:
        return (budget_evals is not None and len(rows) >= budget_evals) or \
            (budget_seconds is not None and elapsed() >= budget_seconds)

    def callback(study: optuna.Study, trial: FrozenTrial) -> None:
        nonlocal best
        attrs = trial.user_attrs
        value = trial.value if trial.state == TrialState.COMPLETE else None
        if value is not None and math.isfinite(value):
            if best is None or (value < best if minimize else value > best):
                best = value
        info = None if attrs.get("duplicate") else probe.info
        rows.append({"method": method, "seed": seed, "bin": str(bin), "bin_lo": bin.lo, "bin_hi": bin.hi,
                     "trial": trial.number, "wall_time": round(elapsed(), 6), "fitness": value, "best_fitness": best,
                     "parameters": attrs.get("parameters"), "feasible": not attrs.get("infeasible", False),
                     "duplicate": bool(attrs.get("duplicate", False)), "repaired": "repaired_from" in attrs,
                     "lookup": (info or {}).get("lookup"), "lookup_distance": (info or {}).get("distance"),
                     "subnet": attrs.get("subnet")})
        probe.info = None

    while not spent():  # one trial per call: our budget decides, not Optuna's counters
        study.optimize(run.objective, n_trials=1, callbacks=[callback], catch=())
    return rows


# What forked workers inherit instead of unpickling it: (space, fitness, budget_evals, budget_seconds,
# sampler options). Set only while benchmark_samplers runs.
_SHARED: tuple[SearchSpace, Fitness, int | None, float | None, dict[str, dict[str, Any]]] | None = None


def _run_shared(run: tuple[str, int, ParameterBin]) -> list[dict[str, Any]]:
    assert _SHARED is not None
    space, fitness, evals, seconds, options = _SHARED
    method, seed, bin = run
    return _run(method, seed, bin, space, fitness, budget_evals=evals, budget_seconds=seconds,
                options=options.get(method, {}))


def benchmark_samplers(
    model_or_config: Any,
    *,
    space: str | SearchSpace = "coarse-uniform",
    bins: Sequence[BinSpec] = ("30M-40M",),
    fitness: str | Fitness = "replay",
    samplers: Sequence[str] = ("evolution", "random", "tpe"),
    seeds: Sequence[int] = (0, 1, 2),
    budget_evals: int | None = None,
    budget_seconds: float | None = None,
    out_dir: str | os.PathLike[str] = "runs/benchmark",
    sampler_options: dict[str, dict[str, Any]] | None = None,
    fitness_options: dict[str, Any] | None = None,
    space_choices: dict[str, Any] | None = None,
    workers: int = 1,
    progress: bool = True,
) -> dict[str, Any]:
    """Compare samplers on one space, bins and fitness, with seeds and an equal budget per run.

    Every (sampler, seed, bin) is one search through `subnas.search_driver.BinSearch` with the sampler
    seeded by ``seed``; its budget is ``budget_evals`` trials (as ``subnas search --trials``
    counts them: duplicates and infeasible proposals use budget, since a sampler that makes them
    wastes its turn) and/or ``budget_seconds`` of wall time (whichever ends first). Wall time is
    real sampler time plus, for a fitness that reports ``last_cost`` (``replay`` with
    ``simulate_time=True``), the recorded cost of each evaluation.

    Args:
        model_or_config: the model (name, folder, `subnas.Supernet`) or its config; ``None`` takes the
            config from the fitness (``replay``/``surrogate`` tables store it).
        space: search space name (or instance).
        bins: parameter bins (``"60M-80M"``, tuples, `ParameterBin` objects).
        fitness: fitness name (or instance), built with ``fitness_options``: replay, surrogate,
            perplexity, importance, ...
        samplers: registered sampler names; ``"random"`` is added when missing (the baseline).
        seeds: one run per seed per sampler per bin.
        budget_evals: trials per (sampler, seed, bin) run: a budget (give it, the seconds, or both).
        budget_seconds: wall seconds per (sampler, seed, bin) run: a budget (the first one reached ends it).
        out_dir: receives ``trials.csv``, ``trials.json``, ``curves_evaluations.png``,
            ``curves_time.png``, ``summary.md`` and ``summary.json``.
        sampler_options: per sampler name, keyword options (e.g. ``{"evolution": {"population_size": 10}}``).
        space_choices: per-dimension choices of the space.
        workers: processes running (sampler, seed, bin) runs side by side (forked, so nothing is
            reloaded; meant for cheap fitness such as ``replay``). The log is the same as with one,
            except wall times: with a time budget, keep workers at most the number of idle cores.
        progress: a progress bar over the runs.

    Returns:
        The content of ``summary.json``: ``table`` (per method: mean ± std of the best per bin,
        average rank over (seed, bin), mean normalised regret, ...) and the output ``files``.
    """
    if budget_evals is None and budget_seconds is None:
        raise ValueError("give a budget: budget_evals (trials per run) or budget_seconds (per run)")
    if budget_evals is not None and budget_evals < 1 or budget_seconds is not None and budget_seconds <= 0:
        raise ValueError(f"budgets must be positive; got budget_evals={budget_evals}, budget_seconds={budget_seconds}")
    if not seeds:
        raise ValueError("give at least one seed")
    methods = list(dict.fromkeys(samplers))
    if "random" not in methods:
        methods.append("random")  # every comparison needs the paper's baseline
    from subnas.plugins import registry

    for m in methods:  # an unknown name fails now (listing the known ones), not after other runs
        registry("samplers")[m]
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    score, model = _fitness(fitness, model_or_config, fitness_options)
    config = score.config if model is None else model
    if config is None:
        raise ValueError(f"fitness {fitness!r} has no model config; pass model_or_config")
    search_space = _space(space, config, space_choices)
    _check_same_model(score, search_space)
    parsed = [_bin(b) for b in bins]
    unknown = set(sampler_options or {}) - set(methods)
    if unknown:
        raise ValueError(f"sampler_options for {sorted(unknown)}, which are not among the samplers {methods}")
    if workers > 1 and "fork" not in multiprocessing.get_all_start_methods():
        raise ValueError("workers > 1 needs the 'fork' start method (Linux); use workers=1 here")

    from tqdm.auto import tqdm

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    log: list[dict[str, Any]] = []
    runs = [(m, s, b) for b in parsed for s in seeds for m in methods]
    global _SHARED
    _SHARED = (search_space, score, budget_evals, budget_seconds, sampler_options or {})
    pool = multiprocessing.get_context("fork").Pool(workers) if workers > 1 else None
    try:
        # imap keeps the runs' order, so the log does not depend on the number of workers.
        results = pool.imap(_run_shared, runs) if pool is not None else map(_run_shared, runs)
        written = time.monotonic()
        for rows in tqdm(results, total=len(runs), desc="benchmark", unit="run", disable=None if progress else True):
            log += rows
            if time.monotonic() - written > 10:  # a long benchmark shows its progress on disk
                write_trial_log(log, out)
                written = time.monotonic()
    finally:
        if pool is not None:
            pool.terminate()
        _SHARED = None
    setup = {"space": search_space.name or type(search_space).__name__,
             "fitness": fitness if isinstance(fitness, str) else type(fitness).__name__,
             "direction": score.direction, "methods": methods, "seeds": list(seeds), "bins": [str(b) for b in parsed],
             "budget_evals": budget_evals, "budget_seconds": budget_seconds,
             "sampler_options": _jsonable(sampler_options or {}), "fitness_options": _jsonable(fitness_options or {})}
    return write_report(log, setup, out)


def _check_same_model(fitness: Fitness, space: SearchSpace) -> None:
    if fitness.config is not None and model_signature(fitness.config) != model_signature(space.config):
        raise ValueError("the fitness was recorded on model of another architecture than the search space's "
                         "model; search the model it was recorded on")


# ---------------------------------------------------------------------------- recording a table
def record_table(
    model: Any,
    space: str | SearchSpace,
    fitness: str | Fitness,
    *,
    n: int,
    out_path: str | os.PathLike[str],
    bins: Sequence[BinSpec] | None = None,
    seed: int = 0,
    fitness_options: dict[str, Any] | None = None,
    space_choices: dict[str, Any] | None = None,
    metadata: dict[str, Any] | None = None,
    max_tries: int = 100,
    progress: bool = True,
) -> FitnessTable:
    """Evaluate ``fitness`` on ``n`` sampled candidates and write them to a fitness table.

    Candidates are drawn round-robin from ``bins`` (``space.sample_in``) or, without bins, from the
    whole space, in a sequence fixed by ``seed`` and the space's name. The table is rewritten
    atomically after every evaluation; running the same call again (after a kill, or with a larger
    ``n``, or for another space into the same file) skips every candidate already recorded, so
    nothing is evaluated twice. Recording several spaces of one model into one table is fine: keys
    are canonical (the same sub-network from two spaces is one row).

    Args:
        model: a `subnas.Supernet`, a model name or folder (loaded when the fitness needs weights).
        space: space name or instance; fitness: fitness name or instance (``fitness_options`` for a name).
        n: candidates in this call's sequence (recorded ones included).
        out_path: ``.json`` or ``.csv`` table; created, or extended if it exists.
        bins: parameter bins to sample in, or None for the whole space.
        metadata: extra metadata (e.g. ``{"data": "default:validation"}``); merged into the table's.

    Returns:
        The table, as written.
    """
    from tqdm.auto import tqdm

    score, loaded = _fitness(fitness, model, fitness_options)
    search_space = _space(space, loaded, space_choices)
    name = search_space.name or type(search_space).__name__
    fit_name = fitness if isinstance(fitness, str) else type(fitness).__name__
    meta = {"model": _model_name(model), "fitness": fit_name, "direction": score.direction,
            "fitness_options": _jsonable(fitness_options or {}), **(metadata or {})}
    path = Path(out_path)
    if path.exists():
        table = FitnessTable.load(path)
        for k in ("model", "fitness", "direction", "fitness_options"):
            if k in table.metadata and table.metadata[k] != meta[k]:
                raise ValueError(f"{path} was recorded with {k}={table.metadata[k]!r}, not {meta[k]!r}; "
                                 f"write to another file")
        if table.config is not None and model_signature(table.config) != model_signature(search_space.config):
            raise ValueError(f"{path} was recorded on another model architecture; write to another file")
        table.metadata.update(meta)
        table.config = search_space.config
    else:
        table = FitnessTable(meta, config=search_space.config)
    spaces = list(table.metadata.get("spaces", []))
    table.metadata["spaces"] = spaces + ([name] if name not in spaces else [])
    parsed = [_bin(b) for b in bins] if bins else []
    if parsed:
        table.metadata["bins"] = sorted({*map(tuple, table.metadata.get("bins", [])), *((b.lo, b.hi) for b in parsed)})

    rng = random.Random(f"subnas-table-{seed}-{name}")
    seen: set[str] = set()
    bar = tqdm(total=n, desc=f"record {name}", unit="cand", disable=None if progress else True)
    try:
        for i in range(n):
            b = parsed[i % len(parsed)] if parsed else None
            subnet, key = _next_candidate(search_space, table, b, rng, seen, max_tries)
            bar.update(1)
            if subnet is None or key in table:  # none new found, or recorded by an earlier run: skip
                continue
            t0 = time.perf_counter()
            value = float(score(subnet))
            table.add(subnet, fitness=value, parameters=search_space.count(subnet), space=name,
                      bin=None if b is None else (b.lo, b.hi), seconds=time.perf_counter() - t0, key=key)
            table.save(path)
    finally:
        bar.close()
    if not path.exists():
        table.save(path)
    return table


def _next_candidate(space: SearchSpace, table: FitnessTable, b: ParameterBin | None, rng: random.Random,
                    seen: set[str], max_tries: int) -> tuple[SubNetwork | None, str]:
    """A candidate not yet in this sequence (a few tries; small bins run out of new members)."""
    key = ""
    for _ in range(20):
        subnet = space.sample(rng) if b is None else space.sample_in(b, rng, max_tries=max_tries)
        if subnet is None:
            raise InfeasibleBinError(f"found no sub-network of {space.name} in bin {b}; widen the bin")
        key = table.key(subnet)
        if key not in seen:
            seen.add(key)
            return subnet, key
    return None, key
