"""Analytic cost counters beside `subnas.count_parameters`: FLOPs per token, weight bytes, KV-cache bytes.

Each is exact and computed from the architecture alone (the config and the sub-network; no weights,
microseconds per candidate), so a search can use them as objectives or bins. Each has one owner
here; nothing else in subnas recomputes them.

FLOPs follow `torch.utils.flop_counter.FlopCounterMode`'s convention: 2 FLOPs per multiply-add of
every matrix product (projections, MLP, LM head over the whole sequence), the attention's score
(Q·Kᵀ) and value (P·V) products counted over the full ``s × s`` square — a causal or sliding-window
mask saves nothing in that convention — and nothing for embeddings, norms, activations, RoPE,
softmax or biases. `measure_flops` runs that counter on a real forward pass (it also counts the CPU
kernel of ``scaled_dot_product_attention``, which the stock counter skips); the tests check that
both agree for every family and search space.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from subnas.config import SubnasConfig
from subnas.subnet import ResolvedSubNetwork, SubNetwork

#: Bits per stored weight for the dtypes `weight_bytes` and `kv_cache_bytes_per_token` accept by
#: name (quantised formats without a torch dtype included).
DTYPE_BITS = {"float64": 64, "float32": 32, "float16": 16, "bfloat16": 16, "float8": 8, "int8": 8, "int4": 4}


def _shape(config: SubnasConfig, subnet: Any) -> tuple[int, int, list[tuple[int, int, int, int]]]:
    """(vocabulary, embedding width, per-layer (heads, KV groups, head size, MLP width)) of ``subnet``
    (None: the full model)."""
    if subnet is None:
        return (config.vocab_size, config.hidden_size,
                [(config.num_attention_heads[i], config.num_key_value_heads[i], config.head_dim[i],
                  config.intermediate_size[i]) for i in range(config.num_hidden_layers)])
    if isinstance(subnet, dict):
        subnet = SubNetwork.from_dict(subnet)
    resolved = subnet if isinstance(subnet, ResolvedSubNetwork) else subnet.resolve(config)
    return (resolved.vocab_size(config), len(resolved.embd),
            [(s.num_heads, s.query_groups, s.head_size, s.intermediate_size) for s in resolved.layers])


def _config(model_or_config: Any) -> SubnasConfig:
    from subnas.families import load_config

    return load_config(model_or_config)


def flops_per_token(model_or_config: Any, subnet: SubNetwork | ResolvedSubNetwork | dict[str, Any] | None = None,
                    *, seq_len: int = 256) -> int:
    """Forward FLOPs per token of a model or sub-network on sequences of ``seq_len`` tokens.

    The FLOPs of one forward pass over a ``1 × seq_len`` sequence (all logits computed), divided
    by ``seq_len``; `FlopCounterMode`'s convention (module docstring), so it is exact.

    Example:
        >>> from subnas import SubnasConfig, SubNetwork
        >>> cfg = SubnasConfig(vocab_size=100, hidden_size=32, num_hidden_layers=2,
        ...                    num_attention_heads=4, intermediate_size=64)
        >>> flops_per_token(cfg, seq_len=16), flops_per_token(cfg, SubNetwork(n_layers=1), seq_len=16)
        (51456, 28928)
    """
    if seq_len < 1:
        raise ValueError(f"seq_len {seq_len} is not a positive number of tokens")
    config = _config(model_or_config)
    V, E, layers = _shape(config, subnet)
    matrices = 3 if config.mlp_type == "gated" else 2
    total = 2 * E * V  # the LM head, every position
    for h, g, hs, d in layers:
        total += 2 * E * (h * hs + 2 * g * hs) + 2 * h * hs * E  # q, k, v, o projections
        total += 2 * matrices * E * d  # MLP
        total += 4 * seq_len * h * hs  # scores and values: 2 * s * hs each, per query head
    return total


def _bits(dtype: str | torch.dtype) -> int:
    name = str(dtype).removeprefix("torch.")
    if name not in DTYPE_BITS:
        raise ValueError(f"unknown dtype {dtype!r}; give one of {', '.join(DTYPE_BITS)}")
    return DTYPE_BITS[name]


def weight_bytes(model_or_config: Any, subnet: SubNetwork | ResolvedSubNetwork | dict[str, Any] | None = None,
                 *, dtype: str | torch.dtype = "bfloat16") -> int:
    """Bytes of the weights of a model or sub-network stored at ``dtype`` (tied weights once):
    what an unpadded export's safetensors files hold in tensor data.

    Example:
        >>> from subnas import SubnasConfig
        >>> weight_bytes(SubnasConfig(vocab_size=100, hidden_size=32, num_hidden_layers=2,
        ...                           num_attention_heads=4, intermediate_size=64), dtype="float32")
        95360
    """
    from subnas.params import count_parameters

    config = _config(model_or_config)
    return math.ceil(count_parameters(config, subnet) * _bits(dtype) / 8)


def kv_cache_bytes_per_token(model_or_config: Any,
                             subnet: SubNetwork | ResolvedSubNetwork | dict[str, Any] | None = None, *,
                             dtype: str | torch.dtype = "bfloat16") -> int:
    """Bytes the KV cache grows by per generated token: a key and a value of every KV group's head
    size in every kept layer (sliding-window layers included: the count up to their window).

    Example:
        >>> from subnas import SubnasConfig
        >>> kv_cache_bytes_per_token(SubnasConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
        ...                                       num_key_value_heads=2), dtype="float16")
        128
    """
    config = _config(model_or_config)
    _, _, layers = _shape(config, subnet)
    return math.ceil(sum(2 * g * hs for _, g, hs, _ in layers) * _bits(dtype) / 8)


def _sdpa_flops(query_shape: Any, key_shape: Any, value_shape: Any, *args: Any, **kwargs: Any) -> int:
    # Full s_q × s_k products per query head (KV heads broadcast), as the counter's GPU kernels count.
    b, h, s_q, d_q = query_shape
    s_k, d_v = key_shape[-2], value_shape[-1]
    return 2 * b * h * s_q * s_k * (d_q + d_v)


def measure_flops(model: Any, input_ids: torch.Tensor) -> int:
    """FLOPs `FlopCounterMode` counts for one forward pass of ``model`` on ``input_ids``, the CPU
    attention kernel included (the stock counter registers only the GPU ones).

    Example:
        >>> import torch
        >>> from subnas import SubnasConfig, SubnasForCausalLM
        >>> cfg = SubnasConfig(vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
        ...                    intermediate_size=64)
        >>> measure_flops(SubnasForCausalLM(cfg), torch.zeros(1, 16, dtype=torch.long)) == 16 * flops_per_token(cfg, seq_len=16)
        True
    """
    from torch.utils.flop_counter import FlopCounterMode

    # The math fallback decomposes into matmuls the counter sees; the fused CPU kernel does not.
    op = getattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu", None)
    mapping = {} if op is None else {op: _sdpa_flops}
    with torch.no_grad(), FlopCounterMode(display=False, custom_mapping=mapping) as counter:
        model(input_ids)
    return int(counter.get_total_flops())
