"""`BinEvolutionSampler`: the paper's bin-constrained evolutionary search (Algorithm 1) as an
Optuna sampler.

Algorithm 1, per bin: an initial population of N candidates from the bin; per epoch t: elites =
the best k of the population; λ mutation slots, each filled with probability m by a mutant of a
random elite; λ crossover slots, each filled with probability c by a child of two elites of equal
depth; r random samples; every offspring constrained to the bin; next population = the best N of
elites ∪ offspring ∪ randoms. One Optuna trial evaluates one candidate; a candidate's generation
(epoch) is the trial's ``subnas:generation`` system attribute.

**No state in the process.** Everything the algorithm needs is recomputed from the study's
storage on every ``ask``: the population of epoch t is a function of the finished trials, and the
plan of epoch t (which offspring to try) is a deterministic function of the study's seed, t and
the population before it. So any number of workers sharing one storage cooperate (each takes the
next unassigned slot of the current plan; a worker that would have to wait for others' results
evaluates an extra random sample instead), and a killed search resumes where it stopped (a slot
whose trial failed is handed out again; finished trials are never repeated). Candidates already
evaluated in the study are never proposed again.

**Works with any objective.** The sampler owns the parameters its space's define-by-run
``suggest`` asks for (it answers them from the candidate, `SearchSpace.encode`) and hands the
candidate itself to ``space.suggest(trial)`` through `genome_for`; every other parameter goes to
an inner sampler (default `optuna.samplers.RandomSampler`).

Example:
    >>> import optuna, subnas
    >>> space = subnas.get_search_space("coarse-uniform", subnas.SubnasConfig(num_hidden_layers=6))
    >>> lo, hi = space.bounds()
    >>> sampler = subnas.BinEvolutionSampler(space, (lo + (hi - lo) // 4, lo + (hi - lo) // 2),
    ...                                      population_size=6, num_elites=2, seed=0)
    >>> study = optuna.create_study(sampler=sampler)
    >>> study.optimize(lambda trial: space.count(space.suggest(trial)), n_trials=12)
    >>> sampler.generation_of(study.best_trial) >= 0
    True
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass
from typing import Any, Sequence

import optuna
from optuna.samplers import BaseSampler, RandomSampler
from optuna.trial import FrozenTrial, TrialState

from subnas.bins import BinExhaustedError, InfeasibleBinError, ParameterBin, SearchFinished, check_in_range
from subnas.samplers._operators import (Crossover, EqualDepthCrossover, Mutation, Selection, TruncationSelection,
                                        WeightedMoves)
from subnas.samplers._genome import GenomeSampler
from subnas.samplers._trials import KEY, fail_dead_trials, record_worker
from subnas.subnet import SubNetwork

GEN, SLOT, ROLE, SUBNET = ("subnas:generation", "subnas:slot", "subnas:role", "subnas:subnet")
SEED = "subnas:evolution_seed"
_DONE = (TrialState.COMPLETE, TrialState.PRUNED)


@dataclass(frozen=True)
class _Slot:
    role: str
    subnet: SubNetwork


class BinEvolutionSampler(GenomeSampler):
    """Bin-constrained evolution (paper Algorithm 1) over a subnas search space.

    Args:
        space: a `subnas.interfaces.SearchSpace` (e.g. ``subnas.get_search_space("coarse-uniform", model)``).
        bin: ``(lo, hi)`` parameter counts or a `subnas.bins.ParameterBin`; every candidate lies in it.
        population_size: N.
        num_elites: k.
        num_offspring: λ, mutation slots and crossover slots per epoch (default: N).
        num_random: r, random samples per epoch.
        mutation_prob: m, probability that a mutation slot is filled (paper: 0.2).
        crossover_prob: c, probability that a crossover slot is filled (paper: 0.2).
        epochs: T; after epoch T is evaluated `is_finished` is true (the search driver stops). Asked
            for more, the sampler keeps proposing random samples of the bin.
        max_tries: bounded rejection per constrained operator before repair.
        inner_sampler: answers parameters the space does not own (default: RandomSampler(seed)).
        seed: makes the search deterministic with one worker; stored in the study so that all
            workers of a study plan alike.
        seed_one_shot: start the initial population from the space's one-shot prunes of the bin
            (`SearchSpace.one_shot`); False gives the paper's purely random initial population.
        poll_seconds: how often a worker with no free slot checks whether the other workers have
            finished the current epoch (several workers on one storage).
        selection: ranks the population and picks the elites (default `TruncationSelection`).
        mutation: makes a mutant of an elite in the bin (default `WeightedMoves.for_space(space)`:
            local moves along the importance order, the paper's uniform ones in the natural order).
        crossover: makes a child of two elites in the bin (default `EqualDepthCrossover`).
    """

    seed_attr = SEED

    def __init__(self, space: Any, bin: tuple[int, int] | ParameterBin, *, population_size: int = 20,
                 num_elites: int = 5, num_offspring: int | None = None, num_random: int = 5,
                 mutation_prob: float = 0.2, crossover_prob: float = 0.2, epochs: int | None = None,
                 max_tries: int = 100, inner_sampler: BaseSampler | None = None, seed: int | None = None,
                 seed_one_shot: bool = True, poll_seconds: float = 0.2, selection: Selection | None = None,
                 mutation: Mutation | None = None, crossover: Crossover | None = None) -> None:
        if not 1 <= num_elites <= population_size:
            raise ValueError(f"need 1 <= num_elites ({num_elites}) <= population_size ({population_size})")
        for name, p in (("mutation_prob", mutation_prob), ("crossover_prob", crossover_prob)):
            if not 0.0 <= p <= 1.0:
                raise ValueError(f"{name}={p} is not a probability in [0, 1]")
        self.space = space
        self.bin = ParameterBin.coerce(bin)
        check_in_range(space, self.bin)
        self.population_size, self.num_elites = population_size, num_elites
        self.num_offspring = population_size if num_offspring is None else num_offspring
        self.num_random, self.mutation_prob, self.crossover_prob = num_random, mutation_prob, crossover_prob
        self.epochs, self.max_tries, self.seed_one_shot = epochs, max_tries, seed_one_shot
        self.poll_seconds = poll_seconds
        self.selection: Selection = selection or TruncationSelection()
        self.mutation: Mutation = mutation or WeightedMoves.for_space(space)
        self.crossover: Crossover = crossover or EqualDepthCrossover()
        # Called (with the study) every ~10 s while a worker waits at an epoch barrier: frees the
        # slots of dead workers, which would otherwise hold the barrier forever.
        self.on_wait: Any = fail_dead_trials
        self._seed = random.Random().randrange(2**31) if seed is None else seed
        self._inner = inner_sampler or RandomSampler(seed=seed)
        self._genomes: dict[int, SubNetwork] = {}  # trial id -> candidate, for this process's own trials
        self._params: dict[int, dict[str, Any]] = {}
        self._plans: dict[tuple[int, int, str], list[_Slot]] = {}  # memo only; always re-derivable

    # ------------------------------------------------------------------ Optuna's sampler API
    def before_trial(self, study: optuna.Study, trial: FrozenTrial) -> None:
        seed = self._study_seed(study)
        storage, tid = study._storage, trial._trial_id
        # Who runs this trial, before it claims a slot: a process killed after claiming one must
        # be recognisable as dead, or every other worker waits for its slot forever.
        record_worker(storage, tid)
        last_check = time.monotonic()
        while True:
            trials = study.get_trials(deepcopy=False)
            found = self._next(study, trials, seed, trial)
            if found is None:
                # Other workers still evaluate the current epoch and this one has no slot left:
                # wait for them rather than spend an evaluation on an extra random sample (that
                # multiplied the evaluations of N workers). This trial is filed under no epoch
                # while it waits, so it never holds up the barrier it waits at.
                if self.epochs is not None and self.is_finished(study):
                    raise SearchFinished(trial._trial_id)
                if time.monotonic() - last_check > 10:
                    last_check = time.monotonic()
                    if self.on_wait is not None:
                        self.on_wait(study)  # e.g. fail the trials of dead workers
                time.sleep(self.poll_seconds)
                continue
            generation, slot, entry = found
            for key, value in ((GEN, generation), (SLOT, slot), (ROLE, entry.role),
                               (SUBNET, entry.subnet.to_dict()), (KEY, entry.subnet.key(self.space.config))):
                storage.set_trial_system_attr(tid, key, value)
            if slot is None or not self._contested(study, trial, generation, slot):
                break
            # Another worker claimed the same free slot: withdraw (filed under no epoch again),
            # wait a random moment (so two colliding workers do not collide again) and look again.
            storage.set_trial_system_attr(tid, GEN, None)
            storage.set_trial_system_attr(tid, SLOT, None)
            time.sleep(random.Random().uniform(0, self.poll_seconds))
        self._genomes[tid] = entry.subnet
        self._params[tid] = self.space.encode(entry.subnet)

    @staticmethod
    def _contested(study: optuna.Study, trial: FrozenTrial, generation: int, slot: int) -> bool:
        # Every claimant writes its claim before it reads the others'. Of two claimants, each
        # keeps the slot only if it saw no other claim; both keeping it would need each read to
        # come before the other's write, which write-before-read rules out. (Both may withdraw;
        # the random wait breaks the tie.) "Lower trial number wins" was not enough: the higher
        # one could check, see nothing and keep the slot before the lower one wrote its claim.
        return any(t.number != trial.number and t.system_attrs.get(GEN) == generation
                   and t.system_attrs.get(SLOT) == slot and t.state != TrialState.FAIL
                   for t in study.get_trials(deepcopy=False))

    # ------------------------------------------------------------------ the protocol spaces use
    @staticmethod
    def generation_of(trial: FrozenTrial) -> int | None:
        return trial.system_attrs.get(GEN)

    def is_finished(self, study: optuna.Study) -> bool:
        """True once every candidate of epoch ``epochs`` is evaluated."""
        if self.epochs is None:
            return False
        gens = self._by_generation(study.get_trials(deepcopy=False))
        last = gens.get(self.epochs)
        if not last:
            return False
        plan = self._plan(study, gens, self._study_seed(study), self.epochs)
        done = {t.system_attrs.get(SLOT) for t in last if t.state in _DONE}
        return all(i in done for i in range(len(plan)))

    def population(self, study: optuna.Study, generation: int | None = None) -> list[FrozenTrial]:
        """The population after ``generation`` (default: the latest complete one), best first."""
        gens = self._by_generation(study.get_trials(deepcopy=False))
        if generation is None:
            generation = max(gens, default=0)
        return self._population(study, gens, generation)

    # ------------------------------------------------------------------ Algorithm 1, statelessly
    @staticmethod
    def _by_generation(trials: Sequence[FrozenTrial]) -> dict[int, list[FrozenTrial]]:
        gens: dict[int, list[FrozenTrial]] = {}
        for t in trials:
            g = t.system_attrs.get(GEN)
            if g is not None:
                gens.setdefault(int(g), []).append(t)
        return gens

    def _rank(self, study: optuna.Study, trials: Sequence[FrozenTrial]) -> list[FrozenTrial]:
        return self.selection.rank(study, trials)

    def _population(self, study: optuna.Study, gens: dict[int, list[FrozenTrial]], g: int) -> list[FrozenTrial]:
        """P(g): the best N of elites(P(g-1)) and everything evaluated in epoch g."""
        pool = list(gens.get(g, []))
        if g > 0:
            pool += self.selection.elites(self._population(study, gens, g - 1), self.num_elites)
        unique: dict[str, FrozenTrial] = {}
        for t in self._rank(study, pool):
            unique.setdefault(t.system_attrs.get(KEY, str(t.number)), t)
        return list(unique.values())[: self.population_size]

    def _plan(self, study: optuna.Study, gens: dict[int, list[FrozenTrial]], seed: int, g: int) -> list[_Slot]:
        """The candidates of epoch ``g``: deterministic in (seed, g, population before g)."""
        parents = [] if g == 0 else self._population(study, gens, g - 1)
        memo_key = (seed, g, ",".join(str(t.number) for t in parents))
        if memo_key in self._plans:
            return self._plans[memo_key]
        rng = random.Random(f"subnas-evolution-{seed}-{g}")
        # Only earlier epochs: they are frozen once epoch g starts, so every worker derives the
        # same plan at any time.
        seen = {t.system_attrs.get(KEY) for h, ts in gens.items() if h < g for t in ts}
        plan: list[_Slot] = []

        def add(role: str, make: Any) -> None:
            for _ in range(5):  # a few retries to avoid proposing an evaluated candidate again
                subnet = make()
                if subnet is None:
                    continue
                key = subnet.key(self.space.config)
                if key not in seen:
                    seen.add(key)
                    plan.append(_Slot(role, subnet))
                    return

        if g == 0:
            # Seeded evolution: the initial population starts from the bin's one-shot prunes (the
            # depth × width grid in the space's order), so the search never ends below the simple
            # baseline; all of them, even beyond N (P(0) keeps the best N). Random members of the
            # bin fill the rest (Algorithm 1's initial sample).
            seeds = self.space.one_shot(self.bin) if self.seed_one_shot else []
            for subnet in seeds:
                add("one-shot", lambda subnet=subnet: subnet)
            for _ in range(self.population_size - len(plan)):
                add("init", lambda: self.space.sample_in(self.bin, rng, max_tries=self.max_tries))
        else:
            elites = [SubNetwork.from_dict(t.system_attrs[SUBNET])
                      for t in self.selection.elites(parents, self.num_elites)]
            for _ in range(self.num_offspring):
                if elites and rng.random() < self.mutation_prob:
                    add("mutation", lambda: self.mutation(self.space, rng.choice(elites), self.bin, rng,
                                                          max_tries=self.max_tries))
            for _ in range(self.num_offspring):
                if len(elites) > 1 and rng.random() < self.crossover_prob:
                    add("crossover", lambda: self.crossover(self.space, elites, self.bin, rng,
                                                            max_tries=self.max_tries))
            for _ in range(self.num_random):
                add("random", lambda: self.space.sample_in(self.bin, rng, max_tries=self.max_tries))
        if not plan:  # e.g. r = 0 and no slot filled: keep the search moving
            add("random", lambda: self.space.sample_in(self.bin, rng, max_tries=self.max_tries))
        self._plans[memo_key] = plan
        return plan

    def _next(self, study: optuna.Study, trials: Sequence[FrozenTrial], seed: int,
              trial: FrozenTrial) -> tuple[int, int | None, _Slot] | None:
        gens = self._by_generation([t for t in trials if t.number != trial.number])
        g = max(gens, default=0)
        while True:
            plan = self._plan(study, gens, seed, g)
            if not plan:
                # Not even a random member of the bin is new: the bin is used up (or was never
                # reachable). Planning the next epoch would find nothing either (and recursing
                # through empty epochs used to end in RecursionError), so say so.
                done = len([t for t in trials if t.state in _DONE])
                if not done:
                    raise InfeasibleBinError(
                        f"bin {self.bin}: no member of the space was found inside it (random samples and repair "
                        f"all missed); the space's counts step over it — widen the bin or refine the choices",
                        trial_id=trial._trial_id)
                raise BinExhaustedError(
                    f"bin {self.bin}: every member the search reaches has been evaluated ({done} trials); the "
                    f"study is complete — widen the bin or the space's choices to search further",
                    trial_id=trial._trial_id)
            taken = {t.system_attrs.get(SLOT) for t in gens.get(g, []) if t.state != TrialState.FAIL}
            free = [i for i in range(len(plan)) if i not in taken]
            if free:
                return g, free[0], plan[free[0]]
            finished = {t.system_attrs.get(SLOT) for t in gens.get(g, []) if t.state in _DONE}
            settled = all(t.state in _DONE or t.state == TrialState.FAIL for t in gens.get(g, []))
            if not (settled and all(i in finished for i in range(len(plan)))):
                return None  # other workers still evaluate epoch g: the caller waits for them
            if self.epochs is None or g < self.epochs:
                g += 1  # epoch g is evaluated: plan the next one
                continue
            # Asked for more than the epochs: random members of the bin, never one seen before.
            rng = random.Random(f"subnas-extra-{seed}-{trial.number}")
            seen = {t.system_attrs.get(KEY) for t in trials}
            for _ in range(20):
                subnet = self.space.sample_in(self.bin, rng, max_tries=self.max_tries)
                if subnet is not None and subnet.key(self.space.config) not in seen:
                    return g, None, _Slot("random", subnet)
            raise BinExhaustedError(f"bin {self.bin}: no new member found after the {self.epochs} epochs; "
                                    f"the study is complete", trial_id=trial._trial_id)
