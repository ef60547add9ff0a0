"""The evolution's operators as objects: selection, mutation, crossover.

`BinEvolutionSampler` takes one of each (``selection=``, ``mutation=``, ``crossover=``), as
Optuna's NSGA-II takes its crossover; a single- and a multi-objective evolution share them, and a
plugin replaces one by passing its own object (any callable with the same signature). The space
defines *what* a move is (`subnas.spaces.StructuredSearchSpace.moves`: dimension steps, a layer
swap, a units swap, each local along the importance order); the mutation operator decides
*which* move a parent gets, and with what weights.

Every operator is deterministic in the ``rng`` it is handed, so the sampler's plan of an epoch
stays a function of (seed, epoch, population) — what makes workers agree and a killed search
resume.

Example:
    >>> import random, subnas
    >>> space = subnas.get_search_space("coarse-uniform", subnas.SubnasConfig(num_hidden_layers=4))
    >>> lo, hi = space.bounds()
    >>> b = subnas.bins.ParameterBin(lo, hi)
    >>> parent = space.sample_in(b, random.Random(0))
    >>> child = WeightedMoves()(space, parent, b, random.Random(1), max_tries=20)
    >>> space.count(child) in b
    True
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from typing import Any, Protocol, TypeVar

import optuna
from optuna.trial import FrozenTrial, TrialState

from subnas.bins import ParameterBin
from subnas.subnet import SubNetwork

T = TypeVar("T")


class Selection(Protocol):
    """Ranks a population and picks its elites (the parents of the next epoch's offspring)."""

    def rank(self, study: optuna.Study, trials: Sequence[FrozenTrial]) -> list[FrozenTrial]:
        """The finished trials of ``trials``, best first, ties broken alike in every worker."""
        ...

    def elites(self, ranked: Sequence[T], k: int) -> list[T]:
        """The ``k`` parents of the next epoch from a ``rank``-ed population."""
        ...


class TruncationSelection:
    """Algorithm 1's selection: rank by the objective value, elites = the best k (single objective).

    A multi-objective evolution passes its own `Selection` (e.g. non-dominated sorting with
    crowding distance) and keeps the mutation and crossover operators.
    """

    def rank(self, study: optuna.Study, trials: Sequence[FrozenTrial]) -> list[FrozenTrial]:
        done = [t for t in trials if t.state == TrialState.COMPLETE and t.value is not None]
        sign = 1.0 if study.direction == optuna.study.StudyDirection.MINIMIZE else -1.0
        # Ties broken by trial number, so every worker ranks alike.
        return sorted(done, key=lambda t: (sign * float(t.value), t.number))  # type: ignore[arg-type]

    def elites(self, ranked: Sequence[T], k: int) -> list[T]:
        return list(ranked[:k])


class Mutation(Protocol):
    """Makes one mutant of ``parent`` inside ``bin`` (None: none found in ``max_tries``)."""

    def __call__(self, space: Any, parent: SubNetwork, bin: ParameterBin, rng: random.Random, *,
                 max_tries: int) -> SubNetwork | None: ...


class Crossover(Protocol):
    """Makes one child of two of ``elites`` inside ``bin`` (None: no legal pair or no child found)."""

    def __call__(self, space: Any, elites: Sequence[SubNetwork], bin: ParameterBin, rng: random.Random, *,
                 max_tries: int) -> SubNetwork | None: ...


#: Move weights in importance order (`WeightedMoves.for_space`): mostly the moves that keep a
#: pruned network alive — which layers (swap), which neurons and channels (units), how many layers,
#: how wide the MLP and embedding; attention shapes (h, g, hs) a quarter as often (their mutants of
#: SmolLM2's best seeds all scored perplexity > 1,000 against ~160; docs/benchmarks/search.md), in
#: one layer or (layer-wise spaces, ``-all``) in every layer at once.
IMPORTANCE_WEIGHTS: Mapping[str, float] = {"swap": 3.0, "units": 1.0, "h": 0.25, "g": 0.25, "hs": 0.25,
                                           "h-all": 0.25, "g-all": 0.25, "hs-all": 0.25}


class WeightedMoves:
    """Mutation: one of the moves the space offers a parent, drawn by weight, then constrained to
    the bin (rejection, then the space's repair).

    Args:
        weights: move -> weight (moves not listed: 1.0; weight 0 never drawn). None: every open
            move equally likely (paper §2.2).
        only: restrict to these moves (e.g. ``("swap",)``: `LayerSwap`); a parent with none of
            them open gets any open move instead.

    A space without moves (a plugin's `SearchSpace`) mutates by its own ``mutate_in``.
    """

    def __init__(self, weights: Mapping[str, float] | None = None, *, only: Sequence[str] | None = None) -> None:
        self.weights = None if weights is None else dict(weights)
        self.only = None if only is None else tuple(only)

    @classmethod
    def for_space(cls, space: Any) -> WeightedMoves:
        """The default mutation of ``space``: `IMPORTANCE_WEIGHTS` in importance order, uniform in
        the natural order (the paper's operators exactly)."""
        return cls(IMPORTANCE_WEIGHTS if getattr(space, "local", False) else None)

    def choose(self, moves: Sequence[str], rng: random.Random) -> str:
        """The move a parent gets among its open ``moves`` (sorted)."""
        pool = [m for m in moves if self.only is None or m in self.only] or list(moves)
        if self.weights is None:
            return rng.choice(pool)
        weights = [self.weights.get(m, 1.0) for m in pool]
        if not any(weights):
            return rng.choice(pool)
        return rng.choices(pool, weights=weights)[0]

    def __call__(self, space: Any, parent: SubNetwork, bin: ParameterBin, rng: random.Random, *,
                 max_tries: int) -> SubNetwork | None:
        if not hasattr(space, "moves"):
            return space.mutate_in(parent, bin, rng, max_tries=max_tries)  # type: ignore[no-any-return]
        return space.mutate_in(parent, bin, rng, max_tries=max_tries, choose=self.choose)  # type: ignore[no-any-return]


class LayerSwap(WeightedMoves):
    """Mutation by layer swaps only: one of the least important kept layers for one of the most
    important dropped ones (importance order; another move where no swap is open)."""

    def __init__(self) -> None:
        super().__init__(only=("swap",))


class UnitSwap(WeightedMoves):
    """Mutation by unit swaps only (fine-grained spaces in importance order): a few of the least
    important kept MLP neurons of one layer, or embedding channels, for the most important unused."""

    def __init__(self) -> None:
        super().__init__(only=("units",))


class EqualDepthCrossover:
    """The paper's crossover (§2.2): a random elite and a mate of the same depth, combined by the
    space (`SearchSpace.crossover_in`); in fine-grained spaces index sets recombine per layer."""

    def __call__(self, space: Any, elites: Sequence[SubNetwork], bin: ParameterBin, rng: random.Random, *,
                 max_tries: int) -> SubNetwork | None:
        a = rng.choice(list(elites))
        depth = len(a.resolve(space.config).layers)
        mates = [b for b in elites if b is not a and len(b.resolve(space.config).layers) == depth]
        if not mates:
            return None
        return space.crossover_in(a, rng.choice(mates), bin, rng, max_tries=max_tries)  # type: ignore[no-any-return]


__all__ = ["IMPORTANCE_WEIGHTS", "Crossover", "EqualDepthCrossover", "LayerSwap", "Mutation", "Selection",
           "TruncationSelection", "UnitSwap", "WeightedMoves"]
