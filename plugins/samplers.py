"""Built-in plugin: Optuna's own samplers under short names (random search is the paper's baseline).

Each is an `subnas.interfaces.OptunaSampler`: it needs neither the space nor the bin, so
``subnas.get_sampler("tpe", seed=0)`` is ``optuna.samplers.TPESampler(seed=0)``.
"""

from __future__ import annotations

from typing import Any

from subnas.hookspecs import hookimpl


@hookimpl
def register_samplers(register: Any) -> None:
    from optuna.samplers import NSGAIIISampler, NSGAIISampler, RandomSampler, TPESampler

    from subnas.interfaces import OptunaSampler

    register("random", OptunaSampler(RandomSampler))
    register("tpe", OptunaSampler(TPESampler))
    register("nsga2", OptunaSampler(NSGAIISampler))
    register("nsga3", OptunaSampler(NSGAIIISampler))  # many-objective (three or more): reference directions
