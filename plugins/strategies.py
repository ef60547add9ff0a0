"""Built-in plugin: the five supernet-training strategies (whittle's ``training_strategies``).

Each strategy says which sub-networks one step of `subnas.training.train_supernet` trains; the
step sums their losses before one optimizer step. All draw from a `subnas.interfaces.SubNetworkDraw`
(the search space inside the run's size range), with an rng seeded from the run's seed and the step,
so a resumed run draws exactly what the uninterrupted one drew.
"""

from __future__ import annotations

import random
from typing import Any

from subnas.hookspecs import hookimpl
from subnas.interfaces import SubNetworkDraw, TrainingStrategy
from subnas.subnet import SubNetwork


def _check_samples(random_samples: int) -> int:
    if isinstance(random_samples, bool) or not isinstance(random_samples, int) or random_samples < 0:
        raise ValueError(f"random_samples={random_samples!r} is not valid: give a whole number >= 0 (random "
                         "sub-networks per step)")
    return random_samples


def _distinct(subnets: list[SubNetwork]) -> list[SubNetwork]:
    out: list[SubNetwork] = []
    for s in subnets:
        if s not in out:
            out.append(s)
    return out


class StandardStrategy(TrainingStrategy):
    """Trains the largest sub-network only, every step: plain training (or distillation) of the
    supernet itself. The baseline the weight-sharing strategies are measured against: smaller
    sub-networks improve only as far as the shared weights they keep happen to."""

    def sample(self, draw: SubNetworkDraw, *, step: int, total: int, rng: random.Random) -> list[SubNetwork]:
        return [draw.largest()]


class SandwichStrategy(TrainingStrategy):
    """Trains the largest, the smallest and ``random_samples`` random sub-networks every step (the
    sandwich rule of slimmable networks, OFA and BigNAS). The two ends bound the range, so every
    member in between is shaped from both sides, and the largest is trained every step — which
    keeps the full model from being forgotten and gives in-place distillation its teacher."""

    def __init__(self, random_samples: int = 2) -> None:
        self.random_samples = _check_samples(random_samples)

    def sample(self, draw: SubNetworkDraw, *, step: int, total: int, rng: random.Random) -> list[SubNetwork]:
        return _distinct([draw.largest(), draw.smallest(), *(draw.random(rng) for _ in range(self.random_samples))])


class RandomStrategy(TrainingStrategy):
    """Trains ``random_samples`` sub-networks drawn uniformly from the space inside the size range
    every step (single-path one-shot NAS). The cheapest way to reach every size, but the largest is
    trained only when drawn, so the full model can drift from its pretrained self."""

    def __init__(self, random_samples: int = 1) -> None:
        self.random_samples = _check_samples(random_samples) or 1

    def sample(self, draw: SubNetworkDraw, *, step: int, total: int, rng: random.Random) -> list[SubNetwork]:
        return _distinct([draw.random(rng) for _ in range(self.random_samples)])


class RandomLinearStrategy(TrainingStrategy):
    """Trains ``random_samples`` random sub-networks with probability ``p`` and the largest with
    probability ``1 − p``, ``p`` rising linearly from 0 at the first step to 1 at the last (Klein
    et al., structural pruning via NAS; Bender et al.). Early steps keep the supernet intact while
    the sub-networks are still poor; later steps spend the budget on the sub-networks."""

    def __init__(self, random_samples: int = 1) -> None:
        self.random_samples = _check_samples(random_samples) or 1

    def sample(self, draw: SubNetworkDraw, *, step: int, total: int, rng: random.Random) -> list[SubNetwork]:
        p = (step - 1) / max(1, total - 1)
        if rng.random() < p:
            return _distinct([draw.random(rng) for _ in range(self.random_samples)])
        return [draw.largest()]


class ATSStrategy(TrainingStrategy):
    """Alternates: odd steps train ``random_samples`` random sub-networks, even steps the largest
    (Mohtashami et al., masked training with partial gradients). Half the steps keep the full
    model on track at half the cost of a sandwich step, the other half train the sizes."""

    def __init__(self, random_samples: int = 1) -> None:
        self.random_samples = _check_samples(random_samples) or 1

    def sample(self, draw: SubNetworkDraw, *, step: int, total: int, rng: random.Random) -> list[SubNetwork]:
        if step % 2:
            return _distinct([draw.random(rng) for _ in range(self.random_samples)])
        return [draw.largest()]


@hookimpl
def register_training_strategies(register: Any) -> None:
    register("standard", StandardStrategy)
    register("sandwich", SandwichStrategy)
    register("random", RandomStrategy)
    register("random-linear", RandomLinearStrategy)
    register("ats", ATSStrategy)
