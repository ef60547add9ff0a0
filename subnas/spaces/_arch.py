"""How the structured search spaces hold a candidate internally, and convert it to `SubNetwork`.

An `Arch` is a candidate's sizes plus, in fine-grained spaces, its index lists *in sampling order*:
shrinking a dimension drops the most recently added indices and growing samples new ones (paper
§2.2). Index lists may lag the sizes; `ArchCodec.emit` fits them when a `SubNetwork` is made, so
operators and bin repair work on sizes alone.
"""

from __future__ import annotations

import random
import weakref
from dataclasses import dataclass, replace
from typing import Any, Callable

import numpy as np

from subnas.spaces._choices import ModelShape, SearchSpaceError
from subnas.config import SubnasConfig
from subnas.spaces._ordering import UnitOrder
from subnas.subnet import INDEX_FIELDS, SubNetwork, SubNetworkError, coarse_head_dims


@dataclass(frozen=True)
class Layer:
    """One kept layer: sizes, and (fine-grained) index lists in sampling order."""

    heads: int
    groups: int
    head_size: int
    inter: int
    group_idx: tuple[int, ...] = ()
    head_idx: tuple[tuple[int, ...], ...] = ()  # per entry of group_idx: head offsets in that group
    pairs: tuple[int, ...] = ()  # rotary pair p keeps head dims p and p + R/2
    passes: tuple[int, ...] = ()  # pass-through dims, as offsets after the rotary part
    neurons: tuple[int, ...] = ()

    @property
    def sizes(self) -> tuple[int, int, int, int]:
        return self.heads, self.groups, self.head_size, self.inter


@dataclass(frozen=True)
class Arch:
    embd: int
    layers: tuple[Layer, ...]
    layer_idx: tuple[int, ...]  # the model layer of each kept layer, increasing
    embd_idx: tuple[int, ...] = ()
    vocab: int = 0  # tokens kept, in spaces with a vocabulary choice (0: no choice, the full vocabulary)


class Ranking:
    """One component's units, most important first, with each unit's rank (0 = most important)."""

    def __init__(self, units: tuple[int, ...]) -> None:
        self.units = units
        self.pos = {u: r for r, u in enumerate(units)}

    def sort(self, units: tuple[int, ...]) -> tuple[int, ...]:
        return tuple(sorted(units, key=self.pos.__getitem__))

    def unused(self, kept: tuple[int, ...]) -> list[int]:
        """Units not in ``kept``, most important first."""
        used = set(kept)
        return [u for u in self.units if u not in used]


def fit_indices(current: tuple[int, ...], n: int, universe: int, rng: random.Random,
                rank: Ranking | None = None) -> tuple[int, ...]:
    """Resize an index list.

    Without ``rank`` (the paper's §2.2): shrinking drops the last entries, growing samples unused
    ones. With ``rank`` (unit -> importance rank, 0 = most important): along the importance order —
    shrinking drops the least important kept units, growing adds the most important unused ones,
    and the list comes back most important first.
    """
    if rank is not None:
        if len(current) >= n:
            return rank.sort(current)[:n]
        return rank.sort(current) + tuple(rank.unused(current)[: n - len(current)])
    if len(current) >= n:
        return current[:n]
    if universe <= 256:  # heads, groups, head dims: the stdlib is quicker than setting up numpy
        used = set(current)
        return current + tuple(rng.sample([i for i in range(universe) if i not in used], n - len(current)))
    # numpy, seeded from ``rng`` (so still reproducible): a layer-wise draw samples ~1e5 indices.
    gen = np.random.default_rng(rng.getrandbits(64))
    unused = np.setdiff1d(np.arange(universe), current, assume_unique=True) if current else np.arange(universe)
    return current + tuple(gen.permutation(unused)[: n - len(current)].tolist())


def _raw(value: Any, j: int) -> tuple[int, ...] | None:
    """Layer ``j``'s entry of a SubNetwork index field (flat = the same for every layer)."""
    if value is None:
        return None
    return value if isinstance(value[0], int) else value[j]  # type: ignore[no-any-return]


class ArchCodec:
    """`Arch` <-> `SubNetwork` for one model and one kind of space."""

    def __init__(self, config: SubnasConfig, shape: ModelShape, *, fine: bool, layerwise: bool, name: str,
                 order: UnitOrder | None = None) -> None:
        self.config, self.shape, self.fine, self.layerwise, self.name = config, shape, fine, layerwise, name
        # Coarse spaces in importance order: "the first n" of every component is "the n most
        # important" (`UnitOrder`), and a coarse Arch lists its layers by importance rank
        # (``layer_idx`` holds the ranks, the n most important unless a mutation swapped one), so
        # that dropping the last layer drops the least important one. None: the natural order.
        self.order = None if order is None or order.is_natural else order
        self._rank = {layer: r for r, layer in enumerate(order.layers)} if self.order is not None else {}
        # Spaces with a vocabulary choice set this: vocab size -> the SubNetwork fields that keep it
        # (`subnas.spaces._choices.VocabChoice.fields`); None: no vocabulary choice, the full vocabulary.
        self.vocab_fields: Callable[[int], dict[str, Any]] | None = None
        # id(subnet) -> Arch for every emitted SubNetwork still alive, so operators on it skip parsing.
        # The Arch shares the SubNetwork's index tuples; the entry goes when the SubNetwork does.
        self._emitted: dict[int, Arch] = {}

        # Fine-grained spaces in importance order: per (component, model layer) the ranking that
        # index lists are fitted along (`fit_indices`); built lazily, memoised.
        self._rankings: dict[tuple[str, int, int], Ranking] = {}

    def ranking(self, kind: str, layer: int = 0, group: int = 0) -> Ranking | None:
        """The importance ranking of ``kind`` (``"layers"``, ``"embd"``, ``"groups"``, ``"heads"``,
        ``"pairs"``, ``"passes"``, ``"neurons"``) in model layer ``layer`` (heads: of ``group``);
        None in the natural order (index lists then follow the paper's sampling order)."""
        if self.order is None:
            return None
        key = (kind, layer, group)
        if key not in self._rankings:
            o = self.order
            units = {"layers": lambda: o.layers, "embd": lambda: o.embd, "groups": lambda: o.groups[layer],
                     "heads": lambda: o.heads[layer][group], "pairs": lambda: o.rotary_pairs[layer],
                     "passes": lambda: o.passes[layer], "neurons": lambda: o.neurons[layer]}[kind]()
            self._rankings[key] = Ranking(tuple(units))
        return self._rankings[key]

    def head_dim_splits(self, hs: int) -> list[tuple[int, int]]:
        """The (rotary pairs, pass dims) splits of a head size: 2p + q = hs, never splitting a pair."""
        s = self.shape
        return [(p, hs - 2 * p) for p in range(min(hs // 2, s.rotary // 2) + 1) if hs - 2 * p <= s.passes]

    def layout(self, hs: int) -> tuple[int, ...]:
        """Some legal head-dim index set of size ``hs`` (as many rotary pairs as fit, then pass dims)."""
        half, p = self.shape.rotary // 2, max(self.head_dim_splits(hs))[0]
        return tuple(range(p)) + tuple(half + i for i in range(p)) + tuple(range(2 * half, 2 * half + hs - 2 * p))

    def _split(self, layer: Layer, rng: random.Random) -> tuple[int, int]:
        """Fresh: a split drawn in proportion to its number of index sets (uniform over sets), or in
        importance order the first-n rule's split (as `UnitOrder.subnetwork` keeps); otherwise the
        split nearest the current one (fewest indices added or dropped)."""
        from math import comb

        s, splits = self.shape, self.head_dim_splits(layer.head_size)
        if not layer.pairs and not layer.passes:
            if self.order is not None:
                try:
                    dims = coarse_head_dims(layer.head_size, s.head_size, s.rotary)
                    return sum(1 for d in dims if d < s.rotary // 2), sum(1 for d in dims if d >= s.rotary)
                except SubNetworkError:
                    return max(splits)
            return rng.choices(splits, weights=[comb(s.rotary // 2, p) * comb(s.passes, q) for p, q in splits])[0]
        return min(splits, key=lambda pq: abs(pq[0] - len(layer.pairs)) + abs(pq[1] - len(layer.passes)))

    def _fit_layer(self, x: Layer, rng: random.Random, m: int) -> Layer:
        """``x`` (kept model layer ``m``) with index lists fitted to its sizes."""
        s, k = self.shape, x.heads // x.groups
        if (len(x.group_idx) == len(x.head_idx) == x.groups and all(len(h) == k for h in x.head_idx)
                and len(x.neurons) == x.inter and 2 * len(x.pairs) + len(x.passes) == x.head_size):
            return x
        groups = fit_indices(x.group_idx, x.groups, s.groups, rng, self.ranking("groups", m))
        old = dict(zip(x.group_idx, x.head_idx))
        p, q = self._split(x, rng)
        return replace(x, group_idx=groups,
                       head_idx=tuple(fit_indices(old.get(grp, ()), k, s.per_group, rng, self.ranking("heads", m, grp))
                                      for grp in groups),
                       pairs=fit_indices(x.pairs, p, s.rotary // 2, rng, self.ranking("pairs", m)),
                       passes=fit_indices(x.passes, q, s.passes, rng, self.ranking("passes", m)),
                       neurons=fit_indices(x.neurons, x.inter, s.inter, rng, self.ranking("neurons", m)))

    def emit(self, arch: Arch, rng: random.Random) -> SubNetwork:
        """The `SubNetwork` of ``arch``, fitting its index lists to its sizes first (fine-grained)."""
        s = self.shape
        if self.fine:
            # Every kept layer its own index sets, uniform spaces included (paper §2.1: the same
            # sizes in every layer, "an arbitrary subset of elements within each layer").
            layers = tuple(self._fit_layer(x, rng, m) for x, m in zip(arch.layers, arch.layer_idx))
            arch = replace(arch, layers=layers,
                           embd_idx=fit_indices(arch.embd_idx, arch.embd, s.embd, rng, self.ranking("embd")))

        def per(f: Callable[[Layer], Any]) -> Any:  # layer-wise: one value per kept layer
            return tuple(f(x) for x in arch.layers) if self.layerwise else f(arch.layers[0])

        def each(f: Callable[[Layer], Any]) -> Any:  # index sets: one per kept layer in every fine space
            return tuple(f(x) for x in arch.layers)

        if self.order is not None and not self.fine:
            subnet = self.order.subnetwork(
                n_layers=len(arch.layers), n_embd=arch.embd, ranks=arch.layer_idx, num_heads=[x.heads for x in arch.layers],
                query_groups=[x.groups for x in arch.layers], head_size=[x.head_size for x in arch.layers],
                intermediate_size=[x.inter for x in arch.layers])
            if self.vocab_fields is not None:
                subnet = replace(subnet, **self.vocab_fields(arch.vocab))
            self._emitted[id(subnet)] = arch
            weakref.finalize(subnet, self._emitted.pop, id(subnet), None)
            return subnet

        kw: dict[str, Any] = dict(n_layers=len(arch.layers), n_embd=arch.embd, num_heads=per(lambda x: x.heads),
                                  query_groups=per(lambda x: x.groups), head_size=per(lambda x: x.head_size),
                                  intermediate_size=per(lambda x: x.inter))
        if self.fine:
            half = s.rotary // 2
            kw.update(layer_indices=arch.layer_idx, embd_indices=arch.embd_idx,
                      query_group_indices=each(lambda x: x.group_idx),
                      head_indices=each(lambda x: tuple(grp * s.per_group + o
                                                         for grp, offs in zip(x.group_idx, x.head_idx) for o in offs)),
                      head_size_indices=each(lambda x: x.pairs + tuple(p + half for p in x.pairs)
                                             + tuple(s.rotary + o for o in x.passes)),
                      intermediate_indices=each(lambda x: x.neurons))
        if self.vocab_fields is not None:
            kw.update(self.vocab_fields(arch.vocab))
        subnet = SubNetwork(**kw)
        self._emitted[id(subnet)] = arch
        weakref.finalize(subnet, self._emitted.pop, id(subnet), None)
        return subnet

    def parse(self, subnet: SubNetwork) -> Arch:
        """The `Arch` of a member; `SearchSpaceError` (or `SubNetworkError`) for a non-member."""
        hit = self._emitted.get(id(subnet))
        if hit is not None:
            return hit
        resolved = subnet.resolve(self.config)
        sel, s = resolved.layers, self.shape
        if self.vocab_fields is None and resolved.vocab is not None:
            raise SearchSpaceError(f"not a member of {self.name}: it prunes the vocabulary, and this space has no "
                                   f"vocabulary choice (give the space vocab_size choices)")
        vocab = 0 if self.vocab_fields is None else resolved.vocab_size(self.config)
        if not self.fine:
            ranks = tuple(range(len(sel)))
            if self.order is not None:  # layers by importance rank (see __init__)
                sel = tuple(sorted(sel, key=lambda x: self._rank[x.layer]))
                ranks = tuple(self._rank[x.layer] for x in sel)
            layers = tuple(Layer(x.num_heads, x.query_groups, x.head_size, x.intermediate_size) for x in sel)
            arch = Arch(len(resolved.embd), layers, ranks, vocab=vocab)
            if ((self.order is not None or any(getattr(subnet, f) is not None for f in INDEX_FIELDS)
                 or subnet.vocab_indices is not None)
                    and self.emit(arch, random.Random(0)).resolve(self.config) != resolved):
                which = "most important" if self.order is not None else "first"
                raise SearchSpaceError(f"not a member of {self.name}: it keeps units other than the {which} n")
        else:
            layers = []
            for j, x in enumerate(sel):  # index order as written, so "drop the last" means the same
                groups = _raw(subnet.query_group_indices, j) or x.groups
                heads = _raw(subnet.head_indices, j) or x.heads
                dims = _raw(subnet.head_size_indices, j) or x.head_dims
                layers.append(Layer(
                    x.num_heads, x.query_groups, x.head_size, x.intermediate_size, groups,
                    tuple(tuple(h % s.per_group for h in heads if h // s.per_group == grp) for grp in groups),
                    tuple(d for d in dims if d < s.rotary // 2), tuple(d - s.rotary for d in dims if d >= s.rotary),
                    _raw(subnet.intermediate_indices, j) or x.neurons))
            arch = Arch(len(resolved.embd), tuple(layers), tuple(x.layer for x in sel),
                        subnet.embd_indices or resolved.embd, vocab=vocab)
        if not self.layerwise and len({x.sizes for x in arch.layers}) > 1:
            raise SearchSpaceError(f"not a member of {self.name}: its layers' sizes differ, the space is uniform")
        return arch
