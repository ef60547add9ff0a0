"""The four extension points: `SearchSpace`, `Sampler`, `Fitness`, `Extractor`.

Plugins register implementations through the hooks in `subnas.hookspecs`; users get them by name
with `subnas.get_search_space`, `subnas.get_sampler`, `subnas.get_fitness`, `subnas.get_extractor`.
Everything here speaks `SubNetwork`, the one description of a sub-network.
"""

from __future__ import annotations

import math
import os
import random
from abc import ABC, abstractmethod
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, ClassVar, Iterator, Literal

from subnas.config import SubnasConfig
from subnas.subnet import SubNetwork

if TYPE_CHECKING:
    import optuna

    from subnas.bins import ParameterBin


class SearchSpace(ABC):
    """A set of sub-networks of one model, with the paper's operators (§2.1-2.2).

    Built from anything that names a model plus per-dimension choices; every method returns legal
    sub-networks (``subnet.resolve(space.config)`` succeeds). Parameter bins are enforced on top
    of these operators by `subnas.bins.BinConstrainedSpace`.

    Example:
        >>> import random, subnas
        >>> space = subnas.get_search_space("coarse-uniform", subnas.SubnasConfig(num_hidden_layers=4))
        >>> s = space.sample(random.Random(0))
        >>> space.mutate(s, random.Random(1)) != s
        True
    """

    #: The name the space is registered under (informational).
    name: ClassVar[str] = ""

    def __init__(self, model_or_config: Any) -> None:
        """Subclasses take their per-dimension choices as keyword arguments after ``model_or_config``."""
        from subnas.families import load_config

        self.config: SubnasConfig = load_config(model_or_config)

    @abstractmethod
    def sample(self, rng: random.Random) -> SubNetwork:
        """A random member of the space."""

    @abstractmethod
    def mutate(self, subnet: SubNetwork, rng: random.Random) -> SubNetwork:
        """A copy of ``subnet`` with one dimension changed (§2.2)."""

    @abstractmethod
    def crossover(self, a: SubNetwork, b: SubNetwork, rng: random.Random) -> SubNetwork:
        """A child whose every dimension comes from ``a`` or ``b`` (§2.2)."""

    @abstractmethod
    def suggest(self, trial: optuna.Trial) -> SubNetwork:
        """The member an Optuna trial picks, define-by-run, so any Optuna sampler can search it.

        Contract with samplers that breed whole sub-networks (`BinEvolutionSampler`): when
        ``self.bred(trial)`` is not None, return it (after suggesting the params as usual, which
        that sampler answers from `encode`). The search driver checks this.
        """

    @staticmethod
    def bred(trial: Any) -> SubNetwork | None:
        """The sub-network the study's sampler chose for ``trial`` as a whole, if it did so."""
        # FixedTrial and other BaseTrial implementations have no study.
        genome_for = getattr(getattr(getattr(trial, "study", None), "sampler", None), "genome_for", None)
        return genome_for(trial) if genome_for is not None else None

    @abstractmethod
    def size(self) -> int:
        """The exact number of sub-networks in the space (a Python int of any size)."""

    def log10_size(self) -> float:
        """``log10(size())``, for spaces too large to print."""
        return math.log10(self.size())

    @abstractmethod
    def bounds(self) -> tuple[int, int]:
        """The smallest and largest parameter counts of the space's members."""

    def count(self, subnet: SubNetwork) -> int:
        """Parameters of a member (`subnas.count_parameters`, the one counter)."""
        from subnas.params import count_parameters

        return count_parameters(self.config, subnet)

    def repair(self, subnet: SubNetwork, bin: ParameterBin, rng: random.Random) -> SubNetwork | None:
        """A member near ``subnet`` inside ``bin``, or None (default: no repair, rejection only)."""
        return None

    def one_shot(self, bin: ParameterBin) -> list[SubNetwork]:
        """Members of ``bin`` a one-pass heuristic would pick (default: none).

        `BinEvolutionSampler` puts them into its initial population, so a search never ends
        below them; the built-in spaces return a depth × width grid in importance order.
        """
        return []

    def encode(self, subnet: SubNetwork) -> dict[str, Any]:
        """The Optuna params `suggest` records for ``subnet`` (default: none).

        A sampler that proposes whole sub-networks (`BinEvolutionSampler`) answers the params
        that `suggest` asks for from this, so the study shows the candidate's sizes; it hands the
        sub-network itself over through ``study.sampler.genome_for(trial)``, which `suggest`
        must return when it is not None (see `StructuredSearchSpace.suggest`).
        """
        return {}

    def contains(self, subnet: SubNetwork) -> bool:
        """Whether ``subnet`` is a member (default: it is legal for the model)."""
        from subnas.subnet import SubNetworkError

        try:
            subnet.resolve(self.config)
        except SubNetworkError:
            return False
        return True

    # Bin-constrained operators (paper §2.2): bounded rejection, then `repair` of the closest
    # proposal; None when both fail. Spaces may override them with something faster.
    def sample_in(self, bin: ParameterBin, rng: random.Random, *, max_tries: int = 100) -> SubNetwork | None:
        """A random member inside ``bin``, or None."""
        return self._constrain(lambda: self.sample(rng), bin, rng, max_tries)

    def mutate_in(self, subnet: SubNetwork, bin: ParameterBin, rng: random.Random, *,
                  max_tries: int = 100) -> SubNetwork | None:
        """A mutant of ``subnet`` inside ``bin``, or None."""
        return self._constrain(lambda: self.mutate(subnet, rng), bin, rng, max_tries)

    def crossover_in(self, a: SubNetwork, b: SubNetwork, bin: ParameterBin, rng: random.Random, *,
                     max_tries: int = 100) -> SubNetwork | None:
        """A child of ``a`` and ``b`` inside ``bin``, or None."""
        return self._constrain(lambda: self.crossover(a, b, rng), bin, rng, max_tries)

    def _constrain(self, propose: Callable[[], SubNetwork], bin: ParameterBin, rng: random.Random,
                   max_tries: int) -> SubNetwork | None:
        from subnas.bins import constrain

        return constrain(propose, self.count, lambda s: self.repair(s, bin, rng), bin, max_tries)


class Sampler(ABC):
    """Makes an Optuna sampler from keyword options; any callable ``**options -> BaseSampler``
    (an Optuna sampler class itself, say) can be registered in its place.

    Example:
        >>> import subnas
        >>> type(subnas.get_sampler("random", seed=0)).__name__
        'RandomSampler'
    """

    @abstractmethod
    def __call__(self, **options: Any) -> optuna.samplers.BaseSampler:
        """A fresh sampler configured by ``options``."""


class Fitness(ABC):
    """Scores a sub-network; ``direction`` says whether lower ("minimize", e.g. perplexity) or
    higher is better, and is passed to the Optuna study."""

    direction: ClassVar[Literal["minimize", "maximize"]] = "minimize"

    #: Which data the scores come from (e.g. ``"default:search"``), written beside every result.
    data: str = ""

    #: Which data `confirm` re-measures on (written beside confirmed results).
    confirm_data: str = ""

    @abstractmethod
    def __call__(self, subnet: SubNetwork) -> float:
        """The sub-network's score."""

    def steps(self, subnet: SubNetwork) -> Iterator[tuple[int, float]]:
        """The score at increasing fidelity: ``(budget used, score so far)`` pairs, the last one the
        final score. Multi-fidelity search reports each to Optuna's pruner (``--pruner``), which
        may stop a hopeless candidate early. Default: one step, the full score."""
        yield 1, self(subnet)

    def confirm(self, subnet: SubNetwork) -> float | None:
        """A second, independent and larger measurement of the same score, or None (the default:
        this fitness has none).

        A search ranks hundreds of candidates on a small sample, and the best of many noisy scores
        is mostly luck: at the end of a bin the search re-measures its few best candidates here and
        keeps the best confirmed one (``subnas search --confirm``; docs/search.md). Must score
        what ``__call__`` scores, on data ``__call__`` never saw, in the same direction."""
        return None


class Extractor(ABC):
    """Turns a sub-network of a supernet into a standalone model on disk."""

    @abstractmethod
    def extract(self, supernet: Any, subnet: SubNetwork, out_dir: str | os.PathLike[str]) -> Path:
        """Write the model for ``subnet`` into ``out_dir`` and return that folder."""
