"""Built-in sampler plugin ``evolution``: the paper's bin-constrained evolutionary search
(Algorithm 1), `subnas.samplers.BinEvolutionSampler`, sized for the budgets ``subnas search`` runs.

It needs the search space and the bin: ``get_sampler("evolution", space, (lo, hi), seed=0)``.
"""

from __future__ import annotations

from typing import Any

import optuna

from subnas.bins import ParameterBin
from subnas.hookspecs import hookimpl
from subnas.interfaces import Sampler, SearchSpace
from subnas.samplers import EVOLUTION_SEED as SEED
from subnas.samplers import BinEvolutionSampler

#: What `subnas search` runs by default with the evolution sampler: Algorithm 1 sized for budgets
#: of ~40 evaluations (the paper's N=20, k=5, m=c=0.2, r=5 — `BinEvolutionSampler`'s own defaults —
#: is sized for 5,050). No random members after the seeded start: in a bin of SmolLM2 they scored
#: perplexity 1e4-1e5 against the seeds' ~160, a wasted evaluation each
#: (docs/benchmarks/search.md). Options given to the sampler override any of them.
EVOLUTION_DEFAULTS = {"population_size": 12, "num_elites": 4, "num_offspring": 16, "mutation_prob": 0.5,
                      "crossover_prob": 0.25, "num_random": 0}


class EvolutionSampler(Sampler):
    """`BinEvolutionSampler` with `EVOLUTION_DEFAULTS`; a budget can be given in ``epochs``."""

    takes_epochs = True

    def __call__(self, space: SearchSpace | None, bin: ParameterBin | None, *, seed: int | None = None,
                 **options: Any) -> BinEvolutionSampler:
        if space is None or bin is None:
            raise ValueError("the evolution sampler searches inside one bin of a space: "
                             "get_sampler('evolution', space, (lo, hi), seed=0)")
        return BinEvolutionSampler(space, bin, seed=seed, **{**EVOLUTION_DEFAULTS, **options})

    def is_finished(self, study: optuna.Study) -> bool:
        sampler = study.sampler
        return isinstance(sampler, BinEvolutionSampler) and sampler.is_finished(study)

    def stored_seed(self, study: optuna.Study) -> int | None:
        stored = study._storage.get_study_system_attrs(study._study_id).get(SEED)
        return None if stored is None else int(stored)


@hookimpl
def register_samplers(register: Any) -> None:
    register("evolution", EvolutionSampler())
