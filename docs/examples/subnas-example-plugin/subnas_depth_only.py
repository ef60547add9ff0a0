"""A subnas plugin adding the "depth-only" search space: keep the first n layers, all else whole.

The smallest useful search space, written against the `subnas.interfaces.SearchSpace` ABC so that
every method a space needs is visible in one place (docs/plugins.md walks through it).
"""

from __future__ import annotations

import random
from typing import Any

import optuna

import subnas
from subnas.interfaces import SearchSpace


class DepthOnlySpace(SearchSpace):
    """Sub-networks ``SubNetwork(n_layers=n)`` for n in ``n_layers`` (default: 1..L).

    Example:
        >>> import random, subnas
        >>> space = subnas.get_search_space("depth-only", subnas.SubnasConfig(num_hidden_layers=6), n_layers=[2, 4])
        >>> space.size(), space.sample(random.Random(0)).n_layers in (2, 4)
        (2, True)
    """

    name = "depth-only"

    def __init__(self, model_or_config: Any, *, n_layers: Any = None) -> None:
        super().__init__(model_or_config)
        full = self.config.num_hidden_layers
        self.depths = tuple(sorted(set(n_layers))) if n_layers is not None else tuple(range(1, full + 1))
        if not self.depths or not all(1 <= n <= full for n in self.depths):
            raise ValueError(f"depth-only: n_layers must be non-empty and lie in 1..{full}; got {n_layers!r}")
        self._counts: dict[int, int] = {}

    def count(self, subnet: subnas.SubNetwork) -> int:
        # Bins call count() on every candidate; with a handful of members, remember them all.
        depth = self._depth(subnet)
        if depth not in self._counts:
            self._counts[depth] = super().count(subnet)
        return self._counts[depth]

    def _depth(self, subnet: subnas.SubNetwork) -> int:
        return subnet.n_layers if subnet.n_layers is not None else self.config.num_hidden_layers

    def sample(self, rng: random.Random) -> subnas.SubNetwork:
        return subnas.SubNetwork(n_layers=rng.choice(self.depths))

    def mutate(self, subnet: subnas.SubNetwork, rng: random.Random) -> subnas.SubNetwork:
        # The only dimension is l, so a mutation always changes it (paper §2.2).
        others = [n for n in self.depths if n != self._depth(subnet)]
        return subnas.SubNetwork(n_layers=rng.choice(others or list(self.depths)))

    def crossover(self, a: subnas.SubNetwork, b: subnas.SubNetwork, rng: random.Random) -> subnas.SubNetwork:
        return a if rng.random() < 0.5 else b

    def suggest(self, trial: optuna.Trial) -> subnas.SubNetwork:
        suggested = subnas.SubNetwork(n_layers=trial.suggest_categorical("n_layers", list(self.depths)))
        # A sampler that breeds whole sub-networks (subnas' evolution) hands its choice over here.
        return self.bred(trial) or suggested

    def encode(self, subnet: subnas.SubNetwork) -> dict[str, Any]:
        # The params suggest() records for a member, so the evolution sampler can answer them.
        return {"n_layers": self._depth(subnet)}

    def size(self) -> int:
        return len(self.depths)

    def bounds(self) -> tuple[int, int]:
        return (self.count(subnas.SubNetwork(n_layers=self.depths[0])),
                self.count(subnas.SubNetwork(n_layers=self.depths[-1])))

    def repair(self, subnet: subnas.SubNetwork, bin: subnas.ParameterBin,
               rng: random.Random) -> subnas.SubNetwork | None:
        # Few members: try them all and keep one inside the bin.
        inside = [n for n in self.depths if self.count(subnas.SubNetwork(n_layers=n)) in bin]
        return subnas.SubNetwork(n_layers=rng.choice(inside)) if inside else None


@subnas.hookimpl
def register_search_spaces(register: Any) -> None:
    register("depth-only", DepthOnlySpace)
