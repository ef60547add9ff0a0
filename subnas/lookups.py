"""Lookups by name over the plugin manager's registries: ``get_search_space("coarse-uniform", model)``
and its siblings, re-exported as ``subnas.get_*``.

They live above both the contracts (`subnas.interfaces`, which must import nothing that imports
it) and the plugin manager (`subnas.plugins`, which must not import the contracts: the model
families the contracts load look up registered families through it). Here both are below.

Example:
    >>> import subnas
    >>> from subnas.lookups import get_search_space, sampler_strategy
    >>> get_search_space("coarse-uniform", subnas.SubnasConfig(num_hidden_layers=4)).name
    'coarse-uniform'
    >>> sampler_strategy("evolution").takes_epochs
    True
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from subnas.bins import ParameterBin
from subnas.interfaces import (Extractor, Fitness, Metric, OptunaSampler, Sampler, SearchContext, SearchSpace,
                               TrainingStrategy)
from subnas.plugins import build, registry

if TYPE_CHECKING:
    from optuna.samplers import BaseSampler


def get_search_space(name: str, model_or_config: Any, **choices: Any) -> SearchSpace:
    """A registered search space over a model, e.g. ``get_search_space("coarse-uniform", "default")``."""
    return build("search_spaces", name, SearchSpace, model_or_config, **choices)  # type: ignore[no-any-return]


def get_sampler(name: str, space: SearchSpace | None = None, bin: ParameterBin | tuple[int, int] | None = None, *,
                seed: int | None = None, **options: Any) -> BaseSampler:
    """A registered sampler for one bin of a space, e.g. ``get_sampler("tpe", seed=0)`` or
    ``get_sampler("evolution", space, (lo, hi), seed=0)`` (samplers that need no space ignore it)."""
    from optuna.samplers import BaseSampler

    if bin is not None:
        bin = ParameterBin.coerce(bin)
    return build("samplers", name, BaseSampler, space, bin, seed=seed, adapt=as_sampler,  # type: ignore[no-any-return]
                 **options)


def as_sampler(registered: Any) -> Sampler:
    """What a plugin registered as a sampler, as a `Sampler` (a plain factory becomes an `OptunaSampler`)."""
    return registered if isinstance(registered, Sampler) else OptunaSampler(registered)


def sampler_strategy(name: str) -> Sampler:
    """The registered `Sampler` itself (what the driver asks about epochs, budgets and seeds)."""
    return as_sampler(registry("samplers")[name])


def get_fitness(name: str, **options: Any) -> Fitness:
    """A registered fitness function (a `Fitness`), e.g. ``get_fitness("perplexity", ...)``."""
    return build("fitness", name, Fitness, **options)  # type: ignore[no-any-return]


def get_metric(name: str, model_or_config: Any, context: SearchContext | None = None, **options: Any) -> Metric:
    """A registered cost metric over a model, e.g. ``get_metric("flops", "default")`` (a `Metric`)."""
    return build("metrics", name, Metric, model_or_config, context, **options)  # type: ignore[no-any-return]


def make_fitness(name: str, context: SearchContext, **options: Any) -> Fitness:
    """The fitness ``name`` for a search described by ``context``: `Fitness.from_context` when the
    registered factory has it (the built-ins do), else ``factory(supernet=..., **options)``."""
    factory = registry("fitness")[name]
    if hasattr(factory, "from_context"):
        return build("fitness", name, Fitness, context, adapt=lambda f: f.from_context, **options)  # type: ignore[no-any-return]
    return build("fitness", name, Fitness, supernet=context.supernet, **options)  # type: ignore[no-any-return]


def get_training_strategy(name: str, **options: Any) -> TrainingStrategy:
    """A registered supernet-training strategy, e.g. ``get_training_strategy("sandwich", random_samples=2)``."""
    return build("training_strategies", name, TrainingStrategy, **options)  # type: ignore[no-any-return]


def get_extractor(name: str, **options: Any) -> Extractor:
    """A registered extractor (an `Extractor`), e.g. ``get_extractor("transformers")``."""
    return build("extractors", name, Extractor, **options)  # type: ignore[no-any-return]
