"""Built-in plugin: Optuna's own samplers under short names (random search is the paper's baseline;
``nsga3`` for fronts of three objectives).

Each is an `subnas.interfaces.OptunaSampler`: it needs neither the space nor the bin, so
``subnas.get_sampler("tpe", seed=0)`` is ``optuna.samplers.TPESampler(seed=0)``.
"""

from __future__ import annotations

from typing import Any

from subnas.hookspecs import hookimpl


def _quiet(factory: Any) -> Any:
    """``factory`` without Optuna's "experimental" warning (NSGAIIISampler's, since Optuna 3.2)."""
    import functools
    import warnings

    import optuna

    @functools.wraps(factory, updated=())
    def make(**options: Any) -> Any:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return factory(**options)

    return make


@hookimpl
def register_samplers(register: Any) -> None:
    from optuna.samplers import NSGAIIISampler, NSGAIISampler, RandomSampler, TPESampler

    from subnas.interfaces import OptunaSampler

    register("random", OptunaSampler(RandomSampler))
    register("tpe", OptunaSampler(TPESampler))
    register("nsga2", OptunaSampler(NSGAIISampler))
    register("nsga3", OptunaSampler(_quiet(NSGAIIISampler)))  # many-objective (three or more)
