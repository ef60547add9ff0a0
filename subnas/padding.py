"""Zero-padding: a sub-network that no stock class expresses as-is, written as an exact stock model.

Stock `transformers` models have one width per model, so a layer-wise sub-network (its own heads,
query groups and MLP width per layer) has no stock architecture — and some uniform shapes are
refused too (GPT-NeoX/GPT-2 fix head size = hidden / heads, Gemma 3 wants hidden % heads == 0).
Padding every layer to one stock shape with zero weights fixes both:

* **MLP neurons** up to the widest layer: zero rows in ``gate``/``up`` (and their biases), a zero
  column in ``down``. The neuron's output is multiplied by its zero ``down`` column: it adds
  exactly 0. Under training its gradients are zero too: ``dL/d down[:, j] = a_j * delta`` with
  ``a_j = act(0 * x) * 0 = 0`` (gated) or ``act(0)`` (plain; we check ``act(0) == 0`` — true for
  GELU, SiLU, ReLU and their approximations), and ``dL/d up[j]`` and ``dL/d gate[j]`` carry the factor
  ``down[:, j]^T delta = 0``.
* **Attention heads in whole zero query groups**: zero ``q``/``k``/``v`` rows (and biases), zero
  ``o`` columns. Scores are 0, the softmax is uniform, but every value is 0, so the head outputs
  exactly 0; backward, ``dL/d out = o[:, head]^T delta = 0`` zeroes the gradients of ``o`` (via
  ``out = 0``), of ``v`` and of the scores, hence of ``q`` and ``k``. QK-norm maps 0 to 0 and RoPE
  rotates 0 to 0. A padded head must *not* join a real query group: it would average that group's
  real values, and although its zero ``o`` column hides that at first, ``dL/d o = out * delta`` is
  not zero, so it would come alive after one optimizer step.
* **Different heads per group between layers** (layer-wise GQA) therefore cannot be padded inside
  a group. Instead a real group serving ``k`` query heads is written as ``k / K`` stock groups of
  ``K = gcd`` heads, each with a *copy* of its key/value weights: the same function, but the
  copies are separate parameters that training may move apart. The export metadata says so
  (``kv_copies``); they are not zero units.

Zero gradients keep the zeros under AdamW (moments stay 0, so the update is 0; decoupled weight
decay scales 0 to 0) and under gradient clipping (they add nothing to the norm), so training the
padded export is training the sub-network. tests/test_export.py checks both claims per family.

Padding cannot change a head's size (it would move RoPE pairs and the attention scale) or the
embedding width (every norm averages over it), so those must already be uniform.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from transformers import PretrainedConfig
from transformers.activations import ACT2FN

from subnas.config import SubnasConfig
from subnas.families import ModelFamily, NotExpressible, StateDict


@dataclass(frozen=True)
class PaddedShape:
    """One stock shape for every layer: ``query_groups`` groups of ``heads_per_group`` heads."""

    heads_per_group: int
    query_groups: int
    intermediate_size: int
    kv_copies: tuple[int, ...]  # per layer: stock groups written for each of its real groups

    @property
    def num_heads(self) -> int:
        return self.heads_per_group * self.query_groups


def padded_shapes(sub: SubnasConfig) -> list[PaddedShape]:
    """Candidate shapes that hold every layer of ``sub``, fewest padded heads first.

    Beyond the smallest shape, only shapes whose head count divides the hidden size are tried:
    those are what families with a divisibility rule (GPT-NeoX, GPT-2, Gemma 3) accept.
    """
    if len(set(sub.head_dim)) > 1:
        raise NotExpressible(f"head sizes differ between layers ({sub.head_dim}); zero-padding cannot change a "
                             f"head's size without moving its RoPE pairs and attention scale")
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
    d = max(sub.intermediate_size)
    return [PaddedShape(K, G, d, copies) for G in groups]


def padded_config(sub: SubnasConfig, shape: PaddedShape) -> SubnasConfig:
    data = sub.to_dict()
    for key in ("architectures", "transformers_version", "model_type", "_name_or_path"):
        data.pop(key, None)
    n = sub.num_hidden_layers
    data.update(num_attention_heads=[shape.num_heads] * n, num_key_value_heads=[shape.query_groups] * n,
                intermediate_size=[shape.intermediate_size] * n)
    return SubnasConfig(**data)


def _rows(t: torch.Tensor, total: int) -> torch.Tensor:
    """``t`` with zero rows appended (dim 0) up to ``total``."""
    return torch.cat([t, t.new_zeros(total - t.shape[0], *t.shape[1:])]) if total > t.shape[0] else t


def _cols(t: torch.Tensor, total: int) -> torch.Tensor:
    return torch.cat([t, t.new_zeros(t.shape[0], total - t.shape[1])], dim=1) if total > t.shape[1] else t


def pad_state(sub: SubnasConfig, state: StateDict, shape: PaddedShape) -> StateDict:
    """``state`` (subnas layout, one entry per layer of ``sub``) padded to ``shape`` in every layer.

    Query rows keep their order: with heads group-major, real group ``a``'s head ``t`` lands in
    stock group ``a * copies + t // K``, slot ``t % K`` — the same row. Only key/value rows are
    repeated (one copy per stock group a real group became), then zero groups follow.
    """
    out = dict(state)
    hs, H, G, D = sub.head_dim[0], shape.num_heads, shape.query_groups, shape.intermediate_size
    for i in range(sub.num_hidden_layers):
        pre, c = f"model.layers.{i}.", shape.kv_copies[i]
        for param in ("weight", "bias"):
            q = state.get(f"{pre}attn.q.{param}")
            if q is not None:
                out[f"{pre}attn.q.{param}"] = _rows(q, H * hs)
            for name in ("k", "v"):
                t = state.get(f"{pre}attn.{name}.{param}")
                if t is not None:
                    per_group = t.reshape(-1, hs, *t.shape[1:]).repeat_interleave(c, dim=0)
                    out[f"{pre}attn.{name}.{param}"] = _rows(per_group.reshape(-1, *t.shape[1:]), G * hs)
            for name in ("gate", "up"):
                t = state.get(f"{pre}mlp.{name}.{param}")
                if t is not None:
                    out[f"{pre}mlp.{name}.{param}"] = _rows(t, D)
        out[f"{pre}attn.o.weight"] = _cols(state[f"{pre}attn.o.weight"], H * hs)
        out[f"{pre}mlp.down.weight"] = _cols(state[f"{pre}mlp.down.weight"], D)
    return out


def padding_info(sub: SubnasConfig, shape: PaddedShape) -> dict[str, Any]:
    """What was padded, per layer, for the export's metadata."""
    return {
        "stock_shape": {"num_attention_heads": shape.num_heads, "num_key_value_heads": shape.query_groups,
                        "intermediate_size": shape.intermediate_size},
        "layers": [{"num_attention_heads": h, "num_key_value_heads": g, "intermediate_size": d, "kv_copies": c}
                   for h, g, d, c in zip(sub.num_attention_heads, sub.num_key_value_heads, sub.intermediate_size,
                                         shape.kv_copies)],
        "kv_copies": any(c > 1 for c in shape.kv_copies),
    }


def to_hf_padded(family: ModelFamily, sub: SubnasConfig, state: StateDict,
                 hf_config: PretrainedConfig) -> tuple[PretrainedConfig, StateDict, SubnasConfig, dict[str, Any]]:
    """The smallest zero-padded stock model of ``sub``: (stock config, stock state, padded subnas
    config, metadata), or `NotExpressible` saying why none exists."""
    reasons: list[str] = []
    for shape in padded_shapes(sub):
        padded = padded_config(sub, shape)
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
    raise NotExpressible(reasons[0] if reasons else "no padded shape fits")
