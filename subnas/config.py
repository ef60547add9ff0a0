"""`SubnasConfig`: one architecture description that covers every supported family.

Every family plugin translates its `transformers` config into a `SubnasConfig` (see
`subnas.families`). The generic decoder in `subnas.modeling` runs it, the parameter counter in
`subnas.params` counts it, and sub-networks are validated against it. Per-layer quantities are
lists so that the same class describes both a full model and a layer-wise sub-network that stock
`transformers` cannot express (the "flexible format" of an export).
"""

from __future__ import annotations

from typing import Any

from transformers import PretrainedConfig

NORM_TYPES = ("rmsnorm", "layernorm")
MLP_TYPES = ("gated", "plain")
RESIDUAL_TYPES = ("sequential", "parallel", "sandwich")
POSITION_TYPES = ("rope", "learned")
LAYER_TYPES = ("full_attention", "sliding_attention")


class SubnasConfig(PretrainedConfig):  # type: ignore[misc]
    """Architecture of a decoder-only LM as data (model_type ``"subnas"``).

    Per-layer fields (``num_attention_heads``, ``num_key_value_heads``, ``head_dim``,
    ``rotary_dim``, ``intermediate_size``, ``rope_inv_freq``, ``rope_attention_scaling``,
    ``layer_types``) accept an int/str for "the same in every layer" and are stored as lists.

    Head layout: in every head the first ``rotary_dim`` dimensions are rotary, paired as
    (i, i + rotary_dim/2) with inverse frequency ``rope_inv_freq[layer][i]``; the remaining
    ``head_dim - rotary_dim`` dimensions pass through (GPT-NeoX's partial rotary). Query heads are
    grouped group-major: KV head j serves query heads j*n .. j*n+n-1 (n = heads / groups).
    """

    model_type = "subnas"

    def __init__(
        self,
        *,
        family: str = "llama",
        vocab_size: int = 32000,
        hidden_size: int = 64,
        num_hidden_layers: int = 2,
        num_attention_heads: int | list[int] = 4,
        num_key_value_heads: int | list[int] | None = None,
        head_dim: int | list[int] | None = None,
        rotary_dim: int | list[int] | None = None,
        intermediate_size: int | list[int] = 256,
        rope_inv_freq: list[list[float]] | None = None,
        rope_attention_scaling: float | list[float] = 1.0,
        layer_types: str | list[str] = "full_attention",
        sliding_window: int | None = None,
        norm_type: str = "rmsnorm",
        norm_eps: float = 1e-6,
        norm_weight_offset: float = 0.0,
        mlp_type: str = "gated",
        hidden_act: str = "silu",
        qkv_bias: bool = False,
        o_bias: bool = False,
        mlp_bias: bool = False,
        qk_norm: bool = False,
        residual: str = "sequential",
        position_embedding: str = "rope",
        max_position_embeddings: int = 2048,
        tie_word_embeddings: bool = True,
        embedding_scale: bool = False,
        attention_scale: float | None = None,
        final_logit_softcapping: float | None = None,
        require_bos: bool = False,
        **kwargs: Any,
    ) -> None:
        n = num_hidden_layers

        def per_layer(value: Any, name: str) -> list[Any]:
            if isinstance(value, (list, tuple)):
                if len(value) != n:
                    raise ValueError(f"SubnasConfig.{name} has {len(value)} entries for {n} layers")
                return list(value)
            return [value] * n

        self.family = family
        self.vocab_size = vocab_size
        self.hidden_size = hidden_size
        self.num_hidden_layers = n
        self.num_attention_heads = per_layer(num_attention_heads, "num_attention_heads")
        kv = num_key_value_heads if num_key_value_heads is not None else num_attention_heads
        self.num_key_value_heads = per_layer(kv, "num_key_value_heads")
        if head_dim is None:
            head_dim = [hidden_size // h for h in self.num_attention_heads]
        self.head_dim = per_layer(head_dim, "head_dim")
        if position_embedding != "rope":
            rotary_dim = 0
        self.rotary_dim = per_layer(self.head_dim if rotary_dim is None else rotary_dim, "rotary_dim")
        self.intermediate_size = per_layer(intermediate_size, "intermediate_size")
        if rope_inv_freq is None:
            # Standard RoPE (theta 10000) when a config is written by hand.
            rope_inv_freq = [[10000.0 ** (-2 * i / r) for i in range(r // 2)] for r in self.rotary_dim]
        self.rope_inv_freq = [list(map(float, f)) for f in per_layer(rope_inv_freq, "rope_inv_freq")]
        self.rope_attention_scaling = per_layer(rope_attention_scaling, "rope_attention_scaling")
        self.layer_types = per_layer(layer_types, "layer_types")
        self.sliding_window = sliding_window
        self.norm_type = norm_type
        self.norm_eps = norm_eps
        self.norm_weight_offset = norm_weight_offset
        self.mlp_type = mlp_type
        self.hidden_act = hidden_act
        self.qkv_bias = qkv_bias
        self.o_bias = o_bias
        self.mlp_bias = mlp_bias
        self.qk_norm = qk_norm
        self.residual = residual
        self.position_embedding = position_embedding
        self.max_position_embeddings = max_position_embeddings
        self.embedding_scale = embedding_scale
        self.attention_scale = attention_scale
        self.final_logit_softcapping = final_logit_softcapping
        self.require_bos = require_bos
        super().__init__(tie_word_embeddings=tie_word_embeddings, **kwargs)
        self.tie_word_embeddings = tie_word_embeddings
        self._check()

    def _check(self) -> None:
        for name, value, legal in (
            ("norm_type", self.norm_type, NORM_TYPES),
            ("mlp_type", self.mlp_type, MLP_TYPES),
            ("residual", self.residual, RESIDUAL_TYPES),
            ("position_embedding", self.position_embedding, POSITION_TYPES),
        ):
            if value not in legal:
                raise ValueError(f"SubnasConfig.{name}={value!r} is not one of {legal}")
        for i in range(self.num_hidden_layers):
            h, g = self.num_attention_heads[i], self.num_key_value_heads[i]
            if g < 1 or h % g:
                raise ValueError(f"layer {i}: {h} attention heads are not divisible by {g} KV heads")
            if self.rotary_dim[i] % 2 or self.rotary_dim[i] > self.head_dim[i]:
                raise ValueError(f"layer {i}: rotary_dim {self.rotary_dim[i]} must be even and <= head_dim")
            if len(self.rope_inv_freq[i]) != self.rotary_dim[i] // 2:
                raise ValueError(f"layer {i}: rope_inv_freq needs rotary_dim/2 = {self.rotary_dim[i] // 2} entries")
            if self.layer_types[i] not in LAYER_TYPES:
                raise ValueError(f"layer {i}: layer type {self.layer_types[i]!r} is not one of {LAYER_TYPES}")
