"""Multi-objective search: one Optuna study over the whole trade-off (``subnas search --objectives``).

``--objectives perplexity,params`` names two or three objectives: any registered cost metric
(`subnas.interfaces.Metric`: ``params``, ``flops``, ``latency``, ...) and at most one fitness
(``perplexity``, ...). One study with ``directions=[...]`` holds every candidate; its
non-dominated trials are the front, written as ``pareto.json`` (every point with its objectives
and a sub-network file in the original numbering that ``evaluate``/``extract``/``distill`` take as
they are), ``pareto.png`` and the front's hypervolume against a stated reference point.

What carries over from the per-bin search (`subnas.search_driver`): every candidate is legal (the space
proposes it); a candidate already in the study is never evaluated again (its values are reused);
trials live in the storage, so a rerun resumes (trials a killed run left RUNNING are failed and
handed out again) and several workers share the study; ``--confirm`` re-measures the fitness of
every point of the final front on text the search never scored. Optuna's pruners judge one
objective and do not apply to multi-objective studies: ``--pruner`` must be ``none`` here.
"""

from __future__ import annotations

import json
import math
import os
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import optuna
from optuna.trial import TrialState

from subnas._io import atomic_write_text
from subnas.interfaces import Fitness, Metric, SearchContext, SearchSpace
from subnas.samplers._trials import KEY, evaluated_values, record_worker
from subnas.subnet import SubNetwork

CONFIRMED = "confirmed"  # study user attribute: {sub-network key: confirmed fitness}
FULL = "full_model"  # study user attribute: the full model's objective values
#: The fitness coordinate of the reference point, before normalisation: a perplexity of 10,000
#: (untrained sub-networks beyond it add nothing to the hypervolume).
REFERENCE_FITNESS = 1e4


@dataclass
class Objective:
    """One objective of the study: a fitness or a cost metric."""

    name: str
    kind: str  # "fitness" or "metric"
    direction: str
    measure: Callable[[SubNetwork | None], float]
    describe: str = ""
    exact: bool = True


def parse_objectives(objectives: str | Sequence[str]) -> list[str]:
    """``"perplexity,params"`` (or a list) -> names; two or three, distinct.

    Example:
        >>> parse_objectives("perplexity, params")
        ['perplexity', 'params']
    """
    names = [n.strip() for n in (objectives.split(",") if isinstance(objectives, str) else objectives) if n.strip()]
    if not 2 <= len(names) <= 3 or len(set(names)) != len(names):
        raise ValueError(f"--objectives {','.join(names)!r}: give two or three distinct objectives, e.g. "
                         f"perplexity,params or perplexity,params,latency")
    return names


def build_objectives(names: Sequence[str], context: SearchContext, fitness: Callable[[], Fitness],
                     fitness_name: str) -> tuple[list[Objective], Fitness | None]:
    """The objectives ``names`` (metrics by name; the fitness under its own name, built once)."""
    from subnas.plugins import registry

    metrics, fitnesses = registry("metrics"), registry("fitness")
    out, score = [], None
    for name in names:
        if name in metrics:
            m: Metric = metrics[name](context.supernet if context.supernet is not None else context.config, context)
            out.append(Objective(name, "metric", m.direction, m, m.describe(), m.exact))
        elif name in fitnesses:
            if name != fitness_name or score is not None:
                raise ValueError(f"--objectives names the fitness {name!r}, but the search's fitness is "
                                 f"{fitness_name!r}; give --fitness {name} (one fitness per search)")
            score = fitness()
            out.append(Objective(name, "fitness", score.direction, score, score.metric or name, True))
        else:
            raise ValueError(f"--objectives: {name!r} is neither a metric ({', '.join(sorted(metrics))}) nor a "
                             f"fitness ({', '.join(sorted(fitnesses))})")
    return out, score


def normalise(objectives: Sequence[Objective], values: Sequence[float], full: Sequence[float]) -> list[float]:
    """Values in the hypervolume's space: ln of a minimised fitness (``-value`` of a maximised
    one), a cost divided by the full model's; every coordinate minimised."""
    out = []
    for o, v, f in zip(objectives, values, full):
        if o.kind == "fitness":
            out.append(math.log(v) if o.direction == "minimize" else -v)
        else:
            out.append(v / f if f else v)
    return out


def reference_point(objectives: Sequence[Objective]) -> list[float]:
    """ln(`REFERENCE_FITNESS`) for a minimised fitness, 0 for a maximised one, 1.0 (the full
    model's cost) for a cost."""
    return [(math.log(REFERENCE_FITNESS) if o.direction == "minimize" else 0.0) if o.kind == "fitness" else 1.0
            for o in objectives]


def hypervolume(points: Sequence[Sequence[float]], reference: Sequence[float]) -> float:
    """The volume the normalised ``points`` dominate up to ``reference`` (points beyond it dropped).

    Exact, by slicing along the first objective (the "hypervolume by slicing objectives"
    recursion): fronts here hold tens of points in two or three objectives, where it is instant.
    Written out rather than taken from Optuna, whose implementation is private
    (``optuna._hypervolume``) and may change without notice; the tests compare the two.

    Example:
        >>> hypervolume([[1.0, 2.0], [2.0, 1.0]], [3.0, 3.0])
        3.0
    """
    inside = [tuple(float(x) for x in p) for p in points if all(x < r for x, r in zip(p, reference))]
    return _dominated_volume(inside, tuple(float(r) for r in reference))


def _dominated_volume(points: list[tuple[float, ...]], reference: tuple[float, ...]) -> float:
    if not points:
        return 0.0
    if len(reference) == 1:
        return reference[0] - min(p[0] for p in points)
    # Between consecutive first coordinates, the dominated region is the (d-1)-dimensional volume
    # of the points already passed, projected onto the remaining objectives.
    ordered = sorted(points)
    volume = 0.0
    for i, p in enumerate(ordered):
        upper = ordered[i + 1][0] if i + 1 < len(ordered) else reference[0]
        if upper > p[0]:
            volume += (upper - p[0]) * _dominated_volume([q[1:] for q in ordered[: i + 1]], reference[1:])
    return volume


def load_point(spec: str) -> SubNetwork:
    """The sub-network of one front point named ``FOLDER/pareto.json#N`` (point N of that file).

    ``subnas evaluate|extract|distill --subnet runs/front/pareto.json#3`` reads it; the point's own
    file ``runs/front/pareto/point03.json`` is the same sub-network.
    """
    path, _, number = spec.rpartition("#")
    try:
        front = json.loads(Path(path).read_text(encoding="utf-8"))["front"]
        point = next(p for p in front if p["point"] == int(number))
    except (OSError, ValueError, KeyError, TypeError, StopIteration):
        from subnas.subnet import SubNetworkError

        raise SubNetworkError(f"--subnet {spec!r}: no point {number!r} in a pareto.json at {path!r}; give "
                              f"FOLDER/pareto.json#N with N a point of its front (see its \"front\" list) or "
                              f"the point's file FOLDER/pareto/pointNN.json") from None
    # Index sets in importance order run to thousands of numbers: each point's own file holds them.
    return SubNetwork.load(Path(path).parent / "pareto" / Path(point["subnet_file"]).name)


@dataclass
class ParetoSearch:
    """The multi-objective study and how to run a trial of it."""

    study: optuna.Study
    space: SearchSpace
    objectives: list[Objective]
    fitness: Fitness | None
    sampler_name: str
    trials: int
    confirm: int = 0
    evaluated: dict[str, list[float]] = field(default_factory=dict)

    def objective(self, trial: optuna.Trial) -> list[float]:
        record_worker(trial.storage, trial._trial_id)
        subnet = self.space.suggest(trial)
        key = subnet.key(self.space.config)
        trial.storage.set_trial_system_attr(trial._trial_id, KEY, key)
        trial.set_user_attr("subnet", subnet.to_dict())
        trial.set_user_attr("parameters", self.space.count(subnet))
        cached = evaluated_values(self.study, self.evaluated, key)
        if cached is not None:  # never evaluate the same architecture twice
            trial.set_user_attr("duplicate", True)
            return cached
        values = []
        # Exact costs first: microseconds; the fitness (a forward pass) last.
        for o in sorted(self.objectives, key=lambda o: o.kind == "fitness"):
            try:
                value = float(o.measure(subnet))
            except Exception as exc:  # noqa: BLE001 - one broken candidate must not end the search
                trial.set_user_attr("error", f"{o.name}: {type(exc).__name__}: {exc}")
                raise optuna.TrialPruned(f"{o.name} failed on this candidate: {type(exc).__name__}: {exc}") from exc
            if math.isnan(value):
                value = math.inf if o.direction == "minimize" else -math.inf
            trial.set_user_attr(o.name, value)
            spread = o.measure.last_spread() if o.kind == "metric" else None  # type: ignore[attr-defined]
            if spread is not None:
                trial.set_user_attr(f"{o.name}:spread", spread)
            values.append((o.name, value))
        if self.fitness is not None:
            for name, metric in self.fitness.last_metrics.items():
                trial.set_user_attr(f"fitness:{name}", metric)
        by_name = dict(values)
        return [by_name[o.name] for o in self.objectives]

    def done(self) -> int:
        return len(self.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED)))

    def finished(self) -> bool:
        running = [t for t in self.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
                   if t.system_attrs.get(KEY) is not None]
        return self.done() + len(running) >= self.trials

    def front(self) -> list[Any]:
        """The non-dominated complete trials, one per distinct sub-network, cheapest first."""
        seen: dict[str, Any] = {}
        for t in sorted(self.study.best_trials, key=lambda t: t.number):
            if t.values is not None and all(map(math.isfinite, t.values)) and not t.user_attrs.get("duplicate"):
                seen.setdefault(t.system_attrs.get(KEY, str(t.number)), t)
        costs = [i for i, o in enumerate(self.objectives) if o.kind == "metric"] or [0]
        return sorted(seen.values(), key=lambda t: ([t.values[i] for i in costs], t.number))

    def full_model(self) -> list[float]:
        """The full model's objective values (measured once, stored in the study)."""
        stored = self.study.user_attrs.get(FULL)
        if stored is None:
            stored = [float(o.measure(SubNetwork())) for o in self.objectives]
            self.study.set_user_attr(FULL, stored)
        return list(stored)

    def confirm_front(self, progress: bool = False) -> dict[str, float]:
        """Re-measure the fitness of every front point with `Fitness.confirm` once the budget is used
        (``confirm`` > 0); stored in the study, so a resumed search confirms each point once."""
        confirmed: dict[str, float] = dict(self.study.user_attrs.get(CONFIRMED, {}))
        if self.confirm < 1 or self.fitness is None or not self.finished():
            return confirmed
        from tqdm.auto import tqdm

        todo = [t for t in self.front() if t.system_attrs[KEY] not in confirmed]
        for t in tqdm(todo, desc="confirming the front", unit="point", disable=None if progress else True):
            value = self.fitness.confirm(SubNetwork.from_dict(t.user_attrs["subnet"]))
            if value is None:
                return confirmed
            confirmed = {**self.study.user_attrs.get(CONFIRMED, {}), **confirmed, t.system_attrs[KEY]: float(value)}
            self.study.set_user_attr(CONFIRMED, confirmed)
        return confirmed


def optimize(run: ParetoSearch, *, progress: bool, on_trial: Callable[[], None]) -> None:
    """Run trials until the budget is used (trials other workers are evaluating count too)."""
    from tqdm.auto import tqdm

    bar = tqdm(total=run.trials, initial=run.done(), desc="pareto front", unit="eval",
               disable=None if progress else True)

    def callback(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        bar.update(1)
        bar.set_postfix(front=len(run.front()))
        on_trial()
        if run.finished():
            study.stop()

    try:
        while not run.finished():
            run.study.optimize(run.objective, n_trials=1, callbacks=[callback], catch=())
    finally:
        bar.close()


def write_front(run: ParetoSearch, out: Path, *, plot: bool = False) -> dict[str, Any]:
    """``pareto.json`` and the point files ``pareto/pointNN.json`` (and ``pareto.png`` when ``plot``)."""
    full = run.full_model()
    ref = reference_point(run.objectives)
    front = run.front()
    confirmed = run.study.user_attrs.get(CONFIRMED, {})
    points = []
    (out / "pareto").mkdir(parents=True, exist_ok=True)
    for i, t in enumerate(front):
        path = out / "pareto" / f"point{i:02d}.json"
        SubNetwork.from_dict(t.user_attrs["subnet"]).save(path)
        entry = {"point": i, "trial": t.number, "objectives": dict(zip((o.name for o in run.objectives), t.values)),
                 "normalised": normalise(run.objectives, t.values, full), "parameters": t.user_attrs.get("parameters"),
                 "role": t.system_attrs.get("subnas:role"), "subnet_file": str(path)}
        if t.system_attrs[KEY] in confirmed:
            entry["confirmed_fitness"] = confirmed[t.system_attrs[KEY]]
        spreads = {o.name: t.user_attrs[f"{o.name}:spread"] for o in run.objectives if f"{o.name}:spread" in t.user_attrs}
        if spreads:  # a measured cost: how noisy this point's value is (interquartile range / median)
            entry["spread"] = spreads
        points.append(entry)
    complete = run.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    results: dict[str, Any] = {
        "mode": "pareto",
        "study": run.study.study_name, "sampler": run.sampler_name,
        "objectives": [{"name": o.name, "kind": o.kind, "direction": o.direction, "what": o.describe,
                        "exact": o.exact} for o in run.objectives],
        "fitness_data": run.fitness.data if run.fitness is not None else "",
        "confirm_data": run.fitness.confirm_data if confirmed and run.fitness is not None else "",
        "evaluations": len([t for t in complete if not t.user_attrs.get("duplicate")]),
        "full_model": dict(zip((o.name for o in run.objectives), full)),
        "reference_point": {"normalised": ref,
                            "how": f"fitness: ln(value) (reference ln({REFERENCE_FITNESS:g})); each cost: value / "
                                   f"the full model's (reference 1.0)"},
        "hypervolume": hypervolume([p["normalised"] for p in points], ref),
        "front": points,
        "measurement_spread": measurement_spread(points),
        "complete": run.finished() and all(t.state != TrialState.RUNNING for t in run.study.get_trials(deepcopy=False)),
    }
    atomic_write_text(out / "pareto.json", json.dumps(results, indent=2) + "\n")
    if plot:
        plot_front(run, out / "pareto.png")
        results["plot"] = str(out / "pareto.png")
    return results


def measurement_spread(points: list[dict[str, Any]]) -> dict[str, float]:
    """Each measured objective's median spread over the front's points (interquartile range of one
    measurement over its median): points whose values differ by less are not told apart by it, and
    a second measurement on another run can land further away still (docs/search.md)."""
    by_name: dict[str, list[float]] = {}
    for p in points:
        for name, spread in p.get("spread", {}).items():
            by_name.setdefault(name, []).append(spread)
    return {name: statistics.median(values) for name, values in by_name.items()}


def plot_front(run: ParetoSearch, path: Path) -> None:
    """Every evaluated candidate, the front, the full model and the one-shot prunes (first two objectives)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:  # plotting is optional: pip install matplotlib
        return
    names = [o.name for o in run.objectives]
    # The cost on x, the fitness (or the second cost) on y.
    xi = next((i for i, o in enumerate(run.objectives) if o.kind == "metric"), 0)
    yi = next((i for i, o in enumerate(run.objectives) if i != xi), 1)
    complete = [t for t in run.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
                if all(map(math.isfinite, t.values))]
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.scatter([t.values[xi] for t in complete], [t.values[yi] for t in complete], s=10, c="0.7", label="evaluated")
    seeds = [t for t in complete if t.system_attrs.get("subnas:role") == "one-shot"]
    if seeds:
        ax.scatter([t.values[xi] for t in seeds], [t.values[yi] for t in seeds], s=18, marker="x", c="tab:orange",
                   label="one-shot prunes")
    front = sorted(run.front(), key=lambda t: t.values[xi])
    ax.step([t.values[xi] for t in front], [t.values[yi] for t in front], where="post", c="tab:blue", marker="o",
            ms=4, label="front")
    full = run.full_model()
    ax.scatter([full[xi]], [full[yi]], marker="*", s=120, c="tab:red", label="full model")
    ax.set_xlabel(names[xi])
    ax.set_ylabel(names[yi])
    if run.objectives[yi].kind == "fitness":
        ax.set_yscale("log")  # perplexities of untrained sub-networks span orders of magnitude
    ax.set_title(f"Pareto front ({run.sampler_name}, {len(complete)} evaluations)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    tmp = path.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=120)
    plt.close(fig)
    os.replace(tmp, path)


def pareto_search(context: SearchContext, space: SearchSpace, names: Sequence[str], *, fitness: str,
                  fitness_options: dict[str, Any], sampler: str, sampler_options: dict[str, Any],
                  store: Any, out: Path, study_name: str, trials: int | None, seed: int | None,
                  confirm: int, progress: bool) -> dict[str, Any]:
    """The multi-objective search `subnas.search` runs when given ``objectives`` (module docstring)."""
    from subnas.lookups import make_fitness, sampler_strategy
    from subnas.samplers._trials import fail_dead_trials

    if trials is None:
        raise ValueError("--objectives needs a budget in --trials (evaluations of the whole front)")
    objectives, score = build_objectives(names, context, lambda: make_fitness(fitness, context, **fitness_options),
                                         fitness)
    strategy = sampler_strategy(sampler)
    try:
        smp = strategy(space, None, seed=seed, **sampler_options)
    except ValueError as exc:
        raise ValueError(f"--sampler {sampler} cannot search a front ({exc}); with --objectives use mo-evolution "
                         f"(default), nsga2, nsga3, tpe or random") from None
    study = optuna.create_study(storage=store, study_name=f"{study_name}-pareto", sampler=smp,
                                directions=[o.direction for o in objectives], load_if_exists=True)
    stored_names = study.user_attrs.get("objectives")
    if stored_names is not None and stored_names != list(names):
        raise ValueError(f"{out} holds a search of objectives {','.join(stored_names)}; rerun with --objectives "
                         f"{','.join(stored_names)} to resume it, or give a new --out (or --study-name)")
    stored = strategy.stored_seed(study)
    if seed is not None and stored is not None and stored != seed:
        raise ValueError(f"{out} holds a search started with --seed {stored}; rerun with --seed {stored} to "
                         f"resume it, or give a new --out (or --study-name) for a search with --seed {seed}")
    order = None if space.order is None else space.order.source
    if order is not None and study.user_attrs.get("order") not in (None, order):
        raise ValueError(f"{out} holds a search whose units were ranked as {study.user_attrs['order']!r}, but this "
                         f"run ranks them as {order!r}; rerun with the original options, or give a new --out")
    for key, value in (("objectives", list(names)), ("space", space.name), ("order", order)):
        study.set_user_attr(key, value)
    fail_dead_trials(study)
    run = ParetoSearch(study, space, objectives, score, sampler, trials, confirm=confirm)
    optimize(run, progress=progress, on_trial=lambda: write_front(run, out))
    run.confirm_front(progress=progress)
    return write_front(run, out, plot=True)
