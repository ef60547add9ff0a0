"""Parameter bins (paper §2.2): every candidate of a bin-constrained search lies in [S_min, S_max].

The paper's CONSTRAIN (Algorithm 1, line 3) is "resample/repair until Params(x) is in [L, U]". Here
it is bounded: at most ``max_tries`` proposals (fresh samples, mutants or children), then one repair
of the closest proposal, and `BinConstrainedSpace` falls back to a known member when both fail,
so no loop is unbounded. A bin the space cannot reach raises `InfeasibleBinError` up front.

Example:
    >>> ParameterBin.parse("135M±5%")
    ParameterBin(lo=128250000, hi=141750000)
    >>> str(ParameterBin.around(405_334_016))  # Pythia-410M, the paper's bin-1
    '385.07M-425.60M'
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

if TYPE_CHECKING:
    from subnas.subnet import SubNetwork

T = TypeVar("T")
_UNITS = {"": 1, "K": 10**3, "M": 10**6, "B": 10**9, "G": 10**9, "T": 10**12}
_COUNT = r"\s*([0-9][0-9_,]*(?:\.[0-9]+)?(?:e[0-9]+)?)\s*([KMBGT]?)\s*"


class InfeasibleBinError(ValueError):
    """No member of the search space has a parameter count inside the bin."""

    def __init__(self, message: str, *, trial_id: int | None = None) -> None:
        super().__init__(message)
        self.trial_id = trial_id  # the trial that was being set up when the sampler found out, if any


class BinExhaustedError(InfeasibleBinError):
    """Every member of the bin that the space's operators reach has been evaluated: nothing new to try."""


class SearchFinished(Exception):
    """Raised by a sampler instead of proposing a trial once its budget (epochs) is used up."""

    def __init__(self, trial_id: int | None = None) -> None:
        super().__init__("the search's epochs are used up")
        self.trial_id = trial_id


def parse_count(text: str) -> int:
    """``"135M"`` -> 135000000; accepts K, M, B (or G), T suffixes, commas, underscores and ``e``."""
    m = re.fullmatch(_COUNT, text, flags=re.IGNORECASE)
    if not m:
        raise ValueError(f"cannot read a parameter count from {text!r}; write e.g. 135M, 1.06B or 134515008")
    return round(float(m.group(1).replace(",", "").replace("_", "")) * _UNITS[m.group(2).upper()])


def _fmt(n: int) -> str:
    for unit, scale in (("T", 10**12), ("B", 10**9), ("M", 10**6), ("K", 10**3)):
        if n >= scale:
            return f"{n / scale:.2f}{unit}"
    return str(n)


@dataclass(frozen=True)
class ParameterBin:
    """Parameter counts ``lo`` to ``hi``, both inclusive."""

    lo: int
    hi: int

    def __post_init__(self) -> None:
        if not 0 <= self.lo <= self.hi:
            raise ValueError(f"a parameter bin needs 0 <= lo <= hi; got lo={self.lo:,}, hi={self.hi:,}")

    @classmethod
    def around(cls, n: int, pct: float = 5.0) -> ParameterBin:
        """``pct`` percent either side of ``n`` (the paper: 5% around Pythia-410M, 1B and 2.8B)."""
        return cls(round(n * (1 - pct / 100)), round(n * (1 + pct / 100)))

    @classmethod
    def parse(cls, text: str) -> ParameterBin:
        """Read ``"30M-40M"``, ``"135M±5%"`` (or ``+-``, ``+/-``) or ``"385000000-426000000"``."""
        around = re.fullmatch(rf"{_COUNT}(?:±|\+-|\+/-)\s*([0-9.]+)\s*%\s*", text, flags=re.IGNORECASE)
        if around:
            return cls.around(parse_count(around.group(1) + around.group(2)), float(around.group(3)))
        parts = re.split(r"\s*(?:-|–|\.\.)\s*", text.strip())
        if len(parts) != 2:
            raise ValueError(f"cannot read a parameter bin from {text!r}; write 'lo-hi' (e.g. 30M-40M) or "
                             f"'n±pct%' (e.g. 135M±5%)")
        return cls(parse_count(parts[0]), parse_count(parts[1]))

    @classmethod
    def coerce(cls, spec: Any) -> ParameterBin:
        """The one conversion of what callers pass as a bin: a `ParameterBin` (or subclass) as it
        is, ``(lo, hi)``, or text `parse` reads.

        Example:
            >>> ParameterBin.coerce("30M-40M") == ParameterBin.coerce((30_000_000, 40_000_000))
            True
        """
        if isinstance(spec, ParameterBin):
            return spec
        if isinstance(spec, str):
            return cls.parse(spec)
        lo, hi = spec
        return cls(int(lo), int(hi))

    def __contains__(self, count: object) -> bool:
        return isinstance(count, int) and self.lo <= count <= self.hi

    def distance(self, count: int) -> int:
        """0 inside the bin, else how many parameters ``count`` lies outside it."""
        return max(self.lo - count, count - self.hi, 0)

    def __str__(self) -> str:
        return f"{_fmt(self.lo)}-{_fmt(self.hi)}"


def constrain(propose: Callable[[], T], count: Callable[[T], int], repair: Callable[[T], T | None] | None,
              bin: ParameterBin, max_tries: int) -> T | None:
    """Up to ``max_tries`` proposals until one lies in ``bin``; else repair the closest; else None."""
    best: T | None = None
    best_distance = 0
    for _ in range(max_tries):
        candidate = propose()
        distance = bin.distance(count(candidate))
        if distance == 0:
            return candidate
        if best is None or distance < best_distance:
            best, best_distance = candidate, distance
    if best is None or repair is None:
        return None
    fixed = repair(best)
    return fixed if fixed is not None and count(fixed) in bin else None


class BinnableSpace(Protocol):
    """What bins ask of a search space: its size range and its bin-constrained operators.

    `subnas.interfaces.SearchSpace` implements it (its ``*_in`` operators are built on `constrain`
    above). Bins name only these four methods rather than the whole contract because the contract
    speaks bins: typing against `SearchSpace` here would make bins and interfaces import each other
    (even if only for the type checker), and the bins would sit on a floor above the contracts that
    use them.
    """

    def bounds(self) -> tuple[int, int]: ...

    def sample_in(self, bin: ParameterBin, rng: random.Random, *, max_tries: int = 100) -> SubNetwork | None: ...

    def mutate_in(self, subnet: SubNetwork, bin: ParameterBin, rng: random.Random, *,
                  max_tries: int = 100) -> SubNetwork | None: ...

    def crossover_in(self, a: SubNetwork, b: SubNetwork, bin: ParameterBin, rng: random.Random, *,
                     max_tries: int = 100) -> SubNetwork | None: ...


def check_in_range(space: BinnableSpace, bin: ParameterBin) -> str:
    """Raise `InfeasibleBinError` when ``bin`` lies wholly outside the sizes ``space`` produces (the
    one reachability check of bins; `BinConstrainedSpace` then also looks for a member inside).
    Returns the space's range in words, for later messages."""
    lo, hi = space.bounds()
    name = getattr(space, "name", None) or type(space).__name__
    what = f"the {name} space produces {lo:,} (smallest) to {hi:,} (largest) parameters"
    if bin.hi < lo or bin.lo > hi:
        raise InfeasibleBinError(f"bin {bin} ({bin.lo:,} to {bin.hi:,} parameters) is unreachable: {what}")
    return what


class BinConstrainedSpace:
    """A search space restricted to one parameter bin: what Algorithm 1 searches per bin.

    Construction checks the bin up front: outside the space's bounds, or no member found by
    ``witness_tries`` bounded sample-and-repair rounds, raises `InfeasibleBinError` naming the
    smallest and largest counts the space produces. Operators never return a candidate outside the
    bin: when bounded rejection and repair both fail they fall back (sample: a known member;
    mutate: the parent; crossover: a parent) and count it in ``fallbacks``.

    Example:
        >>> import random
        >>> from subnas import SubnasConfig, get_search_space
        >>> space = get_search_space("coarse-uniform", SubnasConfig(num_hidden_layers=8))
        >>> constrained = BinConstrainedSpace(space, ParameterBin.around(space.bounds()[1] // 2, 10))
        >>> space.count(constrained.sample(random.Random(0))) in constrained.bin
        True
    """

    def __init__(self, space: BinnableSpace, bin: ParameterBin, *, max_tries: int = 100, witness_tries: int = 3,
                 seed: int = 0) -> None:
        self.space, self.bin, self.max_tries = space, bin, max_tries
        self.fallbacks = 0
        what = check_in_range(space, bin)
        rng = random.Random(seed)
        for _ in range(witness_tries):
            witness = space.sample_in(bin, rng, max_tries=max_tries)
            if witness is not None:
                self.witness = witness
                return
        raise InfeasibleBinError(
            f"found no sub-network in bin {bin} ({bin.lo:,} to {bin.hi:,} parameters) after {witness_tries} rounds "
            f"of {max_tries} samples and a repair; {what}. The bin may fall between neighbouring sizes: "
            f"widen it or give finer choices")

    def _or(self, candidate: SubNetwork | None, fallback: SubNetwork) -> SubNetwork:
        if candidate is None:
            self.fallbacks += 1
            return fallback
        return candidate

    def sample(self, rng: random.Random) -> SubNetwork:
        """A random member inside the bin."""
        return self._or(self.space.sample_in(self.bin, rng, max_tries=self.max_tries), self.witness)

    def mutate(self, subnet: SubNetwork, rng: random.Random) -> SubNetwork:
        """A mutant of ``subnet`` inside the bin: one dimension changed when rejection finds one, more
        when it took a repair; the parent itself if neither worked."""
        return self._or(self.space.mutate_in(subnet, self.bin, rng, max_tries=self.max_tries), subnet)

    def crossover(self, a: SubNetwork, b: SubNetwork, rng: random.Random) -> SubNetwork:
        """A child of ``a`` and ``b`` inside the bin (a parent if none is found)."""
        child = self.space.crossover_in(a, b, self.bin, rng, max_tries=self.max_tries)
        return self._or(child, a if rng.random() < 0.5 else b)
