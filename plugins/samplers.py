"""Built-in plugin: Optuna's own samplers under short names (random search is the paper's baseline).

Any Optuna sampler class is already a factory ``**options -> BaseSampler``, so it is registered as
it is; ``subnas.get_sampler("tpe", seed=0)`` is ``optuna.samplers.TPESampler(seed=0)``.
"""

from __future__ import annotations

from typing import Any

from subnas.hookspecs import hookimpl


@hookimpl
def register_samplers(register: Any) -> None:
    from optuna.samplers import NSGAIISampler, RandomSampler, TPESampler

    register("random", RandomSampler)
    register("tpe", TPESampler)
    register("nsga2", NSGAIISampler)
