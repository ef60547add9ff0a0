"""`SubNetwork`: the one description of a sub-network, and its resolution against a model.

A `SubNetwork` is what users write, search spaces produce and CLI files hold. Omitted fields mean
"as in the full model". `SubNetwork.resolve(config)` validates it against a model's `SubnasConfig`
and returns a `ResolvedSubNetwork` in which every choice is an explicit tuple of original indices;
the supernet, the parameter counter and the extractor all consume that one resolved form, which is
how "what you evaluate is what you export" holds by construction.

Coarse choices (sizes without index sets) mean "the first n": first layers, first channels,
first neurons, first query groups and the first heads of each kept group. A head size keeps whole
rotary pairs (dims i and i + R/2 for a rotary width R), first the rotary pairs in proportion to
the model's rotary fraction, then pass-through dimensions, so RoPE pairs are never split.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Sequence, Union

from subnas.config import SubnasConfig

PerLayerInt = Union[int, tuple[int, ...]]
IndexSet = Union[tuple[int, ...], tuple[tuple[int, ...], ...]]

PER_LAYER_FIELDS = ("num_heads", "query_groups", "head_size", "intermediate_size")
INDEX_FIELDS = ("layer_indices", "embd_indices", "head_indices", "query_group_indices",
                "head_size_indices", "intermediate_indices")
PER_LAYER_INDEX_FIELDS = ("head_indices", "query_group_indices", "head_size_indices", "intermediate_indices")

# whittle's names, so users can bring their configs (sub_network_* from GPT.set_sub_network,
# sampled_* from its fine-grained samplers).
WHITTLE_KEYS = {
    "sub_network_n_layers": "n_layers",
    "sub_network_n_embd": "n_embd",
    "sub_network_num_heads": "num_heads",
    "sub_network_query_groups": "query_groups",
    "sub_network_head_size": "head_size",
    "sub_network_intermediate_size": "intermediate_size",
    "sampled_layer_indices": "layer_indices",
    "sampled_embd_indices": "embd_indices",
    "sampled_head_indices": "head_indices",
    "sampled_query_group_indices": "query_group_indices",
    "sampled_head_size_indices": "head_size_indices",
    "sampled_intermediate_indices": "intermediate_indices",
}
# The vocabulary (issue #13): kept token ids. Not in INDEX_FIELDS, which the structured search
# spaces parse; a vocabulary choice is handled beside them (subnas.vocab).
VOCAB_FIELDS = ("vocab_size", "vocab_indices")


_KEYS: dict[tuple[int, SubNetwork], tuple[Any, str]] = {}


class SubNetworkError(ValueError):
    """A sub-network that the model cannot run; the message names the field and what is legal."""


SCALAR_FIELDS = ("n_layers", "n_embd", "vocab_size")
FLAT_INDEX_FIELDS = ("layer_indices", "embd_indices", "vocab_indices")

# What each kind of field takes, for error messages (the range is checked against the model later,
# in `SubNetwork.resolve`, because only the model knows it).
_LEGAL = {
    "scalar": "a whole number such as 4 (or leave the field out for the full model)",
    "per_layer": "a whole number such as 4 (the same in every kept layer) or a list of whole numbers, "
                 "one per kept layer, such as [4, 2, 4]",
    "flat_index": "a list of whole-number indices such as [0, 1, 5]",
    "per_layer_index": "a list of whole-number indices such as [0, 1, 5] (the same in every kept layer) "
                       "or one such list per kept layer, such as [[0, 1], [2, 3]]",
}


def _show(value: Any, limit: int = 60) -> str:
    """``value`` as JSON-ish text, shortened: index sets can hold 1e5 numbers."""
    text = json.dumps(_thaw(value), default=repr)
    return text if len(text) <= limit else text[:limit - 4] + " ..."


def _as_int(value: Any) -> int | None:
    """``value`` as an int, or ``None`` if it is not a whole number (bools and floats are not:
    ``4.5`` must not become 4, and JSON ``true`` is a typo, not 1)."""
    if isinstance(value, bool) or not hasattr(value, "__index__"):
        return None
    return int(value.__index__())


def _int_list(value: Any) -> tuple[int, ...] | None:
    """A list of whole numbers as a tuple, or ``None`` if ``value`` is not one."""
    if not isinstance(value, (list, tuple)):
        return None
    if all(type(v) is int for v in value):  # fast path: fine-grained index sets hold ~1e5 ints
        return tuple(value)  # a tuple stays the same object (search spaces rely on sharing it)
    ints = [_as_int(v) for v in value]
    return None if any(i is None for i in ints) else tuple(ints)  # type: ignore[arg-type]


def _freeze(name: str, value: Any) -> Any:
    """Check the type of one field's value and make it hashable (lists become tuples).

    Only the shape of the value is checked here; whether it fits a model is `resolve`'s job.
    """
    kind = ("scalar" if name in SCALAR_FIELDS else "per_layer" if name in PER_LAYER_FIELDS
            else "flat_index" if name in FLAT_INDEX_FIELDS else "per_layer_index")
    frozen: Any = None
    if kind in ("scalar", "per_layer"):
        frozen = _as_int(value)
    if frozen is None and kind in ("per_layer", "flat_index", "per_layer_index"):
        frozen = _int_list(value)
    if frozen is None and kind == "per_layer_index" and value and isinstance(value, (list, tuple)) \
            and all(isinstance(v, (list, tuple)) for v in value):
        lists = [_int_list(v) for v in value]
        frozen = None if any(x is None for x in lists) else tuple(lists)
    if frozen is None:
        raise SubNetworkError(f"{name}={_show(value)} is not valid: {name} takes {_LEGAL[kind]}")
    return frozen


def _thaw(value: Any) -> Any:
    if isinstance(value, tuple):
        return [_thaw(v) for v in value]
    return value


@dataclass(frozen=True)
class SubNetwork:
    """A structured sub-network of a decoder-only LM.

    Every field is optional; ``None`` means "as in the full model". Per-layer fields take an int
    (the same in every kept layer) or one value per kept layer. Index sets take a list of original
    indices (the same for every layer) or one list per kept layer.

    ``vocab_size`` / ``vocab_indices`` prune the vocabulary: the kept token ids (original
    numbering; the sub-network's token ``j`` is the ``j``-th smallest kept id). ``vocab_size``
    alone keeps the first n ids; `subnas.vocab.VocabOrder` writes the most frequent tokens on a
    calibration corpus (plus every token needed so any text still encodes) as explicit indices.

    Example:
        >>> s = SubNetwork(n_layers=4, n_embd=256, num_heads=4, intermediate_size=512)
        >>> SubNetwork.from_dict(s.to_dict()) == s
        True
    """

    n_layers: int | None = None
    n_embd: int | None = None
    num_heads: PerLayerInt | None = None
    query_groups: PerLayerInt | None = None
    head_size: PerLayerInt | None = None
    intermediate_size: PerLayerInt | None = None
    layer_indices: tuple[int, ...] | None = None
    embd_indices: tuple[int, ...] | None = None
    head_indices: IndexSet | None = None
    query_group_indices: IndexSet | None = None
    head_size_indices: IndexSet | None = None
    intermediate_indices: IndexSet | None = None
    vocab_size: int | None = None
    vocab_indices: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if value is not None:
                object.__setattr__(self, f.name, _freeze(f.name, value))

    # ----------------------------------------------------------------- serialisation
    def to_dict(self) -> dict[str, Any]:
        """The JSON form: only the fields that are set, lists instead of tuples."""
        return {f.name: _thaw(getattr(self, f.name)) for f in fields(self) if getattr(self, f.name) is not None}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SubNetwork:
        """Read our keys or whittle's ``sub_network_*`` / ``sampled_*`` keys."""
        known = {f.name for f in fields(cls)}
        kwargs: dict[str, Any] = {}
        for key, value in data.items():
            name = WHITTLE_KEYS.get(key, key)
            if name not in known:
                raise SubNetworkError(
                    f"unknown sub-network key {key!r}; known keys: {sorted(known)} "
                    f"(whittle's {sorted(WHITTLE_KEYS)} are accepted too)"
                )
            if name in kwargs:
                raise SubNetworkError(f"sub-network key {name!r} is given twice (once under a whittle name)")
            kwargs[name] = value
        return cls(**kwargs)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> SubNetwork:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise SubNetworkError(f"not valid JSON ({exc}); a sub-network file holds one JSON object "
                                  'such as {"n_layers": 4, "intermediate_size": 512}') from None
        if not isinstance(data, dict):
            raise SubNetworkError(f"holds a JSON {type(data).__name__}, not an object; a sub-network file holds "
                                  'one JSON object such as {"n_layers": 4, "intermediate_size": 512}')
        return cls.from_dict(data)

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the JSON form atomically (write to a temporary file, then rename)."""
        from subnas._io import atomic_write_text

        atomic_write_text(Path(path), json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n")

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> SubNetwork:
        """Read a sub-network JSON file: any readable path, including a pipe such as bash's
        ``<(echo '{"n_layers": 4}')`` (``/dev/fd/N``), which is read exactly once."""
        p = Path(path)
        try:
            text = p.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise SubNetworkError(f"sub-network file {str(p)!r} does not exist; give the path of a JSON file "
                                  'such as {"n_layers": 4}') from None
        except IsADirectoryError:
            raise SubNetworkError(f"sub-network file {str(p)!r} is a folder; give the path of a JSON file "
                                  "(e.g. a best_*.json written by subnas search)") from None
        except UnicodeDecodeError:
            raise SubNetworkError(f"sub-network file {str(p)!r} is not text; give a JSON file") from None
        except OSError as exc:
            raise SubNetworkError(f"cannot read sub-network file {str(p)!r}: {exc.strerror or exc}") from None
        try:
            return cls.from_json(text)
        except SubNetworkError as exc:
            raise SubNetworkError(f"{p}: {exc}") from None

    @classmethod
    def coerce(cls, value: Any) -> Any:
        """The one conversion of what users and callers pass as a sub-network: ``None`` and a
        `SubNetwork` or `ResolvedSubNetwork` as they are, a dict as `from_dict` reads it, a path as
        `load` reads the file.

        Example:
            >>> SubNetwork.coerce({"n_layers": 4}) == SubNetwork(n_layers=4), SubNetwork.coerce(None)
            (True, None)
        """
        if value is None or isinstance(value, (SubNetwork, ResolvedSubNetwork)):
            return value
        if isinstance(value, dict):
            return cls.from_dict(value)
        if isinstance(value, (str, os.PathLike)):
            return cls.load(value)
        raise SubNetworkError(f"a sub-network is a SubNetwork, a dict or a JSON file path, not {type(value).__name__}")

    # ----------------------------------------------------------------- resolution
    def resolve(self, config: SubnasConfig) -> ResolvedSubNetwork:
        """Validate against ``config`` and make every choice explicit (raises `SubNetworkError`)."""
        return _resolve(self, config)

    def key(self, config: SubnasConfig) -> str:
        """The identity of the sub-network in ``config``'s model: equal keys <=> the same selected units.

        The hash of the resolved selection (every index explicit), so a coarse and a fine-grained
        description of the same units share a key (search dedup, recorded fitness tables).
        Memoised per config: a search asks for the key of the same candidate several times a trial.

        Example:
            >>> cfg = SubnasConfig(num_hidden_layers=4)
            >>> SubNetwork(n_layers=2).key(cfg) == SubNetwork(layer_indices=[0, 1]).key(cfg)
            True
        """
        memo = (id(config), self)
        hit = _KEYS.get(memo)
        if hit is not None and hit[0] is config:  # the entry holds its config: ids are never reused
            return hit[1]
        key = hashlib.sha1(self.resolve(config).to_subnetwork().to_json().encode()).hexdigest()
        if len(_KEYS) > 8192:
            _KEYS.clear()
        _KEYS[memo] = (config, key)
        return key


@dataclass(frozen=True)
class LayerSelection:
    """What one kept layer keeps, as original indices of the full model."""

    layer: int
    groups: tuple[int, ...]
    heads: tuple[int, ...]  # group-major: the heads of groups[0], then of groups[1], ...
    rotary_pairs: tuple[int, ...]  # pair p keeps head dims p and p + R/2
    head_dims: tuple[int, ...]  # the sub-network's head layout: pair firsts, pair seconds, pass dims
    neurons: tuple[int, ...]

    @property
    def num_heads(self) -> int:
        return len(self.heads)

    @property
    def query_groups(self) -> int:
        return len(self.groups)

    @property
    def head_size(self) -> int:
        return len(self.head_dims)

    @property
    def rotary_dim(self) -> int:
        return 2 * len(self.rotary_pairs)

    @property
    def intermediate_size(self) -> int:
        return len(self.neurons)


@dataclass(frozen=True)
class ResolvedSubNetwork:
    """A validated sub-network with every index explicit; hashable (used to deduplicate)."""

    embd: tuple[int, ...]
    layers: tuple[LayerSelection, ...] = field(default_factory=tuple)
    vocab: tuple[int, ...] | None = None  # kept token ids, increasing; None: the whole vocabulary

    def vocab_size(self, config: SubnasConfig) -> int:
        """Tokens kept: ``len(vocab)``, or the model's vocabulary size when it is not pruned."""
        return config.vocab_size if self.vocab is None else len(self.vocab)

    def to_subnetwork(self) -> SubNetwork:
        """The explicit (fine-grained) `SubNetwork` that resolves back to this selection."""
        return SubNetwork(
            n_layers=len(self.layers),
            n_embd=len(self.embd),
            layer_indices=tuple(s.layer for s in self.layers),
            embd_indices=self.embd,
            num_heads=tuple(s.num_heads for s in self.layers),
            query_groups=tuple(s.query_groups for s in self.layers),
            head_size=tuple(s.head_size for s in self.layers),
            intermediate_size=tuple(s.intermediate_size for s in self.layers),
            head_indices=tuple(s.heads for s in self.layers),
            query_group_indices=tuple(s.groups for s in self.layers),
            head_size_indices=tuple(tuple(sorted(s.head_dims)) for s in self.layers),
            intermediate_indices=tuple(s.neurons for s in self.layers),
            vocab_size=None if self.vocab is None else len(self.vocab),
            vocab_indices=self.vocab,
        )


# --------------------------------------------------------------------------- helpers


def _check_indices(name: str, idx: Sequence[int], size: int, where: str = "") -> tuple[int, ...]:
    bad = [i for i in idx if not 0 <= i < size]
    if bad:
        raise SubNetworkError(f"{name}{where}: index {bad[0]} is out of range; legal indices are 0..{size - 1}")
    if len(set(idx)) != len(idx):
        dup = next(i for i in idx if list(idx).count(i) > 1)
        raise SubNetworkError(f"{name}{where}: index {dup} appears more than once; indices must be unique")
    if not idx:
        raise SubNetworkError(f"{name}{where}: an index set must keep at least one index")
    return tuple(sorted(idx))


def _check_size(name: str, value: int, full: int, where: str = "") -> int:
    if not 1 <= value <= full:
        raise SubNetworkError(f"{name}={value}{where} is illegal; legal values are 1..{full} (the full model has {full})")
    return value


def _per_layer(sub: SubNetwork, name: str, n: int) -> list[Any]:
    value = getattr(sub, name)
    if value is None or isinstance(value, int):
        return [value] * n
    if len(value) != n:
        raise SubNetworkError(f"{name} has {len(value)} per-layer values but the sub-network keeps {n} layers; "
                              f"give one value per kept layer or a single int")
    return list(value)


def _per_layer_index(sub: SubNetwork, name: str, n: int) -> list[tuple[int, ...] | None]:
    value = getattr(sub, name)
    if value is None:
        return [None] * n
    if all(isinstance(v, int) for v in value):
        return [value] * n
    if not all(isinstance(v, tuple) for v in value):
        raise SubNetworkError(f"{name} must be a list of indices or a list of such lists (one per kept layer)")
    if len(value) != n:
        raise SubNetworkError(f"{name} has {len(value)} per-layer index lists but the sub-network keeps {n} layers")
    return list(value)


def default_query_groups(num_heads: int, full_heads: int, full_groups: int) -> int:
    """Groups kept when only ``num_heads`` is given: the most groups (<= the model's) that split the
    heads evenly with no more heads per group than the model has (MHA: one head per group)."""
    per_group = full_heads // full_groups
    for g in range(min(full_groups, num_heads), 0, -1):
        if num_heads % g == 0 and num_heads // g <= per_group:
            return g
    raise SubNetworkError(
        f"num_heads={num_heads} cannot be split into at most {full_groups} query groups with at most "
        f"{per_group} heads each; legal num_heads are multiples g*k with g<={full_groups}, k<={per_group}"
    )


@functools.lru_cache(maxsize=None)
def _first(n: int) -> tuple[int, ...]:
    """``tuple(range(n))``, shared: coarse choices resolve to these for every candidate."""
    return tuple(range(n))


@functools.lru_cache(maxsize=4096)
def coarse_head_dims(head_size: int, full_head_size: int, rotary_dim: int, where: str = "") -> tuple[int, ...]:
    """The first-n head dims for a head size: rotary pairs in proportion, then pass-through dims."""
    _check_size("head_size", head_size, full_head_size, where)
    pairs = (head_size * rotary_dim) // (2 * full_head_size)
    passes = head_size - 2 * pairs
    if passes > full_head_size - rotary_dim:
        # Only possible when every dim is rotary: an odd head size would split a rotary pair.
        raise SubNetworkError(
            f"head_size={head_size}{where} would split a rotary pair: this model rotates all "
            f"{rotary_dim} head dims in pairs, so the head size must be even (2..{full_head_size})"
        )
    half = rotary_dim // 2
    return (tuple(range(pairs)) + tuple(half + p for p in range(pairs))
            + tuple(range(rotary_dim, rotary_dim + passes)))


def _resolve(sub: SubNetwork, config: SubnasConfig) -> ResolvedSubNetwork:
    L, E = config.num_hidden_layers, config.hidden_size
    if sub.layer_indices is not None:
        layers = list(sub.layer_indices)
        _check_indices("layer_indices", layers, L)
        if layers != sorted(layers):
            raise SubNetworkError(f"layer_indices {layers} must be increasing: a sub-network keeps its layers "
                                  f"in the model's order")
        if sub.n_layers is not None and sub.n_layers != len(layers):
            raise SubNetworkError(f"n_layers={sub.n_layers} disagrees with the {len(layers)} layer_indices given")
    else:
        n = L if sub.n_layers is None else _check_size("n_layers", sub.n_layers, L)
        layers = list(range(n))
    n = len(layers)

    if sub.embd_indices is not None:
        embd = _check_indices("embd_indices", sub.embd_indices, E)
        if sub.n_embd is not None and sub.n_embd != len(embd):
            raise SubNetworkError(f"n_embd={sub.n_embd} disagrees with the {len(embd)} embd_indices given")
    else:
        embd = _first(E if sub.n_embd is None else _check_size("n_embd", sub.n_embd, E))

    heads_l = _per_layer(sub, "num_heads", n)
    groups_l = _per_layer(sub, "query_groups", n)
    hs_l = _per_layer(sub, "head_size", n)
    d_l = _per_layer(sub, "intermediate_size", n)
    head_idx_l = _per_layer_index(sub, "head_indices", n)
    group_idx_l = _per_layer_index(sub, "query_group_indices", n)
    dim_idx_l = _per_layer_index(sub, "head_size_indices", n)
    neuron_idx_l = _per_layer_index(sub, "intermediate_indices", n)

    # Read the config's lists once: attribute access on a transformers config is slow, and search
    # resolves every candidate.
    full_heads, full_groups = config.num_attention_heads, config.num_key_value_heads
    full_hs, full_rot, full_d = config.head_dim, config.rotary_dim, config.intermediate_size
    selections = []
    for j, layer in enumerate(layers):
        where = f" (kept layer {j} = model layer {layer})" if n > 1 or layer else ""
        H, G = full_heads[layer], full_groups[layer]
        Hs, R, D = full_hs[layer], full_rot[layer], full_d[layer]
        per_group = H // G

        # --- query groups and heads
        groups: tuple[int, ...]
        if group_idx_l[j] is not None:
            groups = _check_indices("query_group_indices", group_idx_l[j], G, where)
        elif head_idx_l[j] is not None:
            _check_indices("head_indices", head_idx_l[j], H, where)
            groups = tuple(sorted({h // per_group for h in head_idx_l[j]}))
        else:
            h = H if heads_l[j] is None else _check_size("num_heads", heads_l[j], H, where)
            g = groups_l[j] if groups_l[j] is not None else (G if heads_l[j] is None else default_query_groups(h, H, G))
            groups = tuple(range(_check_size("query_groups", g, G, where)))
        g = len(groups)
        if groups_l[j] is not None and groups_l[j] != g:
            raise SubNetworkError(f"query_groups={groups_l[j]}{where} disagrees with the {g} query groups "
                                  f"selected by the index sets")
        if head_idx_l[j] is not None:
            hidx = _check_indices("head_indices", head_idx_l[j], H, where)
            by_group = {grp: [h for h in hidx if h // per_group == grp] for grp in groups}
            stray = [h for h in hidx if h // per_group not in groups]
            if stray:
                raise SubNetworkError(f"head_indices{where}: head {stray[0]} belongs to query group "
                                      f"{stray[0] // per_group}, which is not kept (kept groups: {list(groups)})")
            counts = {len(v) for v in by_group.values()}
            if len(counts) != 1:
                raise SubNetworkError(f"head_indices{where}: every kept query group must keep the same number of "
                                      f"heads; got {[len(by_group[grp]) for grp in groups]} for groups {list(groups)}")
            heads = tuple(h for grp in groups for h in by_group[grp])
        else:
            h = heads_l[j] if heads_l[j] is not None else g * per_group
            _check_size("num_heads", h, H, where)
            if h % g:
                raise SubNetworkError(f"num_heads={h}{where} is not divisible by query_groups={g}; "
                                      f"legal num_heads are multiples of {g} up to {g * per_group}")
            if h // g > per_group:
                raise SubNetworkError(f"num_heads={h}{where} puts {h // g} heads in each of {g} query groups, but the "
                                      f"model has only {per_group} per group; legal: {g}..{g * per_group} in steps of {g}")
            heads = tuple(grp * per_group + k for grp in groups for k in range(h // g))
        if heads_l[j] is not None and heads_l[j] != len(heads):
            raise SubNetworkError(f"num_heads={heads_l[j]}{where} disagrees with the {len(heads)} head_indices given")

        # --- head dims (rotary pairs stay together)
        half = R // 2
        if dim_idx_l[j] is not None:
            dims = set(_check_indices("head_size_indices", dim_idx_l[j], Hs, where))
            for p in range(half):
                if (p in dims) != (p + half in dims):
                    raise SubNetworkError(
                        f"head_size_indices{where} would split rotary pair ({p}, {p + half}): keep both or neither "
                        f"(this model rotates head dims 0..{R - 1} in pairs (i, i+{half}))")
            pairs = tuple(p for p in range(half) if p in dims)
            head_dims = pairs + tuple(p + half for p in pairs) + tuple(sorted(d for d in dims if d >= R))
            if hs_l[j] is not None and hs_l[j] != len(head_dims):
                raise SubNetworkError(f"head_size={hs_l[j]}{where} disagrees with the {len(head_dims)} "
                                      f"head_size_indices given")
        else:
            head_dims = coarse_head_dims(Hs if hs_l[j] is None else hs_l[j], Hs, R, where)
            pairs = _first(sum(1 for d in head_dims if d < half))

        # --- MLP neurons
        if neuron_idx_l[j] is not None:
            neurons = _check_indices("intermediate_indices", neuron_idx_l[j], D, where)
            if d_l[j] is not None and d_l[j] != len(neurons):
                raise SubNetworkError(f"intermediate_size={d_l[j]}{where} disagrees with the {len(neurons)} "
                                      f"intermediate_indices given")
        else:
            neurons = _first(D if d_l[j] is None else _check_size("intermediate_size", d_l[j], D, where))

        selections.append(LayerSelection(layer=layer, groups=groups, heads=heads, rotary_pairs=tuple(pairs),
                                         head_dims=head_dims, neurons=neurons))
    return ResolvedSubNetwork(embd=embd, layers=tuple(selections), vocab=_resolve_vocab(sub, config))


def _resolve_vocab(sub: SubNetwork, config: SubnasConfig) -> tuple[int, ...] | None:
    """Kept token ids, increasing, or ``None`` for the whole vocabulary (so an unpruned
    sub-network resolves to the same value however it is written)."""
    V = config.vocab_size
    if sub.vocab_indices is not None:
        vocab = _check_indices("vocab_indices", sub.vocab_indices, V)
        if sub.vocab_size is not None and sub.vocab_size != len(vocab):
            raise SubNetworkError(f"vocab_size={sub.vocab_size} disagrees with the {len(vocab)} vocab_indices given")
    elif sub.vocab_size is not None:
        vocab = _first(_check_size("vocab_size", sub.vocab_size, V))
    else:
        return None
    return None if len(vocab) == V else vocab
