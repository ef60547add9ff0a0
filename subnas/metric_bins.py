"""Bins in any metric (``subnas search --bin-metric flops|latency|...``): `MetricBin` and `MetricBinnedSpace`.

A parameter bin (`subnas.bins.ParameterBin`) is what the spaces' bin-constrained operators know. A
bin of FLOPs per token, bytes or milliseconds reuses them through `MetricBinnedSpace`, a view of a
space whose ``count`` is the metric: the same bounded rejection, then a repair, then the fallback,
the same infeasible-bin error and the same seeding, so `BinEvolutionSampler` and the search driver
run unchanged. The repair is the space's own parameter repair aimed at the parameter count the
metric predicts (a secant step: every built-in cost grows with the parameters), checked and
retried against the metric itself.

Measured metrics are noisy. A candidate is in a latency bin when the **median** of its timed
repeats lies inside; its spread is recorded but does not move the edge. The measurement is cached
per architecture and machine, so within a search (and on resume) a candidate straddling an edge is
judged once and the same way every time: it never drifts in and out of its bin. Give bins wider
than a second measurement's distance from the first, so that membership means something on another
run of the same machine: that is more than one measurement's own spread (``LatencyResult.spread``)
— on a shared 2-core VM one architecture timed five times in minutes spread by ~20%
(``benchmarks/latency_noise.py`` measures a machine).

Example:
    >>> MetricBin.parse("100M-150M", "flops")
    MetricBin(lo=100000000, hi=150000000, metric='flops')
    >>> str(MetricBin.parse("20ms-35.5ms", "latency"))
    '20-35.5 (latency)'
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from typing import Any

from subnas.bins import ParameterBin, constrain, parse_count
from subnas.subnet import SubNetwork


@dataclass(frozen=True)
class MetricBin(ParameterBin):
    """Values ``lo`` to ``hi`` (inclusive) of the metric ``metric``; floats allowed (milliseconds)."""

    metric: str = "params"

    @classmethod
    def parse(cls, text: str, metric: str = "params") -> MetricBin:  # type: ignore[override]
        """``"100M-150M"`` (K/M/B suffixes), ``"20-35.5"`` or with a unit (``"20ms-35ms"``)."""
        parts = re.split(r"\s*(?:\.\.|–|-(?=\s*[0-9]))\s*", text.strip())
        if len(parts) != 2:
            raise ValueError(f"cannot read a {metric} bin from {text!r}; write 'lo-hi', e.g. 100M-150M or 20ms-35ms")

        def value(part: str) -> float:
            part = re.sub(r"\s*(ms|s|bytes|flops?)\s*$", "", part, flags=re.IGNORECASE)
            if re.fullmatch(r"[0-9]*\.[0-9]+|[0-9]+\.[0-9]*", part):
                return float(part)
            return parse_count(part)

        return cls(value(parts[0]), value(parts[1]), metric)  # type: ignore[arg-type]

    def __contains__(self, value: object) -> bool:
        return isinstance(value, (int, float)) and self.lo <= value <= self.hi

    def distance(self, value: float) -> float:  # type: ignore[override]
        return max(self.lo - value, value - self.hi, 0)

    def __str__(self) -> str:
        if self.metric == "params":
            return ParameterBin.__str__(self)
        return f"{self.lo:g}-{self.hi:g} ({self.metric})"


class MetricBinnedSpace:
    """``space`` seen through ``metric``: ``count`` is the metric, bins are `MetricBin`s.

    Everything else (``suggest``, ``encode``, ``config``, ``order``, ...) is the space's own.

    Args:
        space: a `subnas.interfaces.SearchSpace`.
        metric: a `subnas.interfaces.Metric` (called on a sub-network).
        name: the metric's registered name (for messages).
        probes: random members sampled, beside the one-shot grid, to estimate the metric's bounds.
    """

    def __init__(self, space: Any, metric: Any, name: str, *, probes: int = 32) -> None:
        self.space, self.metric, self.metric_name = space, metric, name
        self._values: dict[str, float] = {}
        self._probes = probes
        self._bounds: tuple[float, float] | None = None

    def __getattr__(self, name: str) -> Any:  # everything the view does not change
        return getattr(self.space, name)

    def count(self, subnet: SubNetwork) -> float:
        """The metric's value (cached per sub-network: a measured metric is judged once)."""
        key = subnet.key(self.space.config)
        if key not in self._values:
            value = self.metric(subnet)
            self._values[key] = int(value) if float(value).is_integer() else float(value)
        return self._values[key]

    def bounds(self) -> tuple[float, float]:
        """The full model's value (every built-in cost is largest there) and the smallest value
        among the one-shot grid and ``probes`` random members (an estimate from above)."""
        if self._bounds is None:
            from subnas.samplers._mo_evolution import one_shot_grid

            rng = random.Random(0)
            members = one_shot_grid(self.space, strata=8, per_stratum=1)
            members += [self.space.sample(rng) for _ in range(self._probes)]
            values = [self.count(s) for s in members] + [self.count(SubNetwork())]
            self._bounds = (min(values), max(values))
        return self._bounds

    def repair(self, subnet: SubNetwork, bin: MetricBin, rng: random.Random) -> SubNetwork | None:
        """The space's parameter repair aimed where the metric says, up to four secant steps."""
        current = subnet
        target = (bin.lo + bin.hi) / 2
        for _ in range(4):
            value = self.count(current)
            if value in bin:
                return current
            params = self.space.count(current)
            aim = round(params * target / value) if value else params
            width = max(1, round(aim * 0.02))
            fixed = self.space.repair(current, ParameterBin(max(0, aim - width), aim + width), rng)
            if fixed is None or fixed.key(self.space.config) == current.key(self.space.config):
                return None
            current = fixed
        return current if self.count(current) in bin else None

    def _in(self, propose: Any, bin: MetricBin, rng: random.Random, max_tries: int) -> SubNetwork | None:
        return constrain(propose, self.count, lambda s: self.repair(s, bin, rng), bin, max_tries)  # type: ignore[arg-type]

    def sample_in(self, bin: MetricBin, rng: random.Random, *, max_tries: int = 100) -> SubNetwork | None:
        return self._in(lambda: self.space.sample(rng), bin, rng, max_tries)

    def mutate_in(self, subnet: SubNetwork, bin: MetricBin, rng: random.Random, *,
                  max_tries: int = 100) -> SubNetwork | None:
        return self._in(lambda: self.space.mutate(subnet, rng), bin, rng, max_tries)

    def crossover_in(self, a: SubNetwork, b: SubNetwork, bin: MetricBin, rng: random.Random, *,
                     max_tries: int = 100) -> SubNetwork | None:
        return self._in(lambda: self.space.crossover(a, b, rng), bin, rng, max_tries)

    def one_shot(self, bin: MetricBin) -> list[SubNetwork]:
        """The one-shot prunes whose metric lies in ``bin``, plus grid members repaired into it."""
        from subnas.samplers._mo_evolution import one_shot_grid

        grid = one_shot_grid(self.space, strata=12, per_stratum=3)
        inside = [s for s in grid if self.count(s) in bin]
        if len(inside) < 3:  # a narrow bin: bring the nearest prunes in
            rng = random.Random(0)
            for s in sorted(grid, key=lambda s: bin.distance(self.count(s)))[:3]:
                fixed = self.repair(s, bin, rng)
                if fixed is not None and all(fixed.key(self.space.config) != x.key(self.space.config) for x in inside):
                    inside.append(fixed)
        return inside
