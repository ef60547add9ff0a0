"""The paper's four search spaces (§2.1) as one implementation with two switches.

* ``fine``: coarse spaces keep the *first* n units of every component; fine-grained spaces keep an
  arbitrary subset of indices (layers, embedding channels, query groups, heads, rotary pairs and
  pass-through head dims, MLP neurons), every layer its own (embedding channels: one set).
* ``layerwise``: uniform spaces use one (h, g, hs, d) for every layer; layer-wise spaces give every
  kept layer its own.

The plugin module ``subnas_plugins.spaces`` registers the four combinations by name. Internally a
candidate is a `subnas.spaces._arch.Arch`: its sizes, plus (fine-grained) its index lists — one
per kept layer, uniform spaces included — in sampling order (natural order) or importance order,
fitted to the sizes only when a `SubNetwork` is emitted; operators, bin rejection and repair
therefore run on sizes alone, which is what makes them cheap.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import replace
from functools import cached_property
from math import comb
from typing import TYPE_CHECKING, Any, ClassVar

from subnas.spaces._arch import Arch, ArchCodec, Layer
from subnas.spaces._moves import PER_LAYER_DIMS, Choose, Moves
from subnas.bins import ParameterBin, constrain
from subnas.spaces._choices import Choices, ModelShape, SearchSpaceError, VocabChoice
from subnas.interfaces import SearchSpace
from subnas.spaces._ordering import UnitOrder
from subnas.params import count_parameters
from subnas.subnet import SubNetwork

if TYPE_CHECKING:
    import optuna


def _comb_sum(n: int, ks: tuple[int, ...]) -> int:
    """sum(comb(n, k) for k in ks), one running binomial instead of a fresh one per k (fast for n ~ 1e4)."""
    wanted, total, c = set(ks), 0, 1
    for k in range(max(ks) + 1):
        if k in wanted:
            total += c
        c = c * (n - k) // (k + 1)
    return total


class StructuredSearchSpace(Moves, SearchSpace):
    """A coarse/fine-grained, uniform/layer-wise space over (l, e, h, g, hs, d) (paper §2.1).

    Args:
        model_or_config: anything `subnas.families.load_config` accepts.
        order: which units "the first n" keeps: ``"importance"`` (the n most important, after
            calibration passes — layers by the loss of skipping each; needs a `subnas.Supernet`),
            ``"block-influence"`` (the same with layers by ShortGPT's block influence),
            ``"natural"`` (the paper's first n), or a
            `subnas.UnitOrder`. Default: importance when ``model_or_config`` is a Supernet (it has
            weights to rank), natural for a bare config. Fine-grained spaces hold arbitrary index
            sets either way; in importance order their seeds are each layer's most important
            units and their moves grow, shrink and swap units along the order (``_moves``).
        vocab_order: which tokens a pruned vocabulary keeps (`subnas.vocab.VocabOrder`); default:
            the most frequent on the calibration split when ``model_or_config`` is a Supernet with a
            tokenizer, else the first n ids. Only used with a ``vocab_size`` choice.
        **choices: per-dimension choices keyed by SubNetwork field name (``n_layers``, ``n_embd``,
            ``num_heads``, ``query_groups``, ``head_size``, ``intermediate_size``), in any form
            `subnas.spaces.parse_choices` reads; defaults are the paper's ranges with steps of
            8 (embedding) and 64 (MLP). ``vocab_size`` adds the vocabulary as a dimension (issue
            #13), e.g. ``"4k,8k,16k,32k,full"`` or ``"default"`` (those five); without it the
            space keeps the whole vocabulary, as the paper's spaces do.

    Example:
        >>> import random
        >>> from subnas import SubnasConfig, get_search_space
        >>> cfg = SubnasConfig(num_hidden_layers=4, hidden_size=64, num_attention_heads=4)
        >>> space = get_search_space("fine-layerwise", cfg, intermediate_size=range(32, 257, 32))
        >>> s = space.sample(random.Random(0))
        >>> space.contains(s), len(s.layer_indices) == s.n_layers
        (True, True)
    """

    #: Structured spaces rank their units: `subnas.search_driver` builds them with an importance order.
    takes_order: ClassVar[bool] = True
    #: Always set (the natural order when none is given); the operators read all of it.
    order: UnitOrder
    fine: ClassVar[bool] = False
    layerwise: ClassVar[bool] = False

    def __init__(self, model_or_config: Any, *, order: str | UnitOrder | None = None, vocab_order: Any = None,
                 **choices: Any) -> None:
        super().__init__(model_or_config)
        self.shape = ModelShape.of(self.config)
        vocab = choices.pop("vocab_size", None)
        self.choices = Choices.for_model(self.shape, fine=self.fine, **choices)
        self.order = resolve_order(order, model_or_config, self.config, self.name)
        # Importance order: local mutation steps and width-first repair (see `_pick`, `_repair`);
        # the natural order keeps the paper's operators exactly.
        self.local = not self.order.is_natural
        self._codec = ArchCodec(self.config, self.shape, fine=self.fine, layerwise=self.layerwise, name=self.name,
                                order=self.order)
        self._emit, self._parse = self._codec.emit, self._codec.parse
        self.vocab: VocabChoice | None = None
        if vocab is not None:
            if vocab_order is None and getattr(model_or_config, "tokenizer", None) is not None:
                from subnas.vocab import vocab_order as frequency_order

                vocab_order = frequency_order(model_or_config)
            self.vocab = VocabChoice.build(vocab, self.config, vocab_order)
            self._codec.vocab_fields = self.vocab.fields
        self._counts: dict[Any, int] = {}
        self._bounds: tuple[int, int] | None = None

    # ------------------------------------------------------------------ the SearchSpace API
    def sample(self, rng: random.Random) -> SubNetwork:
        return self._emit(self._sample_arch(rng), rng)

    def mutate(self, subnet: SubNetwork, rng: random.Random, *, choose: Choose | None = None) -> SubNetwork:
        """One move of ``subnet`` (see `moves`); ``choose(moves, rng)`` picks which (default: uniformly,
        paper §2.2) — the sampler's mutation operator passes its own (`subnas.samplers.WeightedMoves`)."""
        return self._emit(self._mutate(self._parse(subnet), rng, choose), rng)

    def moves(self, subnet: SubNetwork) -> tuple[str, ...]:
        """The mutation moves open to ``subnet``: dimension steps (``l``, ``e``, ``v``, ``h``, ``g``,
        ``hs``, ``d``), and in importance order ``swap`` (a layer) and, fine-grained, ``units``."""
        return tuple(sorted(self._moves(self._parse(subnet))))

    def crossover(self, a: SubNetwork, b: SubNetwork, rng: random.Random) -> SubNetwork:
        return self._emit(self._crossover(self._parse(a), self._parse(b), rng), rng)

    def count(self, subnet: SubNetwork) -> int:
        return self._count(self._parse(subnet))

    def sample_in(self, bin: ParameterBin, rng: random.Random, *, max_tries: int = 100) -> SubNetwork | None:
        return self._in_bin(lambda: self._sample_arch(rng), bin, rng, max_tries)

    def mutate_in(self, subnet: SubNetwork, bin: ParameterBin, rng: random.Random, *,
                  max_tries: int = 100, choose: Choose | None = None) -> SubNetwork | None:
        parent = self._parse(subnet)
        return self._in_bin(lambda: self._mutate(parent, rng, choose), bin, rng, max_tries)

    def crossover_in(self, a: SubNetwork, b: SubNetwork, bin: ParameterBin, rng: random.Random, *,
                     max_tries: int = 100) -> SubNetwork | None:
        pa, pb = self._parse(a), self._parse(b)
        return self._in_bin(lambda: self._crossover(pa, pb, rng), bin, rng, max_tries)

    def repair(self, subnet: SubNetwork, bin: ParameterBin, rng: random.Random) -> SubNetwork | None:
        arch = self._repair(self._parse(subnet), bin, rng)
        return None if arch is None else self._emit(arch, rng)

    def contains(self, subnet: SubNetwork) -> bool:
        """Whether ``subnet`` is a member: right structure, every size among the choices."""
        try:
            arch = self._parse(subnet)
        except (SearchSpaceError, ValueError):
            return False
        c = self.choices
        return (len(arch.layers) in c.n_layers and arch.embd in c.n_embd and arch.vocab in self._vocab_values()
                and all((x.heads, x.groups) in c.attention and x.head_size in c.head_size
                        and x.inter in c.intermediate_size for x in arch.layers))

    @cached_property
    def dimensions(self) -> tuple[str, ...]:
        """The paper's dimensions (l, e, h, g, hs, d) that take more than one value here; in MHA
        models g follows h, in MQA models g is always 1."""
        c = self.choices
        dims = [d for d, n in (("l", c.n_layers), ("e", c.n_embd)) if len(n) > 1]
        dims += [d for d in ("h", "g") if any(self._attention_alternatives(h, g, d) for h, g in c.attention)]
        dims += [d for d, n in (("hs", c.head_size), ("d", c.intermediate_size)) if len(n) > 1]
        return tuple(dims + (["v"] if len(self.vocab_choices) > 1 else []))

    @property
    def vocab_choices(self) -> tuple[int, ...]:
        """Vocabulary sizes this space chooses from (empty: the whole vocabulary, no choice)."""
        return () if self.vocab is None else self.vocab.choices

    def _vocab_values(self) -> tuple[int, ...]:
        return self.vocab_choices or (0,)

    def size(self) -> int:
        # Exact count of distinct members. Coarse uniform with MHA and Table 1's choices is
        # L*E*H*Hs*D (paper §2.1); coarse layer-wise sums (H*Hs*D)^l over depths l, which the
        # paper's E*(H*Hs*D)^L approximates. Fine-grained spaces count index *sets*; the paper's
        # fine-grained figures (Table 16) do not follow from its own formulas, so none to match.
        c, s = self.choices, self.shape
        any_layers = self.fine or self.local  # any n of L layers (fine; importance order swaps layers)
        layer_sets = [comb(s.layers, n) if any_layers else 1 for n in c.n_layers]
        if self.fine:
            embd = _comb_sum(s.embd, c.n_embd)
            # Index sets per size value; every kept layer chooses its own (uniform: of the same sizes).
            attn = [comb(s.groups, g) * comb(s.per_group, h // g) ** g for h, g in c.attention]
            heads = [sum(comb(s.rotary // 2, p) * comb(s.passes, q) for p, q in self._codec.head_dim_splits(hs))
                     for hs in c.head_size]
            mlp = [comb(s.inter, d) for d in c.intermediate_size]
        else:
            embd, attn, heads, mlp = len(c.n_embd), [1] * len(c.attention), [1] * len(c.head_size), \
                [1] * len(c.intermediate_size)

        def per_layer(n: int) -> int:  # configurations of n kept layers
            if self.layerwise:
                return (sum(attn) * sum(heads) * sum(mlp)) ** n
            return sum(a ** n for a in attn) * sum(h ** n for h in heads) * sum(d ** n for d in mlp)

        return len(self._vocab_values()) * embd * sum(k * per_layer(n) for k, n in zip(layer_sets, c.n_layers))

    def bounds(self) -> tuple[int, int]:
        if self._bounds is None:
            c = self.choices

            def extreme(pick: Callable[[tuple[int, ...]], int]) -> list[int]:
                return [self._count(self._uniform(pick(c.n_layers), pick(c.n_embd), Layer(h, g, pick(c.head_size),
                        pick(c.intermediate_size)), pick(self._vocab_values()))) for h, g in c.attention]

            self._bounds = (min(extreme(min)), max(extreme(max)))  # counts grow with every dimension
        return self._bounds

    def extremes(self) -> tuple[SubNetwork, SubNetwork]:
        """The smallest and the largest member (counts `bounds`): every dimension at its least, then
        at its most, in this space's order (supernet training's sandwich ends)."""
        c, rng = self.choices, random.Random(0)

        def member(pick: Callable[[tuple[Any, ...]], Any]) -> SubNetwork:
            h, g = pick(c.attention)
            layer = Layer(h, g, pick(c.head_size), pick(c.intermediate_size))
            return self._emit(self._uniform(pick(c.n_layers), pick(c.n_embd), layer, pick(self._vocab_values())), rng)

        return member(min), member(max)

    def one_shot(self, bin: ParameterBin, *, depths: int = 6) -> list[SubNetwork]:
        """The one-shot prunes of ``bin``: a depth × width grid in this space's order (docs/design.md#measure-the-product).

        For up to ``depths`` evenly spaced depths that can reach the bin, three width recipes —
        shrink the MLP, shrink the embedding, shrink both by the same fraction — each at the widest
        setting inside the bin; heads and head size stay whole (Minitron: width pruning of heads
        hurts most). In importance order these are Minitron's sort-then-slice candidates: the n
        most important layers with the most active neurons and channels — in fine-grained spaces
        the n most important units of each kind in every layer, by that layer's own order. Every
        seed is a member of this space and lies in ``bin``. The seeds `BinEvolutionSampler`
        starts from.
        """
        out: list[SubNetwork] = []
        seen: set[tuple[int, int, int, int]] = set()
        # With a vocabulary choice, the same grid for every vocabulary size.
        for v in self._vocab_values():
            self._one_shot_grid(bin, depths, v, out, seen)
        return [x for x in out if self.contains(x)]

    def _one_shot_grid(self, bin: ParameterBin, depths: int, v: int, out: list[SubNetwork],
                       seen: set[tuple[int, int, int, int]]) -> None:
        c, s = self.choices, self.shape
        full_attn = max(c.attention)
        hs = max(c.head_size)

        def arch(n: int, e: int, d: int) -> Arch:
            return self._uniform(n, e, Layer(full_attn[0], full_attn[1], hs, d), v)

        feasible = [n for n in c.n_layers if self._count(arch(n, min(c.n_embd), min(c.intermediate_size))) <= bin.hi
                    and self._count(arch(n, max(c.n_embd), max(c.intermediate_size))) >= bin.lo]
        if len(feasible) > depths:  # evenly spaced, both ends included
            feasible = sorted({feasible[round(i * (len(feasible) - 1) / (depths - 1))] for i in range(depths)})
        for n in feasible:
            recipes = [[(max(c.n_embd), d) for d in c.intermediate_size],
                       [(e, max(c.intermediate_size)) for e in c.n_embd],
                       [(_nearest(c.n_embd, f * s.embd), _nearest(c.intermediate_size, f * s.inter))
                        for f in (i / 64 for i in range(1, 65))]]
            for widths in recipes:
                inside = [(self._count(arch(n, e, d)), e, d) for e, d in widths
                          if self._count(arch(n, e, d)) in bin]
                if inside:
                    _, e, d = max(inside)  # the widest that fits: the most of the model kept
                    if (n, e, d, v) not in seen:
                        seen.add((n, e, d, v))
                        out.append(self._seed(arch(n, e, d)))

    def _seed(self, arch: Arch) -> SubNetwork:
        if not self.fine:
            return self._emit(arch, random.Random(0))
        x = arch.layers[0]
        seed = self.order.subnetwork(n_layers=len(arch.layers), n_embd=arch.embd, num_heads=x.heads,
                                     query_groups=x.groups, head_size=x.head_size, intermediate_size=x.inter)
        return seed if self.vocab is None else replace(seed, **self.vocab.fields(arch.vocab))

    def suggest(self, trial: optuna.Trial) -> SubNetwork:
        # Define-by-run: sizes are Optuna params (per kept layer in layer-wise spaces, so Optuna
        # sees conditional params); fine-grained index sets, far too large for params, are drawn
        # from one suggested integer seed, so a trial's params reproduce its sub-network.
        # A sampler that proposes whole architectures (BinEvolutionSampler) hands its candidate
        # over through ``genome_for``; the params are still suggested (the sampler answers them
        # from `encode`), so the trial records the candidate's sizes.
        genome = self.bred(trial)
        suggested = self._define_by_run(trial)
        return suggested if genome is None else genome

    def encode(self, subnet: SubNetwork) -> dict[str, Any]:
        """The Optuna params `suggest` would record for ``subnet`` (its sizes; not index sets)."""
        arch = self._parse(subnet)
        params: dict[str, Any] = {"n_layers": len(arch.layers), "n_embd": arch.embd}
        if len(self.vocab_choices) > 1:
            params["vocab_size"] = arch.vocab
        layers = list(enumerate(arch.layers)) if self.layerwise else [(None, arch.layers[0])]
        groups = sorted({g for _, g in self.choices.attention})
        heads = sorted({h for h, _ in self.choices.attention})
        for j, x in layers:
            suffix = "" if j is None else f"_{j}"
            if len(heads) == len(self.choices.attention):
                params[f"num_heads{suffix}"] = x.heads
            else:
                per = {gg: tuple(sorted(h // gg for h, g2 in self.choices.attention if g2 == gg)) for gg in groups}
                shared = len(set(per.values())) == 1
                params[f"query_groups{suffix}"] = x.groups
                params[f"heads_per_group{suffix}" if shared else f"heads_per_group{suffix}_g{x.groups}"] = x.heads // x.groups
            params[f"head_size{suffix}"] = x.head_size
            params[f"intermediate_size{suffix}"] = x.inter
        return params

    def _define_by_run(self, trial: optuna.Trial) -> SubNetwork:
        c = self.choices
        n = _suggest(trial, "n_layers", c.n_layers)
        embd = _suggest(trial, "n_embd", c.n_embd)
        vocab = _suggest(trial, "vocab_size", self.vocab_choices) if self.vocab_choices else 0
        if self.layerwise:
            layers = tuple(self._suggest_layer(trial, f"_{j}") for j in range(n))
        else:
            layers = (self._suggest_layer(trial, ""),) * n
        arch = Arch(embd, layers, tuple(range(n)), vocab=vocab)
        if not self.fine:
            return self._emit(arch, random.Random(0))
        rng = random.Random(trial.suggest_int("index_seed", 0, 2**31 - 1))
        return self._emit(replace(arch, layer_idx=tuple(sorted(rng.sample(range(self.shape.layers), n)))), rng)

    # ------------------------------------------------------------------ sampling and operators
    def _sample_layer(self, rng: random.Random) -> Layer:
        h, g = rng.choice(self.choices.attention)
        return Layer(h, g, rng.choice(self.choices.head_size), rng.choice(self.choices.intermediate_size))

    def _uniform(self, n: int, embd: int, layer: Layer, vocab: int | None = None) -> Arch:
        return Arch(embd, (layer,) * n, tuple(range(n)), vocab=max(self._vocab_values()) if vocab is None else vocab)

    def _sample_arch(self, rng: random.Random) -> Arch:
        n = rng.choice(self.choices.n_layers)
        embd = rng.choice(self.choices.n_embd)
        layers = tuple(self._sample_layer(rng) for _ in range(n)) if self.layerwise else (self._sample_layer(rng),) * n
        idx = tuple(sorted(rng.sample(range(self.shape.layers), n))) if self.fine else tuple(range(n))
        vocab = rng.choice(self.vocab_choices) if self.vocab_choices else 0  # no draw without a choice
        return Arch(embd, layers, idx, vocab=vocab)

    # ------------------------------------------------------------------ counting, bins, repair
    def _count(self, arch: Arch) -> int:
        # The count depends on sizes only (every layer has the same shape, see ModelShape), so it is
        # taken on the first-n sub-network of the same sizes — the one counter, memoised.
        key = (arch.embd, tuple(x.sizes for x in arch.layers), arch.vocab)
        if key not in self._counts:
            if len(self._counts) > 1 << 16:
                self._counts.clear()
            h, g, hs, d = zip(*(x.sizes for x in arch.layers))
            kw: dict[str, Any] = {}
            if not all(self.shape.head_size_legal(v, fine=False) for v in hs):
                # A fine-grained head size that the first-n rule cannot lay out (e.g. 11 of 12 dims
                # with 8 rotary): count an explicit layout of the same size instead.
                kw["head_size_indices"] = tuple(self._codec.layout(v) for v in hs)
            self._counts[key] = count_parameters(self.config, SubNetwork(
                n_layers=len(arch.layers), n_embd=arch.embd, num_heads=h, query_groups=g, head_size=hs,
                intermediate_size=d, vocab_size=arch.vocab or None, **kw))
        return self._counts[key]

    def _in_bin(self, propose: Callable[[], Arch], bin: ParameterBin, rng: random.Random,
                max_tries: int) -> SubNetwork | None:
        arch = constrain(propose, self._count, lambda x: self._repair(x, bin, rng), bin, max_tries)
        return None if arch is None else self._emit(arch, rng)

    def _repair(self, arch: Arch, bin: ParameterBin, rng: random.Random) -> Arch | None:
        """Move dimensions one at a time (two passes) towards the bin, each by bisection.

        Natural order: in random order. Importance order: widths first (MLP, embedding, depth),
        attention last — the one-shot prunes show that keeping heads and head size whole is what
        keeps a pruned network alive, so repair should not trade them away first.
        """
        dims = list(self.dimensions)
        if self.local:
            dims.sort(key=lambda d: ("d", "e", "v", "l", "hs", "g", "h").index(d))
        else:
            rng.shuffle(dims)
        for _ in range(2):
            for dim in dims:
                if self._count(arch) in bin:
                    return arch
                arch = self._bisect(arch, dim, bin, rng)
        return arch if self._count(arch) in bin else None

    def _bisect(self, arch: Arch, dim: str, bin: ParameterBin, rng: random.Random) -> Arch:
        c = self.choices
        up = self._count(arch) < bin.lo
        if dim == "l":
            growth = self._growth(arch, rng)
            values, at = c.n_layers, lambda v: self._with_depth(arch, v, *growth)
        elif dim == "e":
            values, at = c.n_embd, lambda v: replace(arch, embd=v)
        elif dim == "v":
            values, at = self.vocab_choices, lambda v: replace(arch, vocab=v)
        else:
            values = tuple(sorted({p[0 if dim == "h" else 1] for p in c.attention})) if dim in ("h", "g") else (
                c.head_size if dim == "hs" else c.intermediate_size)
            at = lambda v: self._clip(arch, dim, v, up)  # noqa: E731
        # Counts are non-decreasing in v: find the first value reaching bin.lo, then keep whichever of
        # it and its predecessor lies closest to the bin.
        lo, hi = 0, len(values)
        while lo < hi:
            mid = (lo + hi) // 2
            if self._count(at(values[mid])) >= bin.lo:
                hi = mid
            else:
                lo = mid + 1
        candidates = [at(values[i]) for i in (lo - 1, lo) if 0 <= i < len(values)] + [arch]
        return min(candidates, key=lambda x: bin.distance(self._count(x)))

    def _clip(self, arch: Arch, dim: str, v: int, up: bool) -> Arch:
        """Raise (``up``) or lower every layer's value of ``dim`` to the legal value nearest ``v``.

        Only layers on the wrong side of ``v`` change (the widest first when shrinking), so the
        count is monotone in ``v`` and `_bisect` can search it.
        """
        mha = self.shape.per_group == 1

        def clip(x: Layer) -> Layer:
            if dim == "h":  # keep g (in MHA g follows h)
                legal = sorted({h for h, g in self.choices.attention if mha or g == x.groups})
                cur = x.heads
            elif dim == "g":  # keep h
                legal = sorted({g for h, g in self.choices.attention if h == x.heads})
                cur = x.groups
            else:
                legal = list(self.choices.head_size if dim == "hs" else self.choices.intermediate_size)
                cur = x.head_size if dim == "hs" else x.inter
            if not legal or (cur >= v if up else cur <= v):
                return x
            if up:
                above = [w for w in legal if w >= v]
                value = above[0] if above else max(cur, legal[-1])
            else:
                below = [w for w in legal if w <= v]
                value = below[-1] if below else min(cur, legal[0])
            if dim == "h":
                return replace(x, heads=value, groups=value if mha else x.groups)
            return self._with_value(x, dim, (x.heads, value) if dim == "g" else value)

        return replace(arch, layers=tuple(clip(x) for x in arch.layers))

    def _suggest_layer(self, trial: optuna.Trial, suffix: str) -> Layer:
        c = self.choices
        heads = sorted({h for h, _ in c.attention})
        groups = sorted({g for _, g in c.attention})
        if len(heads) == len(c.attention):  # h determines g (MHA, MQA)
            h = _suggest(trial, f"num_heads{suffix}", tuple(heads))
            g = next(g for hh, g in c.attention if hh == h)
        else:
            g = _suggest(trial, f"query_groups{suffix}", tuple(groups))
            per = {gg: tuple(sorted(h // gg for h, g2 in c.attention if g2 == gg)) for gg in groups}
            # Optuna needs one distribution per param name: share it when every g allows the same k.
            name = f"heads_per_group{suffix}" if len(set(per.values())) == 1 else f"heads_per_group{suffix}_g{g}"
            h = g * _suggest(trial, name, per[g])
            trial.set_user_attr(f"num_heads{suffix}", h)
        return Layer(h, g, _suggest(trial, f"head_size{suffix}", c.head_size),
                      _suggest(trial, f"intermediate_size{suffix}", c.intermediate_size))


def _nearest(values: tuple[int, ...], target: float) -> int:
    """The largest of ``values`` at most ``target`` (the smallest value if none is)."""
    below = [v for v in values if v <= target]
    return max(below) if below else min(values)


ORDERS = ("importance", "block-influence", "natural")


def resolve_order(order: str | UnitOrder | None, model: Any, config: Any, space: str,
                  calibration: str = "default:calibration") -> UnitOrder:
    """The `UnitOrder` a space uses for ``order`` (see `StructuredSearchSpace`), ranked on ``calibration``."""
    if isinstance(order, UnitOrder):
        return order
    has_weights = hasattr(model, "subnas_config") and hasattr(model, "model")
    if order is None:
        order = "importance" if has_weights else "natural"
    if order == "natural":
        return UnitOrder.natural(config)
    if order not in ORDERS:
        raise SearchSpaceError(f"{space}: order={order!r} is not one of {', '.join(map(repr, ORDERS))} (or a UnitOrder)")
    if not has_weights:
        raise SearchSpaceError(f"{space}: order={order!r} ranks units by calibration passes, which need the "
                               f"model's weights: pass a subnas.Supernet (or order='natural' for a bare config)")
    from subnas.spaces._ordering import importance_order, trained_order

    stored = trained_order(getattr(model, "source", None)) if order == "importance" else None
    if stored is not None:  # a supernet trained by subnas keeps the order it was trained in
        return stored
    return importance_order(model, data=calibration,
                            layers="block-influence" if order == "block-influence" else "removal")


def _suggest(trial: optuna.Trial, name: str, values: tuple[int, ...]) -> int:
    """An ordinal int param when the values are evenly spaced (so TPE sees their order), else categorical."""
    if len(values) == 1:
        return values[0]
    step = values[1] - values[0]
    if all(b - a == step for a, b in zip(values, values[1:])):
        return trial.suggest_int(name, values[0], values[-1], step=step)
    return int(trial.suggest_categorical(name, list(values)))
