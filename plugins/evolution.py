"""Built-in sampler plugin ``evolution``: the paper's bin-constrained evolutionary search
(Algorithm 1) as an Optuna sampler, `subnas.samplers.BinEvolutionSampler`.

It needs the search space and the bin: ``get_sampler("evolution", space=space, bin=(lo, hi), seed=0)``.
"""

from __future__ import annotations

from typing import Any

from subnas.hookspecs import hookimpl


@hookimpl
def register_samplers(register: Any) -> None:
    from subnas.samplers._evolution import BinEvolutionSampler

    register("evolution", BinEvolutionSampler)
