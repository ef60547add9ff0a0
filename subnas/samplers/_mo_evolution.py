"""`ParetoEvolutionSampler`: subnas's evolution in multi-objective form (steady-state NSGA-II).

Each trial is one offspring of the current archive: the study's complete trials are ranked by
non-dominated sorting, ties within a front broken by crowding distance (NSGA-II, Deb et al. 2002);
the best ``population_size`` of them are the parents; a binary tournament on (rank, crowding)
picks one or two, which the space's own operators mutate or cross over (`SearchSpace.mutate`,
`SearchSpace.crossover`). Before any offspring, the study evaluates the seeds: the space's
one-shot prunes (`SearchSpace.one_shot`, in the space's importance order) across the whole size
range, so the front starts at least as good as the simple baseline at every size.

Crowding is measured on the logarithm of the objectives: parameters, FLOPs, bytes, latency and
perplexity are all compared as ratios (a 10% smaller model is as far from its neighbour at 30M as
at 130M), so a few untrained sub-networks with perplexity 1e5 do not squash every other distance.

**No state in the process**, as `BinEvolutionSampler`: the candidate of a trial is a function of
the study's seed, the number of complete trials and the keys already taken, all in the storage. A
killed search resumes where it stopped (the dead trial is failed and its candidate proposed again,
since the archive it was bred from is unchanged); several workers share a study (each skips the
candidates the others are evaluating). Candidates already in the study are never proposed again.

Example:
    >>> import optuna, subnas
    >>> space = subnas.get_search_space("coarse-uniform", subnas.SubnasConfig(num_hidden_layers=6))
    >>> sampler = ParetoEvolutionSampler(space, population_size=6, strata=3, seed=0)
    >>> study = optuna.create_study(sampler=sampler, directions=["minimize", "minimize"])
    >>> study.optimize(lambda t: (lambda s: (space.count(s) % 7919, space.count(s)))(space.suggest(t)), n_trials=10)
    >>> len(study.best_trials) >= 1
    True
"""

from __future__ import annotations

import math
import random
from typing import Any, Sequence

import optuna
from optuna.samplers import BaseSampler, RandomSampler
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial, TrialState

from subnas.bins import ParameterBin
from subnas.samplers._genome import GenomeSampler
from subnas.samplers._trials import KEY, record_worker
from subnas.subnet import SubNetwork

ROLE, SUBNET = "subnas:role", "subnas:subnet"
SEED = "subnas:mo_evolution_seed"


def non_dominated_ranks(values: Sequence[Sequence[float]]) -> list[int]:
    """The front index of each point (0: non-dominated), every objective minimised.

    Example:
        >>> non_dominated_ranks([(1, 3), (2, 2), (2, 3), (3, 3)])
        [0, 0, 1, 2]
    """
    n = len(values)
    dominated_by = [0] * n
    dominates: list[list[int]] = [[] for _ in range(n)]
    for i in range(n):
        for j in range(i + 1, n):
            a, b = values[i], values[j]
            if all(x <= y for x, y in zip(a, b)) and any(x < y for x, y in zip(a, b)):
                dominates[i].append(j)
                dominated_by[j] += 1
            elif all(y <= x for x, y in zip(a, b)) and any(y < x for x, y in zip(a, b)):
                dominates[j].append(i)
                dominated_by[i] += 1
    ranks = [0] * n
    front = [i for i in range(n) if dominated_by[i] == 0]
    rank = 0
    while front:
        nxt = []
        for i in front:
            ranks[i] = rank
            for j in dominates[i]:
                dominated_by[j] -= 1
                if dominated_by[j] == 0:
                    nxt.append(j)
        front, rank = nxt, rank + 1
    return ranks


def crowding_distances(values: Sequence[Sequence[float]]) -> list[float]:
    """NSGA-II crowding distance of each point within one front (the extremes: infinite)."""
    n = len(values)
    if n <= 2:
        return [math.inf] * n
    out = [0.0] * n
    for m in range(len(values[0])):
        order = sorted(range(n), key=lambda i: values[i][m])
        lo, hi = values[order[0]][m], values[order[-1]][m]
        out[order[0]] = out[order[-1]] = math.inf
        if hi == lo:
            continue
        for k in range(1, n - 1):
            out[order[k]] += (values[order[k + 1]][m] - values[order[k - 1]][m]) / (hi - lo)
    return out


def one_shot_grid(space: Any, strata: int = 6, per_stratum: int = 2) -> list[SubNetwork]:
    """The space's one-shot prunes across its whole size range: ``strata`` equal-width parameter
    bins from the smallest to the largest member, up to ``per_stratum`` prunes of each (spread
    over the bin's depth × width grid), largest stratum first."""
    lo, hi = space.bounds()
    step = max(1, (hi - lo) // strata)
    out: list[SubNetwork] = []
    seen: set[str] = set()
    for i in reversed(range(strata)):
        b = ParameterBin(lo + i * step, hi if i == strata - 1 else lo + (i + 1) * step - 1)
        candidates = space.one_shot(b)
        stride = max(1, len(candidates) // per_stratum)
        for subnet in candidates[::stride][:per_stratum]:
            key = subnet.key(space.config)
            if key not in seen:
                seen.add(key)
                out.append(subnet)
    return out


class ParetoEvolutionSampler(GenomeSampler):
    """Multi-objective evolution over a subnas search space (module docstring).

    Args:
        space: a `subnas.interfaces.SearchSpace`.
        population_size: parents kept from the archive (best by rank, then crowding).
        mutation_prob: probability an offspring is a mutant (else a child of two parents of equal
            depth; a mutant when no such pair exists).
        strata, per_stratum: the one-shot seed grid (`one_shot_grid`); ``strata=0``: no seeds.
        seeds: explicit seed sub-networks instead of the grid.
        max_tries: proposals per trial before a random member is taken instead of a repeat.
        inner_sampler: answers parameters the space does not own (default: RandomSampler(seed)).
        seed: makes the search deterministic with one worker; stored in the study.
    """

    seed_attr = SEED

    def __init__(self, space: Any, *, population_size: int = 12, mutation_prob: float = 0.6, strata: int = 6,
                 per_stratum: int = 2, seeds: Sequence[SubNetwork] | None = None, max_tries: int = 20,
                 inner_sampler: BaseSampler | None = None, seed: int | None = None) -> None:
        if population_size < 2:
            raise ValueError(f"population_size={population_size}: need at least 2 parents")
        if not 0.0 <= mutation_prob <= 1.0:
            raise ValueError(f"mutation_prob={mutation_prob} is not a probability in [0, 1]")
        self.space, self.population_size, self.mutation_prob = space, population_size, mutation_prob
        self.max_tries = max_tries
        self.seeds = list(seeds) if seeds is not None else (one_shot_grid(space, strata, per_stratum) if strata else [])
        self._seed = random.Random().randrange(2**31) if seed is None else seed
        self._inner = inner_sampler or RandomSampler(seed=seed)
        self._genomes: dict[int, SubNetwork] = {}
        self._params: dict[int, dict[str, Any]] = {}

    # ------------------------------------------------------------------ Optuna's sampler API
    def before_trial(self, study: optuna.Study, trial: FrozenTrial) -> None:
        record_worker(study._storage, trial._trial_id)
        role, subnet = self._propose(study, trial)
        for key, value in ((ROLE, role), (SUBNET, subnet.to_dict()), (KEY, subnet.key(self.space.config))):
            study._storage.set_trial_system_attr(trial._trial_id, key, value)
        self._genomes[trial._trial_id] = subnet
        self._params[trial._trial_id] = self.space.encode(subnet)

    # ------------------------------------------------------------------ the algorithm
    def parents(self, study: optuna.Study, trials: Sequence[FrozenTrial] | None = None
                ) -> list[tuple[FrozenTrial, int, float]]:
        """The parents: (trial, front rank, crowding) of the best ``population_size`` complete
        trials, one per distinct sub-network, best first (ties by trial number)."""
        trials = study.get_trials(deepcopy=False) if trials is None else trials
        signs = [1.0 if d == StudyDirection.MINIMIZE else -1.0 for d in study.directions]
        unique: dict[str, FrozenTrial] = {}
        for t in sorted(trials, key=lambda t: t.number):
            if t.state == TrialState.COMPLETE and t.values is not None and all(map(math.isfinite, t.values)):
                unique.setdefault(t.system_attrs.get(KEY, str(t.number)), t)
        done = list(unique.values())
        values = [[_log(s * v) for s, v in zip(signs, t.values)] for t in done]
        ranks = non_dominated_ranks(values)
        crowding = [0.0] * len(done)
        for r in set(ranks):
            members = [i for i in range(len(done)) if ranks[i] == r]
            for i, c in zip(members, crowding_distances([values[i] for i in members])):
                crowding[i] = c
        order = sorted(range(len(done)), key=lambda i: (ranks[i], -crowding[i], done[i].number))
        return [(done[i], ranks[i], crowding[i]) for i in order[: self.population_size]]

    def _propose(self, study: optuna.Study, trial: FrozenTrial) -> tuple[str, SubNetwork]:
        trials = [t for t in study.get_trials(deepcopy=False) if t.number != trial.number]
        taken = {t.system_attrs.get(KEY) for t in trials if t.state != TrialState.FAIL}
        for subnet in self.seeds:
            if subnet.key(self.space.config) not in taken:
                return "one-shot", subnet
        complete = sum(t.state == TrialState.COMPLETE for t in trials)
        running = sum(t.state == TrialState.RUNNING for t in trials)
        # A function of what the storage holds, so a resumed trial gets the same candidate.
        rng = random.Random(f"subnas-mo-evolution-{self._study_seed(study)}-{complete}-{running}")
        parents = self.parents(study, trials)
        config = self.space.config

        def pick() -> SubNetwork:
            a, b = rng.sample(parents, 2) if len(parents) > 1 else (parents[0], parents[0])
            best = a if (a[1], -a[2], a[0].number) <= (b[1], -b[2], b[0].number) else b
            return SubNetwork.from_dict(best[0].system_attrs[SUBNET])

        for _ in range(self.max_tries):
            if not parents:
                role, child = "random", self.space.sample(rng)
            elif rng.random() < self.mutation_prob:
                role, child = "mutation", self.space.mutate(pick(), rng)
            else:
                x, y = pick(), pick()
                if x.key(config) != y.key(config) and \
                        len(x.resolve(config).layers) == len(y.resolve(config).layers):
                    role, child = "crossover", self.space.crossover(x, y, rng)
                else:  # crossover needs two distinct parents of equal depth (paper §2.2)
                    role, child = "mutation", self.space.mutate(x, rng)
            if child.key(config) not in taken:
                return role, child
        for _ in range(self.max_tries * 5):
            child = self.space.sample(rng)
            if child.key(config) not in taken:
                return "random", child
        return "random", child  # a space this small is searched through; a repeat reuses its values


def _log(v: float) -> float:
    """Logarithm of a positive objective (ratios, see the module docstring); others as they are."""
    return math.log(v) if v > 0 else v
