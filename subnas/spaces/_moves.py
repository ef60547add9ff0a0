"""The moves a structured space offers a mutation, and its crossover (paper §2.2).

A space defines *what* a move is in its structure: a step of one dimension (``l``, ``e``, ``v``,
``h``, ``g``, ``hs``, ``d``), a layer **swap**, a **units** swap. *Which* move a mutation makes,
with what weights, is the sampler's mutation operator (`subnas.samplers.WeightedMoves`): it
passes a ``choose`` callable that picks one of the moves open to a parent; without one the space
picks uniformly, as the paper does.

In the natural order every move is the paper's: a mutated dimension is resampled uniformly, index
lists grow by random unused units and shrink by their last ones. In importance order (the default
with a model) every move is local along the order (`subnas.spaces.UnitOrder`):

* a dimension moves to one of the two nearest values either side (`Moves._pick`); in fine-grained
  spaces its index lists grow by the most important unused units and shrink by the least
  important kept ones (`subnas.spaces._arch.fit_indices`), so the n most important units of
  every layer — the one-shot prune — is where every size change of it lands;
* **swap** trades one of the least important kept layers for one of the most important dropped
  ones (coarse and fine);
* **units** (fine-grained only) trades a few of the least important kept MLP neurons of one layer,
  or embedding channels, for the most important unused ones. Attention units move only with
  their sizes (h, g, hs): their swaps, like their size steps, mostly break a pruned network;
* **every layer** (layer-wise only: ``h-all``, ``g-all``, ``hs-all``, ``d-all``) moves a per-layer
  dimension one step in *every* kept layer at once, the same number of steps along each layer's
  value grid. From a uniform parent it makes exactly the step the uniform space would, so a
  layer-wise search can follow every trajectory of the uniform space it contains; without it a
  uniform width change takes one move per layer (measured: coarse-layerwise ended behind
  coarse-uniform in 85M-100M with seed 0, 87.2 against 79.6 test perplexity; docs/benchmarks/search.md).

Crossover takes each dimension from either parent with p = 0.5; in fine-grained spaces a kept
layer's index sets come from the same *model* layer of that parent (when it keeps it), never from
another layer's position.

Example:
    >>> import random
    >>> from subnas import SubnasConfig, get_search_space
    >>> space = get_search_space("fine-uniform", SubnasConfig(num_hidden_layers=3, hidden_size=64))
    >>> s = space.sample(random.Random(0))
    >>> space.moves(s)  # the natural order: the paper's dimension steps only
    ('d', 'e', 'h', 'hs', 'l')
    >>> space.contains(space.mutate(s, random.Random(1), choose=lambda moves, rng: "d"))
    True
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from subnas.spaces._arch import Arch, Layer, fit_indices
from subnas.spaces._choices import SearchSpaceError

if TYPE_CHECKING:
    from subnas.spaces._arch import ArchCodec
    from subnas.spaces._choices import Choices, ModelShape

PER_LAYER_DIMS = ("h", "g", "hs", "d")
#: Suffix of the layer-wise moves that step a per-layer dimension in every kept layer at once.
EVERY_LAYER = "-all"
#: ``choose(moves, rng) -> move``: picks the move a mutation makes among those open to a parent.
Choose = Callable[[Sequence[str], random.Random], str]


def uniform_choice(moves: Sequence[str], rng: random.Random) -> str:
    """The paper's §2.2 choice: every open move equally likely."""
    return rng.choice(list(moves))


def _value_key(dim: str) -> Callable[[Any], int]:
    """What a per-layer dimension's values are ordered by: heads of an (h, g) pair for ``h``, groups
    for ``g``, the value itself for ``hs`` and ``d``."""
    def key(v: Any) -> int:
        return v[0 if dim == "h" else 1] if isinstance(v, tuple) else v  # type: ignore[no-any-return]
    return key


def bare(layer: Layer) -> Layer:
    """``layer``'s sizes without index lists (fitted afresh when emitted)."""
    return Layer(layer.heads, layer.groups, layer.head_size, layer.inter)


class Moves:
    """Mutation moves and crossover of `subnas.spaces.StructuredSearchSpace` (a mixin)."""

    choices: Choices
    shape: ModelShape
    fine: bool
    layerwise: bool
    local: bool
    name: str
    _codec: ArchCodec

    @property
    def vocab_choices(self) -> tuple[int, ...]:  # pragma: no cover - the space defines it
        raise NotImplementedError

    def _sample_layer(self, rng: random.Random) -> Layer:  # pragma: no cover - the space defines it
        raise NotImplementedError

    # ------------------------------------------------------------------ which moves are open
    def _moves(self, arch: Arch) -> dict[str, list[int]]:
        """Open moves -> the kept layers (positions) a per-layer move may change."""
        c = self.choices
        options: dict[str, list[int]] = {}
        if any(n != len(arch.layers) for n in c.n_layers):
            options["l"] = []
        if self.local and len(arch.layers) < self.shape.layers:
            options["swap"] = []  # importance order: trade a kept layer for a dropped one
        if self.local and self.fine:
            options["units"] = []  # importance order: trade kept neurons / channels for unused ones
        if any(e != arch.embd for e in c.n_embd):
            options["e"] = []
        if any(v != arch.vocab for v in self.vocab_choices):
            options["v"] = []
        for dim in PER_LAYER_DIMS:
            layers = [j for j, x in enumerate(arch.layers[: len(arch.layers) if self.layerwise else 1])
                      if self._alternatives(x, dim)]
            if layers:
                options[dim] = layers
                if self.local and self.layerwise and len(arch.layers) > 1:
                    options[dim + EVERY_LAYER] = layers
        if self.fine and "units" in options and not self._unit_kinds(arch):
            del options["units"]  # every neuron and channel kept: nothing to trade
        return options

    def _mutate(self, arch: Arch, rng: random.Random, choose: Choose | None = None) -> Arch:
        options = self._moves(arch)
        if not options:
            raise SearchSpaceError(f"{self.name}: this space has a single member; there is nothing to mutate")
        dim = (choose or uniform_choice)(sorted(options), rng)
        c = self.choices
        if dim == "swap":
            return self._swap_layer(arch, rng)
        if dim == "units":
            return self._swap_units(arch, rng)
        if dim.endswith(EVERY_LAYER):
            return self._step_every_layer(arch, rng, dim.removesuffix(EVERY_LAYER), options[dim])
        if dim == "l":
            n = self._pick(rng, [n for n in c.n_layers if n != len(arch.layers)], len(arch.layers))
            return self._with_depth(arch, n, *self._growth(arch, rng))
        if dim == "e":
            return replace(arch, embd=self._pick(rng, [e for e in c.n_embd if e != arch.embd], arch.embd))
        if dim == "v":
            return replace(arch, vocab=self._pick(rng, [v for v in self.vocab_choices if v != arch.vocab], arch.vocab))
        j = rng.choice(options[dim])
        x = arch.layers[j]
        key = _value_key(dim)
        value = self._pick(rng, self._alternatives(x, dim), key(self._value(x, dim)), key=key)
        return self._set_layer(arch, j, self._with_value(x, dim, value))

    # ------------------------------------------------------------------ the moves
    def _pick(self, rng: random.Random, alternatives: list[Any], current: int,
              key: Callable[[Any], int] = lambda v: v) -> Any:
        """A new value for a mutated dimension: the paper resamples it uniformly (natural order);
        in importance order a local step — one of the two nearest values on either side.

        Why: after the one-shot seeds the elites are already good, and a uniform jump (say 9 heads
        to 3, or 30 layers to 8), then repaired back into the bin, almost always lands far worse
        (measured: most such mutants of SmolLM2's best seeds scored perplexity > 1,000 against
        ~160); a local step explores the seeds' neighbourhood, which is where the better
        sub-networks are."""
        if not self.local:
            return rng.choice(alternatives)
        below = sorted((a for a in alternatives if key(a) < current), key=key)[-2:]
        above = sorted((a for a in alternatives if key(a) > current), key=key)[:2]
        return rng.choice(below + above or alternatives)

    def _step_every_layer(self, arch: Arch, rng: random.Random, dim: str, movable: list[int]) -> Arch:
        """Move ``dim`` the same number of steps along every kept layer's value grid (clipped at
        its ends): the step `_pick` draws for one reference layer. On a uniform parent every layer
        lands on the same value — the uniform space's own move."""
        key = _value_key(dim)

        def grid(x: Layer) -> tuple[list[Any], int]:  # the layer's values in order and its position there
            current = self._value(x, dim)
            values = sorted([*self._alternatives(x, dim), current], key=key)
            return values, values.index(current)

        reference = arch.layers[rng.choice(movable)]
        values, at = grid(reference)
        step = values.index(self._pick(rng, self._alternatives(reference, dim), key(self._value(reference, dim)),
                                       key=key)) - at
        layers = []
        for x in arch.layers:
            values, at = grid(x)
            layers.append(self._with_value(x, dim, values[min(max(at + step, 0), len(values) - 1)]))
        return replace(arch, layers=tuple(layers))

    @staticmethod
    def _value(layer: Layer, dim: str) -> Any:
        """``layer``'s value of a per-layer dimension, as `_alternatives` lists them."""
        if dim in ("h", "g"):
            return (layer.heads, layer.groups)
        return layer.head_size if dim == "hs" else layer.inter

    def _layer_ranks(self, arch: Arch) -> list[int]:
        """The importance rank of every kept layer (coarse Archs hold ranks, fine ones model layers)."""
        if not self.fine:
            return list(arch.layer_idx)
        ranking = self._codec.ranking("layers")
        assert ranking is not None  # swaps exist only in importance order
        return [ranking.pos[m] for m in arch.layer_idx]

    def _swap_layer(self, arch: Arch, rng: random.Random) -> Arch:
        """Replace one of the least important kept layers by one of the most important dropped ones.

        The importance order ranks layers one at a time; which n layers work best together is
        not exactly its top n (measured on SmolLM2 with block influence: keeping its 25 most
        influential layers but one swapped gave perplexity 144 against 159). Local, like `_pick`:
        among the last four kept and the first four dropped ranks. In fine-grained spaces the new
        layer keeps the old one's sizes and takes its own most important units.
        """
        kept = self._layer_ranks(arch)
        dropped = [r for r in range(self.shape.layers) if r not in set(kept)][:4]
        position = rng.choice(sorted(range(len(kept)), key=lambda j: kept[j])[-4:])
        kept[position] = rng.choice(dropped)
        layers = list(arch.layers)
        if self.fine:
            ranking = self._codec.ranking("layers")
            assert ranking is not None
            layers[position] = bare(layers[position])
            idx = [ranking.units[r] for r in kept]
        else:
            idx = kept
        pairs = sorted(zip(idx, layers), key=lambda p: p[0])  # coarse: entries by rank; fine: by model layer
        return replace(arch, layer_idx=tuple(r for r, _ in pairs), layers=tuple(x for _, x in pairs))

    def _unit_kinds(self, arch: Arch) -> list[tuple[str, int]]:
        """What a units swap may trade: ("embd", -1) and ("neurons", position) with units left unused."""
        kinds = [("embd", -1)] if arch.embd < self.shape.embd else []
        return kinds + [("neurons", j) for j, x in enumerate(arch.layers) if x.inter < self.shape.inter]

    def _swap_units(self, arch: Arch, rng: random.Random) -> Arch:
        """Trade 1..n/16 of the least important kept units (of the last 2k kept) of one layer's MLP
        or of the embedding for as many of the most important unused ones (of the first 2k)."""
        kind, j = rng.choice(self._unit_kinds(arch))
        s, codec = self.shape, self._codec
        if kind == "embd":
            ranking = codec.ranking("embd")
            kept = fit_indices(arch.embd_idx, arch.embd, s.embd, rng, ranking)
        else:
            m = arch.layer_idx[j]
            ranking = codec.ranking("neurons", m)
            x = arch.layers[j]
            kept = fit_indices(x.neurons, x.inter, s.inter, rng, ranking)
        assert ranking is not None  # units swaps exist only in importance order
        k = rng.randint(1, max(1, len(kept) // 16))
        worst = rng.sample(ranking.sort(kept)[-2 * k:], k)
        best = rng.sample(ranking.unused(kept)[: 2 * k], min(k, len(ranking.unused(kept)[: 2 * k])))
        traded = ranking.sort(tuple(set(kept) - set(worst[: len(best)])) + tuple(best))
        if kind == "embd":
            return replace(arch, embd_idx=traded)
        return replace(arch, layers=arch.layers[:j] + (replace(arch.layers[j], neurons=traded),) + arch.layers[j + 1:])

    # ------------------------------------------------------------------ per-layer values and depth
    def _attention_alternatives(self, h: int, g: int, dim: str) -> list[tuple[int, int]]:
        # h changes with g fixed and g with h fixed, so a mutation changes exactly one of them;
        # with one head per group (MHA) g simply follows h.
        if dim == "h":
            return [(a, b) for a, b in self.choices.attention if a != h and (b == g or self.shape.per_group == 1)]
        return [(a, b) for a, b in self.choices.attention if a == h and b != g] if self.shape.per_group > 1 else []

    def _alternatives(self, layer: Layer, dim: str) -> list[Any]:
        if dim in ("h", "g"):
            return self._attention_alternatives(layer.heads, layer.groups, dim)
        values = self.choices.head_size if dim == "hs" else self.choices.intermediate_size
        return [v for v in values if v != (layer.head_size if dim == "hs" else layer.inter)]

    def _with_value(self, layer: Layer, dim: str, value: Any) -> Layer:
        if dim in ("h", "g"):
            return replace(layer, heads=value[0], groups=value[1])
        return replace(layer, head_size=value) if dim == "hs" else replace(layer, inter=value)

    def _set_layer(self, arch: Arch, j: int, layer: Layer) -> Arch:
        if not self.layerwise:
            # Uniform: the same sizes in every layer; a fine-grained layer keeps its own index lists
            # (fitted to the new sizes when emitted).
            return replace(arch, layers=tuple(replace(x, heads=layer.heads, groups=layer.groups,
                                                      head_size=layer.head_size, inter=layer.inter)
                                              for x in arch.layers))
        return replace(arch, layers=arch.layers[:j] + (layer,) + arch.layers[j + 1:])

    def _with_depth(self, arch: Arch, n: int, new_layers: list[Layer], new_idx: list[int]) -> Arch:
        """Keep ``n`` layers, or add layers (configs ``new_layers``, model layers ``new_idx``).

        Shrinking drops the last layers (§2.2; coarse Archs list layers by importance rank, so the
        least important), in a fine-grained space in importance order the least important kept ones.
        """
        have = len(arch.layers)
        if n <= have:
            if self.fine and self.local:
                ranks = self._layer_ranks(arch)
                keep = sorted(sorted(range(have), key=lambda j: ranks[j])[:n])
                return replace(arch, layers=tuple(arch.layers[j] for j in keep),
                               layer_idx=tuple(arch.layer_idx[j] for j in keep))
            return replace(arch, layers=arch.layers[:n], layer_idx=arch.layer_idx[:n])
        if not self.fine:
            added = new_layers[: n - have] if self.layerwise else [arch.layers[0]] * (n - have)
            # Coarse: layer_idx holds importance ranks (natural order: the ranks are the layers);
            # growing adds the most important ranks not kept yet.
            fresh = [r for r in range(self.shape.layers) if r not in set(arch.layer_idx)][: n - have]
            return replace(arch, layers=arch.layers + tuple(added), layer_idx=arch.layer_idx + tuple(fresh))
        # A new layer of a fine-grained space gets its own index lists (fitted when emitted).
        added = new_layers[: n - have] if new_layers else [bare(arch.layers[-1])] * (n - have)
        by_layer = dict(zip(arch.layer_idx, arch.layers)) | dict(zip(new_idx[: n - have], added))
        order = sorted(by_layer)
        return replace(arch, layers=tuple(by_layer[i] for i in order), layer_idx=tuple(order))

    def _growth(self, arch: Arch, rng: random.Random) -> tuple[list[Layer], list[int]]:
        """Layer configs and unused model layers for adding layers: sampled (§2.2), or in a
        fine-grained space in importance order the most important unused layers, sized like the
        kept ones (empty ``new_layers``: copies of a kept layer's sizes)."""
        extra = self.shape.layers - len(arch.layers)
        unused = sorted(set(range(self.shape.layers)) - set(arch.layer_idx))
        if self.fine and self.local:
            ranking = self._codec.ranking("layers")
            assert ranking is not None
            return [], [m for m in ranking.units if m in set(unused)]
        layers = [self._sample_layer(rng) for _ in range(extra)] if self.layerwise else []
        return layers, (rng.sample(unused, len(unused)) if self.fine else [])

    # ------------------------------------------------------------------ crossover
    def _crossover(self, a: Arch, b: Arch, rng: random.Random) -> Arch:
        # §2.2: each of (e, h, g, hs, d) comes from either parent with p = 0.5 (layer-wise: the
        # whole per-layer vector of that dimension), and so does the depth (equal in layer-wise).
        if self.layerwise and len(a.layers) != len(b.layers):
            raise SearchSpaceError(f"crossover in {self.name} needs parents of equal depth (paper §2.2); "
                                   f"got {len(a.layers)} and {len(b.layers)} layers")

        def pick() -> Arch:
            return a if rng.random() < 0.5 else b

        depth, embd, hs_from, d_from, h_from, g_from = (pick() for _ in range(6))
        vocab = pick().vocab if self.vocab_choices else 0  # drawn only with a vocabulary choice
        n = len(depth.layers)
        if self.fine:
            g_from = h_from  # fine-grained heads belong to their groups: both travel together
            return Arch(embd.embd, self._fine_layers(depth, h_from, hs_from, d_from), depth.layer_idx, embd.embd_idx,
                        vocab=vocab)
        if not self._pairs_legal(h_from, g_from):
            # h of one parent with g of the other can break the GQA rule: draw among the legal
            # mixes instead (always including each parent's own).
            h_from, g_from = rng.choice([(x, y) for x in (a, b) for y in (a, b) if self._pairs_legal(x, y)])
        layers = []
        for j in range(n if self.layerwise else 1):
            h, g, hs, d = (p.layers[j] for p in (h_from, g_from, hs_from, d_from))
            layers.append(Layer(h.heads, g.groups, hs.head_size, d.inter))
        return Arch(embd.embd, tuple(layers) if self.layerwise else (layers[0],) * n, depth.layer_idx, embd.embd_idx,
                    vocab=vocab)

    def _fine_layers(self, depth: Arch, h_from: Arch, hs_from: Arch, d_from: Arch) -> tuple[Layer, ...]:
        """Per kept model layer m of ``depth``: each dimension from that dimension's parent's own
        layer m when it keeps m, else from ``depth``'s layer m — recombination per layer, never by
        position. Uniform spaces take the dimension's one size from its parent and refit the index
        sets to it (along the importance order in importance order)."""
        out = []
        parents = (h_from, hs_from, d_from)
        by = [dict(zip(p.layer_idx, p.layers)) for p in parents]
        for m, own in zip(depth.layer_idx, depth.layers):
            h, hs, d = (p.get(m, own) for p in by)
            size_h, size_hs, size_d = (h, hs, d) if self.layerwise else (p.layers[0] for p in parents)
            out.append(Layer(size_h.heads, size_h.groups, size_hs.head_size, size_d.inter,
                             h.group_idx, h.head_idx, hs.pairs, hs.passes, d.neurons))
        return tuple(out)

    def _pairs_legal(self, h_from: Arch, g_from: Arch) -> bool:
        """Whether the heads of ``h_from`` with the groups of ``g_from`` obey the GQA rule in every layer."""
        return all(x.heads % y.groups == 0 and x.heads // y.groups <= self.shape.per_group
                   for x, y in zip(h_from.layers, g_from.layers))
