"""The extension points: `SearchSpace`, `Sampler`, `Fitness`, `Extractor`, `Metric`, `TrainingStrategy`.

Plugins register implementations through the hooks in `subnas.hookspecs`; users get them by name
with the lookups of `subnas.lookups` (`get_search_space`, `get_sampler`, `get_fitness`,
`get_extractor`, `get_metric`, `get_training_strategy`, re-exported as ``subnas.get_*``). The
contracts sit at the bottom of the house: this module imports only the core types they speak, none
of which imports it back (docs/design.md#architecture). The search driver hands every plugin it
builds one `SearchContext`. Each interface declares everything the search driver
(`subnas.search_driver`) and the benchmark rely on; nothing reads an undeclared attribute.
Everything here speaks `SubNetwork`, the one description of a sub-network.
"""

from __future__ import annotations

import math
import os
import random
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Callable, ClassVar, Literal, Protocol, runtime_checkable

from subnas.bins import ParameterBin, constrain
from subnas.config import SubnasConfig
from subnas.families import load_config
from subnas.params import count_parameters
from subnas.subnet import SubNetwork, SubNetworkError

if TYPE_CHECKING:
    import optuna
    from optuna.samplers import BaseSampler


class RankedUnits(Protocol):
    """What a search reads of a space's importance order: where it came from.

    `subnas.spaces.UnitOrder` is the implementation (every unit of a model, ranked); the search
    driver, Pareto search and supernet training only record its ``source`` and resume only with the
    same one. The contract names that one property instead of importing `UnitOrder` because the
    spaces package implements these contracts: importing it here, even for the type checker only,
    would lift the contracts above their own implementations and close a circle.
    """

    @property
    def source(self) -> str:
        """What the order was computed from (``"natural"`` for the identity)."""
        ...


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

    #: Which units "the first n" means, when the space ranks them (`subnas.spaces.UnitOrder`); its
    #: ``source`` is recorded with a search, which resumes only with the same order. None: natural.
    order: RankedUnits | None = None

    #: Whether the space is built with an importance order (``order=``, a `subnas.spaces.UnitOrder`)
    #: and a vocabulary order (``vocab_order=``); the search driver computes them only for such spaces.
    takes_order: ClassVar[bool] = False

    #: The vocabulary sizes the space chooses among (empty: the full vocabulary only). With more
    #: than one, per-token perplexity is not comparable across members, so the search ranks by
    #: bits per byte.
    vocab_choices: tuple[Any, ...] = ()

    def __init__(self, model_or_config: Any) -> None:
        """Subclasses take their per-dimension choices as keyword arguments after ``model_or_config``."""
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
        sampler = getattr(getattr(trial, "study", None), "sampler", None)
        return sampler.genome_for(trial) if isinstance(sampler, BreedsSubNetworks) else None

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
        return constrain(propose, self.count, lambda s: self.repair(s, bin, rng), bin, max_tries)


@runtime_checkable
class BreedsSubNetworks(Protocol):
    """An Optuna sampler that proposes whole sub-networks (`subnas.BinEvolutionSampler`): it hands
    the candidate of a trial to `SearchSpace.suggest` through ``genome_for``."""

    def genome_for(self, trial: Any) -> SubNetwork | None: ...


class Sampler(ABC):
    """A search strategy: makes the Optuna sampler that drives one bin's study.

    Every sampler, built-in or from a plugin, is called the same way, ``sampler(space, bin,
    seed=..., **options)``; one that needs neither the space nor the bin ignores them (Optuna's own
    samplers, `OptunaSampler`). Plugins register an instance; a plain ``**options -> BaseSampler``
    callable (an Optuna sampler class, say) is wrapped in `OptunaSampler` when looked up (`as_sampler`).

    Example:
        >>> import subnas
        >>> type(subnas.get_sampler("random", seed=0)).__name__
        'RandomSampler'
    """

    #: Whether the strategy proceeds in generations, so a budget can be given in ``epochs``.
    takes_epochs: ClassVar[bool] = False

    @abstractmethod
    def __call__(self, space: SearchSpace | None, bin: ParameterBin | None, *, seed: int | None = None,
                 **options: Any) -> BaseSampler:
        """A fresh Optuna sampler for one bin of ``space``, configured by ``options``."""

    def is_finished(self, study: optuna.Study) -> bool:
        """Whether the sampler's own budget (``epochs``) is used up in ``study`` (default: never;
        the driver also stops at its trial budget)."""
        return False

    def stored_seed(self, study: optuna.Study) -> int | None:
        """The seed a stored ``study`` was started with, when the strategy needs every run of a
        study to share it (a resume with another seed is refused). Default: None (not recorded)."""
        return None


class OptunaSampler(Sampler):
    """Any ``**options -> optuna.samplers.BaseSampler`` factory as a `Sampler` that needs neither the
    space nor the bin (``OptunaSampler(optuna.samplers.TPESampler)``)."""

    def __init__(self, factory: Callable[..., BaseSampler]) -> None:
        self.factory = factory

    def __call__(self, space: SearchSpace | None = None, bin: ParameterBin | None = None, *,
                 seed: int | None = None, **options: Any) -> BaseSampler:
        return self.factory(**({"seed": seed} if seed is not None else {}), **options)

    def __repr__(self) -> str:
        return f"OptunaSampler({getattr(self.factory, '__qualname__', self.factory)!r})"


class Fitness(ABC):
    """Scores a sub-network; ``direction`` says whether lower ("minimize", e.g. perplexity) or
    higher is better, and is passed to the Optuna study."""

    direction: ClassVar[Literal["minimize", "maximize"]] = "minimize"

    #: Which data the scores come from (e.g. ``"default:search"``), written beside every result.
    data: str = ""

    #: Which data `confirm` re-measures on (written beside confirmed results).
    confirm_data: str = ""

    #: What the score is (e.g. ``"perplexity"``, ``"bits_per_byte"``), written beside results; None: unnamed.
    metric: str | None = None

    #: The model the scores are for, when the fitness holds it without weights (a recorded table):
    #: the benchmark builds the search space from it and refuses a space of another architecture.
    #: None: the fitness scores the supernet it was given.
    config: SubnasConfig | None = None

    #: Whether the fitness runs the model's weights. False (a recorded table, a formula) lets the
    #: benchmark search a bare config, with no weights loaded.
    needs_weights: ClassVar[bool] = True

    #: Other numbers the last call measured (e.g. ``{"perplexity": 31.2, "bits_per_byte": 1.1}``),
    #: stored on the candidate's trial.
    last_metrics: Mapping[str, float | None] = MappingProxyType({})

    #: Seconds the last call stood for when it did not really run them (a replayed measurement);
    #: the benchmark adds them to a run's time. 0 for a fitness that does the work.
    last_cost: float = 0.0

    #: What the last call looked up (a recorded table's row), for the benchmark's trial log; None otherwise.
    last_lookup: Mapping[str, Any] | None = None

    @classmethod
    def from_context(cls, context: SearchContext, **options: Any) -> Fitness:
        """The fitness for a search described by ``context`` (`make_fitness`), ``options`` winning.
        Default: ``cls(supernet=context.supernet, **options)``; override to read more of it."""
        return cls(supernet=context.supernet, **options)  # type: ignore[call-arg]

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

    def trivial_baseline(self) -> tuple[float, str] | None:
        """A score any useful sub-network beats, and what it is in words (for perplexity: a unigram
        model of the scored text), or None (the default: none known). A search whose winner does
        not beat it says so in its results, instead of handing back a useless model silently."""
        return None


@dataclass(frozen=True)
class ExtractResult:
    """Where and how an `Extractor` wrote a sub-network: what `subnas extract` reports."""

    path: str
    format: str  # "stock" or "subnas"
    architecture: str  # e.g. "LlamaForCausalLM", "MistralForCausalLM" or "SubnasForCausalLM"
    num_parameters: int  # the sub-network's own count (`subnas.count_parameters`)
    reason: str | None  # why the flexible format was written, if it was
    exported_parameters: int = 0  # numel of the written model: more than num_parameters when padded
    padding: dict[str, Any] | None = None  # per-layer true widths and the padded stock shape, if padded
    note: str | None = None  # why a stock export is not the family's own unpadded class, if it isn't
    how_to_load: str = ""


class Extractor(ABC):
    """Turns a sub-network of a supernet into a standalone model on disk.

    `subnas extract --extractor NAME`, training's student extraction and the demo all go through
    the registered extractor (the built-in ``transformers`` one unless told otherwise), so a
    plugin's extractor serves every command that writes a model.
    """

    @abstractmethod
    def extract(self, supernet: Any, subnet: SubNetwork | None, out_dir: str | os.PathLike[str], *,
                overwrite: bool = False) -> ExtractResult:
        """Write the model for ``subnet`` (None: the whole model) into ``out_dir``, replacing a
        non-empty folder only with ``overwrite``, and say where and how it was written."""


@dataclass(frozen=True)
class SearchContext:
    """What the search driver knows about a run, handed to every fitness and metric it builds.

    A plugin takes what it needs from here instead of the driver special-casing plugins by name:
    `Fitness.from_context` and `Metric` read the text, sequence length, device and so on.

    Attributes:
        supernet: the `subnas.Supernet` searched (None when only a config is searched).
        config: the full model's `SubnasConfig`.
        data: the text fitness functions score on (never the validation split).
        seq_len: tokens per sequence (perplexity's sequences, FLOPs' and latency's prompt length).
        num_seqs: sequences a fitness scores each candidate on.
        device: where measurements run (``"cpu"``, ``"cuda"``).
        dtype: the dtype measured latency and byte counts assume.
        batch: sequences per latency measurement.
        pruning: whether a pruner judges the fitness's running values (about four reports wanted).
        confirm: how many best candidates are re-measured at the end (0: none, so no text for it).
        vocab_choices: the vocabulary sizes the space chooses among (more than one: per-token
            perplexity is not comparable, rank by bits per byte).
    """

    supernet: Any = None
    config: SubnasConfig | None = None
    data: str = "default:search"
    seq_len: int = 256
    num_seqs: int = 16
    device: str = "cpu"
    dtype: str = "float32"
    batch: int = 1
    pruning: bool = False
    confirm: int = 4
    vocab_choices: tuple[Any, ...] = field(default_factory=tuple)


class Metric(ABC):
    """A cost of a sub-network (parameters, FLOPs, bytes, latency): an objective or a bin's unit.

    Built as ``Metric(model_or_config, context, **options)``; called on a sub-network (None: the
    full model). ``exact`` metrics are functions of the architecture; measured ones (latency) are
    noisy, which bins and fronts take into account (docs/search.md).

    Example:
        >>> import subnas
        >>> cfg = subnas.SubnasConfig(vocab_size=100, hidden_size=32, num_hidden_layers=2, intermediate_size=64)
        >>> subnas.get_metric("params", cfg)(None) == subnas.count_parameters(cfg)
        True
    """

    #: Short name of the unit, for axes and messages (``"parameters"``, ``"FLOPs/token"``, ``"ms"``).
    unit: ClassVar[str] = ""
    #: Lower is better for every cost; a metric to maximise (throughput) says so.
    direction: ClassVar[Literal["minimize", "maximize"]] = "minimize"
    #: Whether the value is exact (from the architecture) or measured (noisy, cached per architecture).
    exact: ClassVar[bool] = True
    #: Whether measuring needs the supernet's weights (no built-in does: latency times random weights).
    needs_weights: ClassVar[bool] = False

    def __init__(self, model_or_config: Any, context: SearchContext | None = None) -> None:
        self.source = model_or_config
        self.config: SubnasConfig = load_config(model_or_config)
        self.context = context or SearchContext(config=self.config)

    @abstractmethod
    def __call__(self, subnet: SubNetwork | None) -> float:
        """The cost of ``subnet`` (None: the full model)."""

    def describe(self) -> str:
        """What the number is, for results files (e.g. ``"FLOPs per token at 256 tokens"``)."""
        return self.unit

    def last_spread(self) -> float | None:
        """How noisy the last value was, relative to it (a measured metric: its repeats'
        interquartile range over their median); None for an exact metric. A search records it
        beside the value and warns when a front's points are closer than their noise."""
        return None


class SubNetworkDraw(Protocol):
    """What a `TrainingStrategy` draws its sub-networks from: one search space inside one size range
    (`subnas.training.SizeRange` is the built-in one)."""

    def largest(self) -> SubNetwork:
        """The largest member of the space inside the range."""

    def smallest(self) -> SubNetwork:
        """The smallest member of the space inside the range."""

    def random(self, rng: random.Random) -> SubNetwork:
        """A random member of the space inside the range."""


class TrainingStrategy(ABC):
    """Which sub-networks one step of supernet training runs (``subnas train-supernet --strategy``).

    Each step of `subnas.training.train_supernet` asks the strategy for a list of sub-networks, runs
    each of them in place in the supernet on the step's batch and sums their losses before one
    optimizer step. ``sample`` must be a function of its arguments (the rng is seeded from the run's
    seed and the step), so that a resumed run draws what the uninterrupted one drew.

    Example:
        >>> import random, subnas
        >>> strategy = subnas.get_training_strategy("sandwich", random_samples=1)
        >>> class Draw:
        ...     def largest(self): return subnas.SubNetwork()
        ...     def smallest(self): return subnas.SubNetwork(n_layers=1)
        ...     def random(self, rng): return subnas.SubNetwork(n_layers=rng.randint(1, 3))
        >>> [s.n_layers for s in strategy.sample(Draw(), step=1, total=10, rng=random.Random(0))]
        [None, 1, 2]
    """

    @abstractmethod
    def sample(self, draw: SubNetworkDraw, *, step: int, total: int, rng: random.Random) -> list[SubNetwork]:
        """The sub-networks step ``step`` (1-based, of ``total``) trains; none twice in one list."""
