"""`UnitOrder`: every unit of a model ranked, so that "the first n" can mean "the n most important".

The paper's coarse spaces keep the *first* n layers, channels, heads and neurons (§2.1). On real
models that is the wrong order: SmolLM2-135M's last layer is among its most important, and the
first 20 of its 30 layers are orders of magnitude worse than the 20 most influential ones
(measured in docs/search.md; docs/design.md#measure-the-product). Minitron sorts units by
importance and then slices; `UnitOrder` is that sort, computed from
calibration passes (`subnas.evaluation.activation_scores` for width units,
`subnas.evaluation.layer_removal_scores` for layers) and used by the search spaces with
``order="importance"`` (the default when the space is built from a model with weights).

A sub-network in importance order is written with explicit index sets in the *original* model's
numbering (`UnitOrder.subnetwork`), so a file written by a search means the same units whenever it
is handed to ``subnas evaluate`` / ``extract`` / ``distill`` with the original model — nothing
needs to remember the order. Layers keep their original order inside a sub-network; "n layers"
means the n most influential ones.

How each component is ranked (per layer where the component is per layer):

* layers: the rise in calibration loss when the layer alone is skipped (``layers="removal"``,
  the default), or block influence, 1 − cos(x_in, x_out) (ShortGPT; paper Appendix E;
  ``layers="block-influence"``, the one-shot prune of the literature);
* embedding channels: mean |output| of every norm (Minitron);
* query groups: the summed scores of their heads, so heads move with their group (GQA/MQA);
  heads inside a kept group: their own score (mean L2 norm of the head's attention output);
* head dimensions: rotary pairs (i, i + R/2) ranked by their summed score, so RoPE pairs stay
  together; pass-through dims by their own score;
* MLP neurons: mean |activation| entering the down projection.

Example:
    >>> from subnas import SubnasConfig
    >>> cfg = SubnasConfig(num_hidden_layers=4, hidden_size=16, num_attention_heads=2, intermediate_size=8)
    >>> order = UnitOrder.natural(cfg)
    >>> order.subnetwork(n_layers=2, n_embd=8, num_heads=1, query_groups=1, head_size=8,
    ...                  intermediate_size=4).resolve(cfg) == SubNetwork(
    ...     n_layers=2, n_embd=8, num_heads=1, head_size=8, intermediate_size=4).resolve(cfg)
    True
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Sequence

import torch

from subnas.config import SubnasConfig
from subnas.subnet import SubNetwork, SubNetworkError, coarse_head_dims

Ranking = tuple[int, ...]  # unit indices, most important first


def _ranked(scores: torch.Tensor) -> Ranking:
    # Stable sort on the negated scores: ties keep the natural order, so the ranking is reproducible.
    return tuple(int(i) for i in torch.sort(-scores.double(), stable=True).indices)


@dataclass(frozen=True)
class UnitOrder:
    """Units of every component, most important first, in the original model's numbering.

    Attributes:
        layers: model layers, most important first (by removal cost or block influence).
        embd: embedding channels.
        groups: per model layer, its query groups.
        heads: per model layer, per query group (indexed by group number), head offsets in it.
        rotary_pairs: per model layer, rotary pairs p (keeping dims p and p + R/2).
        passes: per model layer, pass-through dims as offsets after the rotary part.
        neurons: per model layer, MLP neurons.
        source: what the order was computed from (informational; ``"natural"`` for the identity).
    """

    layers: Ranking
    embd: Ranking
    groups: tuple[Ranking, ...]
    heads: tuple[tuple[Ranking, ...], ...]
    rotary_pairs: tuple[Ranking, ...]
    passes: tuple[Ranking, ...]
    neurons: tuple[Ranking, ...]
    source: str = "natural"

    # ------------------------------------------------------------------ construction
    @classmethod
    def natural(cls, config: SubnasConfig) -> UnitOrder:
        """The identity order: "first n" means the first n (the paper's protocol)."""
        L = config.num_hidden_layers
        r = range
        return cls(
            layers=tuple(r(L)), embd=tuple(r(config.hidden_size)),
            groups=tuple(tuple(r(config.num_key_value_heads[i])) for i in r(L)),
            heads=tuple(tuple(tuple(r(config.num_attention_heads[i] // config.num_key_value_heads[i]))
                              for _ in r(config.num_key_value_heads[i])) for i in r(L)),
            rotary_pairs=tuple(tuple(r(config.rotary_dim[i] // 2)) for i in r(L)),
            passes=tuple(tuple(r(config.head_dim[i] - config.rotary_dim[i])) for i in r(L)),
            neurons=tuple(tuple(r(config.intermediate_size[i])) for i in r(L)),
        )

    @classmethod
    def from_scores(cls, scores: Any, config: SubnasConfig, *, source: str = "importance",
                    layer_scores: torch.Tensor | None = None) -> UnitOrder:
        """Rank every unit by `subnas.evaluation.ImportanceScores` (higher score = more important).

        ``layer_scores`` ranks the layers instead of the scores' block influence (the importance
        order passes the measured cost of skipping each layer, `layer_removal_scores`).
        """
        L = config.num_hidden_layers
        groups, heads, pairs, passes = [], [], [], []
        for i in range(L):
            H, G = config.num_attention_heads[i], config.num_key_value_heads[i]
            R, per = config.rotary_dim[i], H // G
            head = scores.heads[i].double().view(G, per)
            groups.append(_ranked(head.sum(dim=1)))
            heads.append(tuple(_ranked(head[g]) for g in range(G)))
            dims = scores.head_dims[i].double()
            pairs.append(_ranked(dims[: R // 2] + dims[R // 2: R]))
            passes.append(_ranked(dims[R:]))
        blocks = scores.blocks if layer_scores is None else layer_scores
        return cls(layers=_ranked(blocks), embd=_ranked(scores.embd), groups=tuple(groups),
                   heads=tuple(heads), rotary_pairs=tuple(pairs), passes=tuple(passes),
                   neurons=tuple(_ranked(t) for t in scores.neurons), source=source)

    # ------------------------------------------------------------------ use
    @property
    def is_natural(self) -> bool:
        return self.source == "natural"

    def kept_layers(self, n: int) -> tuple[int, ...]:
        """The ``n`` most important model layers, in the model's order."""
        return tuple(sorted(self.layers[:n]))

    def subnetwork(self, *, n_layers: int, n_embd: int, num_heads: int | Sequence[int],
                   query_groups: int | Sequence[int], head_size: int | Sequence[int],
                   intermediate_size: int | Sequence[int], ranks: Sequence[int] | None = None) -> SubNetwork:
        """The sub-network that keeps the most important units of each size, as explicit indices.

        Per-layer sizes are given by *importance rank* of the kept layers (entry j belongs to the
        j-th most important kept layer), so that dropping the last entry drops the least
        important layer; the `SubNetwork` lists them in model order. In the natural order this is
        exactly the coarse (first-n) sub-network of the same sizes, written without index sets.
        ``ranks`` keeps the layers of those importance ranks instead of the first ``n_layers``.
        """
        def per(value: int | Sequence[int]) -> list[int]:
            return [int(value)] * n_layers if isinstance(value, int) else [int(v) for v in value]

        h, g, hs, d = per(num_heads), per(query_groups), per(head_size), per(intermediate_size)
        if not len(h) == len(g) == len(hs) == len(d) == n_layers:
            raise SubNetworkError(f"per-layer sizes must have one value per kept layer ({n_layers})")
        ranked = self.layers[:n_layers] if ranks is None else tuple(self.layers[r] for r in ranks)
        by_model = sorted(range(n_layers), key=lambda j: ranked[j])  # rank positions in model order
        if self.is_natural and ranks is not None and sorted(ranks) != list(range(n_layers)):
            raise SubNetworkError("the natural order keeps the first n layers; ranks other than 0..n-1 need an "
                                  "importance order")
        if self.is_natural:
            uniform = all(len(set(v)) == 1 for v in (h, g, hs, d))
            pick = (lambda v: v[0]) if uniform else (lambda v: tuple(v[j] for j in by_model))
            return SubNetwork(n_layers=n_layers, n_embd=n_embd, num_heads=pick(h), query_groups=pick(g),
                              head_size=pick(hs), intermediate_size=pick(d))
        # Index lists are written most important first (the resolved sub-network sorts them), so
        # a fine-grained space that parses this sub-network drops the least important unit first.
        layer_idx, head_idx, group_idx, dim_idx, neuron_idx = [], [], [], [], []
        for j in by_model:
            layer = ranked[j]
            if g[j] < 1 or h[j] % g[j]:
                raise SubNetworkError(f"num_heads={h[j]} is not divisible by query_groups={g[j]}")
            groups = self.groups[layer][: g[j]]
            per_group, k = len(self.heads[layer][0]), h[j] // g[j]
            layer_idx.append(layer)
            group_idx.append(groups)
            head_idx.append(tuple(grp * per_group + o for grp in groups for o in self.heads[layer][grp][:k]))
            dim_idx.append(self._head_dims(layer, hs[j]))
            neuron_idx.append(self.neurons[layer][: d[j]])
        return SubNetwork(
            n_layers=n_layers, n_embd=n_embd, layer_indices=tuple(layer_idx), embd_indices=self.embd[:n_embd],
            num_heads=tuple(h[j] for j in by_model), query_groups=tuple(g[j] for j in by_model),
            head_size=tuple(hs[j] for j in by_model), intermediate_size=tuple(d[j] for j in by_model),
            query_group_indices=tuple(group_idx), head_indices=tuple(head_idx), head_size_indices=tuple(dim_idx),
            intermediate_indices=tuple(neuron_idx))

    def _head_dims(self, layer: int, head_size: int) -> tuple[int, ...]:
        # The same split into rotary pairs and pass-through dims as the first-n rule (so counts and
        # legality match the natural order), but the most important pairs and dims of each kind.
        pairs_rank, passes_rank = self.rotary_pairs[layer], self.passes[layer]
        R = 2 * len(pairs_rank)
        first_n = coarse_head_dims(head_size, R + len(passes_rank), R)
        p = sum(1 for x in first_n if x < R // 2)
        pairs = pairs_rank[:p]
        return pairs + tuple(x + R // 2 for x in pairs) + tuple(R + o for o in passes_rank[: head_size - 2 * p])

    # ------------------------------------------------------------------ persistence
    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> UnitOrder:
        def tup(x: Any) -> Any:
            return tuple(tup(v) for v in x) if isinstance(x, list) else x

        return cls(**{k: tup(v) for k, v in data.items()})


LAYER_CRITERIA = ("removal", "block-influence")
REMOVAL_SEQS = 8  # calibration sequences the layer-removal pass reads (its costs span 0.09-8.2 nats on SmolLM2)


def importance_order(supernet: Any, *, data: str = "default:calibration", seq_len: int = 256, num_seqs: int = 16,
                     batch_size: int = 4, layers: str = "removal", cache_dir: Path | None = None) -> UnitOrder:
    """The `UnitOrder` of a `subnas.Supernet` from calibration passes over ``data`` (cached on disk).

    Every width unit is ranked by one activation pass (`subnas.evaluation.activation_scores`).
    Layers by ``layers``: ``"removal"`` (default) — the rise in calibration loss when the layer
    alone is skipped, one pass per layer over the first `REMOVAL_SEQS` calibration sequences;
    ``"block-influence"`` — ShortGPT's 1 − cos(x_in, x_out) from the activation pass (what a
    one-shot prune in the literature uses; measured worse, see `layer_removal_scores`).
    The cache key is (model weights' identity, the calibration tokens); on SmolLM2-135M with the
    defaults the activation pass takes ~15 s and the removal passes ~1.5 min on two CPU cores, a
    cached load a few milliseconds. ``data="weights"`` ranks by weight magnitude instead (no data,
    no tokenizer needed; a weaker signal than activations; layers by their weights' norm).
    """
    from subnas.evaluation._perplexity import supernet_tokens
    from subnas.evaluation._importance import cached_layer_removal, cached_scores, magnitude_scores

    if layers not in LAYER_CRITERIA:
        raise ValueError(f"unknown layer criterion {layers!r}; choose one of {', '.join(LAYER_CRITERIA)}")
    if data == "weights":
        return UnitOrder.from_scores(magnitude_scores(supernet.model), supernet.subnas_config, source="magnitude")
    if supernet.tokenizer is None:
        raise ValueError(f"model {supernet.source!r} has no tokenizer, so the importance order has no calibration "
                         f"text to run; use calibration 'weights' (a weight-magnitude order) or order 'natural'")
    tokens = supernet_tokens(supernet, data, seq_len, num_seqs)
    previous = supernet.active
    try:
        scores = cached_scores(supernet.model, "activation", tokens=tokens, source=str(supernet.source),
                               batch_size=batch_size, cache_dir=cache_dir)
        removal = None if layers == "block-influence" else cached_layer_removal(
            supernet.model, tokens[:REMOVAL_SEQS], source=str(supernet.source), cache_dir=cache_dir,
            batch_size=batch_size)
    finally:
        supernet.set_sub_network(previous)
    digest = hashlib.sha1(tokens.numpy().tobytes()).hexdigest()[:12]
    return UnitOrder.from_scores(scores, supernet.subnas_config, source=f"importance:{data}:{digest}:layers={layers}",
                                 layer_scores=removal)


#: Beside a model written by `subnas.training.train_supernet`: the unit order it was trained in.
UNIT_ORDER_FILE = "subnas_unit_order.json"


def trained_order(folder: str | Path | None) -> UnitOrder | None:
    """The unit order a supernet in model folder ``folder`` was trained in (`UNIT_ORDER_FILE`), or None.

    Its "first n" prefixes are what that training shaped, so the importance order of such a model
    is this stored one, not one recomputed from its new weights (`subnas.spaces.resolve_order`).
    """
    path = Path(folder) / UNIT_ORDER_FILE if folder is not None else None
    if path is None or not path.is_file():
        return None
    try:
        order = json.loads(path.read_text())["order"]
        return None if order is None else UnitOrder.from_dict(order)
    except (ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"{path} cannot be read ({type(exc).__name__}: {exc}); it records the unit order the model "
                         "was trained in: restore it from the training run's model folder, or delete it to rank "
                         "units afresh") from None


def save_order(order: UnitOrder, path: Path) -> None:
    from subnas._io import atomic_write_text

    atomic_write_text(path, json.dumps(order.to_dict()) + "\n")
