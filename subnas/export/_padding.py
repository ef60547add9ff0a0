"""Zero-padding: a sub-network that no stock class expresses as-is, written as an exact stock model.

Stock `transformers` models have one width per model, so a layer-wise sub-network (its own heads,
query groups, head size and MLP width per layer) has no stock architecture — and some uniform
shapes are refused too (GPT-NeoX/GPT-2 fix head size = hidden / heads, Gemma 3 wants
hidden % heads == 0, fine-grained head dims keep RoPE pairs no stock base reproduces). Padding
every layer to one stock shape with zero weights fixes these:

* **MLP neurons** up to the widest layer: zero rows in ``gate``/``up`` (and their biases), a zero
  column in ``down``. The neuron's output is multiplied by its zero ``down`` column: it adds
  exactly 0. Under training its gradients are zero too: ``dL/d down[:, j] = a_j * delta`` with
  ``a_j = act(0 * x) * 0 = 0`` (gated) or ``act(0)`` (plain; we check ``act(0) == 0`` — true for
  GELU, SiLU, ReLU and their approximations), and ``dL/d up[j]`` and ``dL/d gate[j]`` carry the factor
  ``down[:, j]^T delta = 0``.
* **Attention heads in whole zero query groups**: zero ``q``/``k``/``v`` rows (and biases), zero
  ``o`` columns. Scores are 0, the softmax is uniform, but every value is 0, so the head outputs
  exactly 0; backward, ``dL/d out = o[:, head]^T delta = 0`` zeroes the gradients of ``v`` and of
  the scores (hence of ``q`` and ``k``), and ``dL/d o[:, head] = out * delta = 0``. QK-norm maps 0
  to 0 and RoPE rotates 0 to 0. A padded head must *not* join a real query group: it would
  average that group's real values, and although its zero ``o`` column hides that at first,
  ``dL/d o = out * delta`` is not zero, so it would come alive after one optimizer step.
* **Different heads per group between layers** (layer-wise GQA) therefore cannot be padded inside
  a group. Instead a real group serving ``k`` query heads is written as ``k / K`` stock groups of
  ``K = gcd`` heads, each with a *copy* of its key/value weights: the same function, but the
  copies are separate parameters that training may move apart (metadata: ``kv_copies``).
* **Head sizes** (different per layer, or arbitrary rotary pairs from fine-grained spaces), for
  heads without QK-norm (all families but Qwen3 and Gemma 3): each kept head dim goes to its own
  place in a stock head of ``HS`` dims — RoPE pair ``p`` of the full model to stock pair ``p``
  (dims ``p`` and ``p + r/2`` of the ``r`` rotary ones), pass-through dims after them — whose RoPE
  base reproduces the full model's frequencies for the first ``r/2`` pairs; the other dims are
  zero in ``q``, ``k``, ``v`` and ``o`` (a zero pair rotates to zero, and the gradient argument
  above holds dim by dim). One thing here is *not* zero-padding: stock
  attention scales scores by ``HS**-0.5`` instead of the layer's ``hs**-0.5``, so that layer's
  query weights carry the factor ``sqrt(HS / hs)`` — the same function, but optimizers see a
  rescaled parameter (metadata: ``query_scale``).

Zero gradients keep the zeros under AdamW (moments stay 0, so the update is 0; decoupled weight
decay scales 0 to 0) and under gradient clipping (they add nothing to the norm), so training a
zero-padded export (no copies, no query scale) is training the sub-network. tests/test_export.py
checks each claim. The embedding width is never padded: every norm averages over it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any

import torch
from transformers import PretrainedConfig
from transformers.activations import ACT2FN

from subnas.config import SubnasConfig
from subnas.families import ModelFamily, NotExpressible, StateDict
from subnas.subnet import ResolvedSubNetwork


@dataclass(frozen=True)
class PaddedShape:
    """One stock shape for every layer: ``query_groups`` groups of ``heads_per_group`` heads."""

    heads_per_group: int
    query_groups: int
    intermediate_size: int
    kv_copies: tuple[int, ...]  # per layer: stock groups written for each of its real groups
    head_size: int = 0  # 0: every layer keeps its (uniform) head size
    rotary_dim: int = 0  # rotary dims of a padded head
    head_positions: tuple[tuple[int, ...], ...] = ()  # per layer: stock head dim of each kept dim
    query_scale: tuple[float, ...] = ()  # per layer: sqrt(head_size / its own head size)

    @property
    def num_heads(self) -> int:
        return self.heads_per_group * self.query_groups


def padded_shapes(sub: SubnasConfig, full: SubnasConfig, resolved: ResolvedSubNetwork) -> list[PaddedShape]:
    """Candidate shapes that hold every layer of ``sub``, least padding first.

    Beyond the smallest group count, only those whose head count divides the hidden size are
    tried: that is what families with a divisibility rule (GPT-NeoX, GPT-2, Gemma 3) accept. Head
    sizes stay as they are when uniform with the same RoPE frequencies in every layer; otherwise
    (and as a second choice) heads are padded: to the fewest dims that hold every kept RoPE pair,
    then to the full head (whose RoPE base needs no rescaling, so any RoPE type works).
    """
    if sub.mlp_type == "plain":
        zero = ACT2FN[sub.hidden_act](torch.zeros(1))
        if float(zero) != 0.0:
            raise NotExpressible(f"activation {sub.hidden_act!r} is not 0 at 0, so padded MLP neurons would not be zero")
    per_group = [h // g for h, g in zip(sub.num_attention_heads, sub.num_key_value_heads)]
    K = math.gcd(*per_group)
    copies = tuple(k // K for k in per_group)
    g_min = max(g * c for g, c in zip(sub.num_key_value_heads, copies))
    E = sub.hidden_size
    groups = [g_min] + [G for G in range(g_min + 1, E // K + 1) if E % (K * G) == 0]
    base = PaddedShape(K, g_min, max(sub.intermediate_size), copies)
    layouts = []
    if len(set(sub.head_dim)) == 1:
        layouts.append(base)  # the family checks its RoPE frequencies (Gemma's differ by layer type)
    layouts += _head_layouts(base, sub, full, resolved)
    return [replace(layout, query_groups=G) for layout in layouts for G in groups]


def _head_layouts(base: PaddedShape, sub: SubnasConfig, full: SubnasConfig,
                  resolved: ResolvedSubNetwork) -> list[PaddedShape]:
    """Padded-head variants of ``base``; none (or `NotExpressible` when needed) if heads can't be padded.

    A stock head of ``HS`` dims rotates its first ``r = HS * R / Hs`` (the model's rotary fraction):
    a kept pair ``p`` goes to stock pair ``p`` (dims ``p`` and ``p + r/2``), a kept pass-through dim
    to the same offset after the rotary part. Candidates: the smallest head that holds every kept
    dim, the model's own head size, and head sizes that divide the hidden size (GPT-NeoX, GPT-2).
    """
    first = resolved.layers[0].layer
    Hs, R = full.head_dim[first], full.rotary_dim[first]
    why = None
    if full.qk_norm:
        why = "QK-norm averages over the head, so zero dims would change it"
    elif any(full.head_dim[s.layer] != Hs or full.rotary_dim[s.layer] != R
             or full.rope_inv_freq[s.layer] != full.rope_inv_freq[first] for s in resolved.layers):
        why = "the model's layers differ in head size or RoPE frequencies"
    if why is not None:
        if len(set(sub.head_dim)) > 1:
            raise NotExpressible(f"head sizes differ between layers ({sub.head_dim}) and cannot be padded: {why}")
        return []
    half = R // 2
    pairs = max(((d if d < half else d - half) + 1 for s in resolved.layers for d in s.head_dims if d < R), default=0)
    passes = max((d - R + 1 for s in resolved.layers for d in s.head_dims if d >= R), default=0)

    def rotary(HS: int) -> int:
        return HS * R // Hs

    def fits(HS: int) -> bool:
        r = rotary(HS)
        return HS * R % Hs == 0 and r % 2 == 0 and r // 2 >= pairs and HS - r >= passes

    # Rotary heads stop at the model's head size: beyond it there are no frequencies to keep.
    E, top = sub.hidden_size, Hs if R else max(Hs, sub.hidden_size)
    feasible = [HS for HS in range(max(sub.head_dim), top + 1) if fits(HS)]
    sizes = sorted(set(feasible[:1]) | {HS for HS in feasible if HS == Hs or E % HS == 0})
    out = []
    for HS in sizes:
        r = rotary(HS)
        positions = tuple(tuple(d if d < half else d - half + r // 2 if d < R else d - R + r for d in s.head_dims)
                          for s in resolved.layers)
        if all(p == tuple(range(HS)) for p in positions):
            continue  # nothing to pad: that is the unpadded layout
        scale = tuple(math.sqrt(HS / s.head_size) for s in resolved.layers)
        out.append(replace(base, head_size=HS, rotary_dim=r, head_positions=positions, query_scale=scale))
    return out


def padded_config(sub: SubnasConfig, shape: PaddedShape, full: SubnasConfig, resolved: ResolvedSubNetwork) -> SubnasConfig:
    data = sub.to_dict()
    for key in ("architectures", "transformers_version", "model_type", "_name_or_path"):
        data.pop(key, None)
    n = sub.num_hidden_layers
    data.update(num_attention_heads=[shape.num_heads] * n, num_key_value_heads=[shape.query_groups] * n,
                intermediate_size=[shape.intermediate_size] * n)
    if shape.head_size:
        # Pair p of the full model sits at stock pair p: the stock frequencies are the full model's first ones.
        freqs = full.rope_inv_freq[resolved.layers[0].layer][: shape.rotary_dim // 2]
        data.update(head_dim=[shape.head_size] * n, rotary_dim=[shape.rotary_dim] * n, rope_inv_freq=[freqs] * n)
    return SubnasConfig(**data)


def _rows(t: torch.Tensor, total: int) -> torch.Tensor:
    """``t`` with zero rows appended (dim 0) up to ``total``."""
    return torch.cat([t, t.new_zeros(total - t.shape[0], *t.shape[1:])]) if total > t.shape[0] else t


def _cols(t: torch.Tensor, total: int) -> torch.Tensor:
    return torch.cat([t, t.new_zeros(t.shape[0], total - t.shape[1])], dim=1) if total > t.shape[1] else t


def _heads(t: torch.Tensor, hs: int, positions: tuple[int, ...], HS: int, dim: int = 0) -> torch.Tensor:
    """Spread each ``hs``-dim head of ``t`` (along ``dim``) over ``HS`` dims at ``positions``, zeros elsewhere."""
    if HS == hs:
        return t  # head size kept (positions are the identity then)
    t = t.movedim(dim, 0)
    heads = t.reshape(-1, hs, *t.shape[1:])
    out = heads.new_zeros(heads.shape[0], HS, *heads.shape[2:])
    out[:, list(positions)] = heads
    return out.reshape(-1, *t.shape[1:]).movedim(0, dim).contiguous()


def pad_state(sub: SubnasConfig, state: StateDict, shape: PaddedShape) -> StateDict:
    """``state`` (subnas layout, one entry per layer of ``sub``) padded to ``shape`` in every layer.

    Query rows keep their order: with heads group-major, real group ``a``'s head ``t`` lands in
    stock group ``a * copies + t // K``, slot ``t % K`` — the same row. Only key/value rows are
    repeated (one copy per stock group a real group became), then zero groups follow.
    """
    out = dict(state)
    H, G, D = shape.num_heads, shape.query_groups, shape.intermediate_size
    for i in range(sub.num_hidden_layers):
        pre, c, hs = f"model.layers.{i}.", shape.kv_copies[i], sub.head_dim[i]
        HS = shape.head_size or hs
        positions = shape.head_positions[i] if shape.head_size else tuple(range(hs))
        q_scale = shape.query_scale[i] if shape.head_size else 1.0
        for param in ("weight", "bias"):
            q = state.get(f"{pre}attn.q.{param}")
            if q is not None:
                q = q * q_scale if q_scale != 1.0 else q
                out[f"{pre}attn.q.{param}"] = _rows(_heads(q, hs, positions, HS), H * HS)
            for name in ("k", "v"):
                t = state.get(f"{pre}attn.{name}.{param}")
                if t is not None:
                    t = _heads(t, hs, positions, HS)
                    per_group = t.reshape(-1, HS, *t.shape[1:]).repeat_interleave(c, dim=0)
                    out[f"{pre}attn.{name}.{param}"] = _rows(per_group.reshape(-1, *t.shape[1:]), G * HS)
            for name in ("gate", "up"):
                t = state.get(f"{pre}mlp.{name}.{param}")
                if t is not None:
                    out[f"{pre}mlp.{name}.{param}"] = _rows(t, D)
        out[f"{pre}attn.o.weight"] = _cols(_heads(state[f"{pre}attn.o.weight"], hs, positions, HS, dim=1), H * HS)
        out[f"{pre}mlp.down.weight"] = _cols(state[f"{pre}mlp.down.weight"], D)
    return out


def padding_info(sub: SubnasConfig, shape: PaddedShape) -> dict[str, Any]:
    """What was padded, per layer, for the export's metadata."""
    stock = {"num_attention_heads": shape.num_heads, "num_key_value_heads": shape.query_groups,
             "head_dim": shape.head_size or sub.head_dim[0], "intermediate_size": shape.intermediate_size}
    layers = []
    for i in range(sub.num_hidden_layers):
        layer = {"num_attention_heads": sub.num_attention_heads[i], "num_key_value_heads": sub.num_key_value_heads[i],
                 "head_dim": sub.head_dim[i], "intermediate_size": sub.intermediate_size[i],
                 "kv_copies": shape.kv_copies[i]}
        if shape.head_size:
            layer["query_scale"] = shape.query_scale[i]
        layers.append(layer)
    return {"stock_shape": stock, "layers": layers, "kv_copies": any(c > 1 for c in shape.kv_copies),
            "query_scale": bool(shape.head_size) and any(s != 1.0 for s in shape.query_scale)}


def to_hf_padded(family: ModelFamily, sub: SubnasConfig, state: StateDict, hf_config: PretrainedConfig, *,
                 full: SubnasConfig, resolved: ResolvedSubNetwork
                 ) -> tuple[PretrainedConfig, StateDict, SubnasConfig, dict[str, Any]]:
    """The smallest zero-padded stock model of ``sub``: (stock config, stock state, padded subnas
    config, metadata), or `NotExpressible` saying why none exists."""
    reasons: list[str] = []
    for shape in padded_shapes(sub, full, resolved):
        padded = padded_config(sub, shape, full, resolved)
        config_only = True
        try:
            family.hf_config_for(padded, hf_config)
        except NotImplementedError:
            config_only = False  # a plugin family without the config-only check: to_hf decides, once
        except NotExpressible as exc:
            reasons.append(str(exc))
            continue
        try:
            hf_sub, hf_state = family.to_hf(padded, pad_state(sub, state, shape), hf_config)
        except NotExpressible as exc:
            reasons.append(str(exc))
            if config_only:
                continue
            break
        return hf_sub, hf_state, padded, padding_info(sub, shape)
    raise NotExpressible(f"no padded shape is accepted either ({reasons[0]})" if reasons else "no padded shape fits")
