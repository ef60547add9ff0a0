"""Built-in sampler plugin ``mo-evolution``: subnas's evolution in multi-objective form
(`subnas.samplers.ParetoEvolutionSampler`), the default of ``subnas search --objectives``.

It searches the whole front: ``get_sampler("mo-evolution", space, seed=0)``.
"""

from __future__ import annotations

from typing import Any

import optuna

from subnas.bins import ParameterBin
from subnas.hookspecs import hookimpl
from subnas.interfaces import Sampler, SearchSpace
from subnas.samplers import MO_EVOLUTION_SEED as SEED
from subnas.samplers import ParetoEvolutionSampler


class MOEvolutionSampler(Sampler):
    """`ParetoEvolutionSampler` over a space. Given a bin (a single-objective search per bin), it is
    steady-state evolution seeded with that bin's one-shot prunes, its proposals repaired into the
    bin by the driver; the ``evolution`` sampler, which stays inside the bin by construction, is
    the better choice there."""

    def __call__(self, space: SearchSpace | None, bin: ParameterBin | None, *, seed: int | None = None,
                 **options: Any) -> ParetoEvolutionSampler:
        if space is None:
            raise ValueError("the mo-evolution sampler needs the search space: get_sampler('mo-evolution', space)")
        if bin is not None and "seeds" not in options:
            options = {**options, "seeds": space.one_shot(bin)}
        return ParetoEvolutionSampler(space, seed=seed, **options)

    def stored_seed(self, study: optuna.Study) -> int | None:
        stored = study._storage.get_study_system_attrs(study._study_id).get(SEED)
        return None if stored is None else int(stored)


@hookimpl
def register_samplers(register: Any) -> None:
    register("mo-evolution", MOEvolutionSampler())
