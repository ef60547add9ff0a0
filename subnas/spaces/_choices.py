"""Per-dimension choices of a search space: what the user may write, and the defaults.

The paper (§2.1, Table 1) lets every dimension take any value up to the model's: e in [1, E],
h in [1, H], hs in {4, 6, ..., Hs}, l in [1, L], d in [1, D]. Our defaults keep its ranges but use
hardware-friendly steps (docs/design.md#the-method): embedding widths in steps of 8, MLP widths in steps of 64
(the full width always included). Users pass any of these forms per dimension::

    n_embd=range(64, 577, 64)          # a range
    head_size=[32, 48, 64]             # an explicit set
    intermediate_size="256:1536:128"   # "lo:hi[:step]", hi inclusive (CLI / YAML friendly)
    n_layers={"min": 4, "max": 30}     # a mapping with min, max and optional step
    query_groups=3                     # a fixed value
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from subnas.config import SubnasConfig
from subnas.subnet import SubNetworkError, coarse_head_dims
from subnas.vocab import VocabOrder

#: Dimensions by SubNetwork field name, with the paper's short names (§2.2).
DIMENSIONS = {"n_layers": "l", "n_embd": "e", "num_heads": "h", "query_groups": "g",
              "head_size": "hs", "intermediate_size": "d"}


class SearchSpaceError(ValueError):
    """A search space that cannot be built, or a sub-network that is not a member of it."""


@dataclass(frozen=True)
class ModelShape:
    """The full model's dimensions, the same in every layer."""

    layers: int
    embd: int
    heads: int
    groups: int
    head_size: int
    rotary: int
    inter: int

    @property
    def per_group(self) -> int:
        return self.heads // self.groups

    @property
    def passes(self) -> int:
        """Head dims outside the rotary part (GPT-NeoX's partial rotary, GPT-2's whole head)."""
        return self.head_size - self.rotary

    @classmethod
    def of(cls, config: SubnasConfig) -> ModelShape:
        # Layer-wise and fine-grained operators move values between layers (crossover, layer
        # growth), which is only meaningful when every layer offers the same ranges.
        per_layer = {name: set(getattr(config, name)) for name in
                     ("num_attention_heads", "num_key_value_heads", "head_dim", "rotary_dim", "intermediate_size")}
        uneven = [f"{name}={sorted(v)}" for name, v in per_layer.items() if len(v) > 1]
        if uneven:
            raise SearchSpaceError("the built-in search spaces need a model whose layers all have the same shape; "
                                   f"this one varies: {', '.join(uneven)}")
        return cls(config.num_hidden_layers, config.hidden_size, config.num_attention_heads[0],
                   config.num_key_value_heads[0], config.head_dim[0], config.rotary_dim[0],
                   config.intermediate_size[0])

    def head_size_legal(self, hs: int, *, fine: bool) -> bool:
        """Whether ``hs`` head dims can be kept without splitting a rotary pair (i, i + R/2)."""
        if not 1 <= hs <= self.head_size:
            return False
        if fine:  # any p pairs and q pass dims with 2p + q = hs
            return hs % 2 == 0 or self.passes > 0
        try:  # coarse: the proportional first-n rule of subnas.subnet
            coarse_head_dims(hs, self.head_size, self.rotary)
        except SubNetworkError:
            return False
        return True


def parse_choices(name: str, value: Any, full: int) -> tuple[int, ...]:
    """One dimension's choices as a sorted tuple, each checked to lie in 1..full."""
    if isinstance(value, bool):
        raise SearchSpaceError(f"{name}: expected integers, got {value!r}")
    if isinstance(value, int):
        values: Iterable[Any] = [value]
    elif isinstance(value, str):
        parts = value.replace(" ", "").split(":")
        try:
            if len(parts) in (2, 3):
                values = range(int(parts[0]), int(parts[1]) + 1, int(parts[2]) if len(parts) == 3 else 1)
            else:
                values = [int(v) for v in value.split(",")]
        except ValueError:
            raise SearchSpaceError(f"{name}: cannot read {value!r}; write 'lo:hi', 'lo:hi:step' or 'a,b,c'") from None
    elif isinstance(value, Mapping):
        unknown = set(value) - {"min", "max", "step"}
        if unknown or not {"min", "max"} <= set(value):
            raise SearchSpaceError(f"{name}: a mapping needs keys min, max and optionally step; got {sorted(value)}")
        values = range(int(value["min"]), int(value["max"]) + 1, int(value.get("step", 1)))
    elif isinstance(value, Iterable):
        values = value
    else:
        raise SearchSpaceError(f"{name}: expected an int, a range, a list, 'lo:hi[:step]' or a mapping, got {value!r}")
    out = sorted({int(v) for v in values})
    bad = [v for v in out if not 1 <= v <= full]
    if not out or bad:
        raise SearchSpaceError(f"{name}: choices must be non-empty and lie in 1..{full} (the model's value); "
                               f"got {bad or 'no values'}")
    return tuple(out)


def _steps(full: int, step: int) -> tuple[int, ...]:
    return tuple(sorted(set(range(step, full + 1, step)) | {full}))


@dataclass(frozen=True)
class Choices:
    """Legal values of every dimension; ``attention`` holds the legal (num_heads, query_groups) pairs."""

    n_layers: tuple[int, ...]
    n_embd: tuple[int, ...]
    attention: tuple[tuple[int, int], ...]
    head_size: tuple[int, ...]
    intermediate_size: tuple[int, ...]

    @classmethod
    def for_model(cls, shape: ModelShape, *, fine: bool, **given: Any) -> Choices:
        unknown = set(given) - set(DIMENSIONS)
        if unknown:
            raise SearchSpaceError(f"unknown dimension(s) {sorted(unknown)}; choices can be given for "
                                   f"{list(DIMENSIONS)}")
        s = shape
        defaults: dict[str, Any] = {
            "n_layers": range(1, s.layers + 1), "n_embd": _steps(s.embd, 8),
            "num_heads": range(1, s.heads + 1), "query_groups": range(1, s.groups + 1),
            # Paper Table 1: hs in {4, 6, ..., Hs}; tiny heads fall back to what exists.
            "head_size": _steps(s.head_size, 2)[1:] or (s.head_size,),
            "intermediate_size": _steps(s.inter, 64),
        }
        full = {"n_layers": s.layers, "n_embd": s.embd, "num_heads": s.heads, "query_groups": s.groups,
                "head_size": s.head_size, "intermediate_size": s.inter}
        c = {name: parse_choices(name, given.get(name, defaults[name]), full[name]) for name in DIMENSIONS}

        head_sizes = tuple(v for v in c["head_size"] if s.head_size_legal(v, fine=fine))
        if "head_size" in given and head_sizes != c["head_size"]:
            bad = sorted(set(c["head_size"]) - set(head_sizes))
            raise SearchSpaceError(f"head_size choices {bad} would split rotary pairs: this model rotates "
                                   f"{s.rotary} of {s.head_size} head dims in pairs (i, i+{s.rotary // 2})")
        # GQA rule: g query groups of k <= H/G heads each, h = g*k (MHA: h == g; MQA: g == 1).
        attention = tuple((h, g) for h in c["num_heads"] for g in c["query_groups"]
                          if h % g == 0 and h // g <= s.per_group)
        unpaired = ("num_heads" in given and {h for h, _ in attention} != set(c["num_heads"])) or (
            "query_groups" in given and {g for _, g in attention} != set(c["query_groups"]))
        if unpaired:  # the defaults are filtered silently, the user's own values are not
            raise SearchSpaceError(
                f"num_heads {list(c['num_heads'])} and query_groups {list(c['query_groups'])} do not pair up: "
                f"every num_heads must be g*k for a chosen g with k <= {s.per_group} heads per group, and every "
                f"query_groups value must divide some chosen num_heads")
        if not head_sizes or not attention:
            raise SearchSpaceError("no legal head size or (num_heads, query_groups) pair is left in the choices")
        return cls(c["n_layers"], c["n_embd"], attention, head_sizes, c["intermediate_size"])


# ---------------------------------------------------------------------------- the vocabulary dimension (issue #13)
#: A search space's vocabulary choices when asked for ``vocab_size="default"`` (plus the full one).
DEFAULT_VOCAB_CHOICES = (4096, 8192, 16384, 32768)


def parse_vocab_choices(value: Any, full: int, min_size: int = 1) -> tuple[int, ...]:
    """Vocabulary sizes from ``"4k,8k,16k,32k,full"``, ``"default"``, ints or a list of them."""
    if isinstance(value, str):
        items: list[Any] = ["default"] if value.strip() == "default" else [v.strip() for v in value.split(",")]
    elif isinstance(value, int) and not isinstance(value, bool):
        items = [value]
    else:
        items = list(value)
    out: set[int] = set()
    for item in items:
        text = str(item).strip().lower()
        try:
            if text == "default":
                out |= {v for v in DEFAULT_VOCAB_CHOICES if v < full} | {full}
            elif text == "full":
                out.add(full)
            elif text.endswith("k"):
                out.add(int(float(text[:-1]) * 1024))
            else:
                out.add(int(text))
        except ValueError:
            raise SearchSpaceError(f"vocab_size: cannot read {item!r}; write sizes such as '4k,8k,16k,32k,full', "
                                   f"a list of whole numbers, or 'default'") from None
    bad = sorted(v for v in out if not min_size <= v <= full)
    if not out or bad:
        raise SearchSpaceError(f"vocab_size: choices must lie in {min_size}..{full} (the special and byte tokens any "
                               f"text needs .. the model's vocabulary); got {bad or 'no values'}")
    return tuple(sorted(out))


@dataclass(frozen=True)
class VocabChoice:
    """A search space's vocabulary dimension: the sizes, and which ids each size keeps."""

    choices: tuple[int, ...]
    full: int
    order: VocabOrder | None = None  # None: the first n ids (a bare config has no tokenizer)

    def fields(self, n: int) -> dict[str, Any]:
        """The `SubNetwork` fields that keep ``n`` tokens (none for the whole vocabulary)."""
        if n == self.full or n == 0:
            return {}
        if self.order is None:
            return {"vocab_size": n}
        return {"vocab_indices": self.order.kept(n)}

    @classmethod
    def build(cls, value: Any, config: Any, order: VocabOrder | None) -> VocabChoice:
        full = config.vocab_size
        return cls(parse_vocab_choices(value, full, order.min_size if order is not None else 1), full, order)
