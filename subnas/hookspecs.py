"""The hooks a subnas plugin can implement (pluggy, project name ``"subnas"``).

Each hook receives a ``register`` callable and calls it once per thing it adds. A plugin is any
module or object with functions marked ``@subnas.hookimpl``; see docs/plugins.md.
"""

from __future__ import annotations

from typing import Any, Callable

import pluggy

hookspec = pluggy.HookspecMarker("subnas")
hookimpl = pluggy.HookimplMarker("subnas")

Register = Callable[..., None]


@hookspec
def register_search_spaces(register: Register) -> Any:
    """Add search spaces, e.g. ``register("depth-only", DepthOnlySpace)`` (a `SearchSpace` subclass)."""


@hookspec
def register_samplers(register: Register) -> Any:
    """Add samplers, e.g. ``register("tpe", OptunaSampler(TPESampler))`` (a `subnas.interfaces.Sampler`)."""


@hookspec
def register_fitness(register: Register) -> Any:
    """Add fitness functions, e.g. ``register("param-count", ParamCountFitness)`` (a `Fitness` factory)."""


@hookspec
def register_extractors(register: Register) -> Any:
    """Add extractors, e.g. ``register("safetensors", SafetensorsExtractor)`` (an `Extractor` factory)."""


@hookspec
def register_model_families(register: Register) -> Any:
    """Add model families, e.g. ``register(Phi3Family())`` (a `subnas.families.ModelFamily`)."""


@hookspec
def register_metrics(register: Register) -> Any:
    """Add cost metrics, e.g. ``register("energy", EnergyMetric)`` (a `subnas.interfaces.Metric` factory)."""


@hookspec
def register_training_strategies(register: Register) -> Any:
    """Add supernet-training strategies, e.g. ``register("sandwich", SandwichStrategy)`` (a `TrainingStrategy` factory)."""
