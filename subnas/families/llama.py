"""Llama (SmolLM, Llama-2/3 GQA configs) and Mistral — and the shared base of the Llama-shaped families.

Qwen2/3 and Gemma 3 use the same `transformers` module names (``self_attn.q_proj``,
``mlp.gate_proj``, ...), so they subclass `LlamaLikeFamily` and change only flags and norm names.
"""

from __future__ import annotations

import re
from typing import Any, ClassVar

from transformers import GraniteConfig, MistralConfig, PretrainedConfig
from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding
from transformers.models.mistral.modeling_mistral import MistralRotaryEmbedding

from subnas.config import SubnasConfig
from subnas.families import (
    ModelFamily,
    NotExpressible,
    StateDict,
    config_kwargs,
    rope_from_hf,
    stock_rope_theta,
)

ROTARY_BUFFER = re.compile(r"rotary_emb")  # a RoPE table some checkpoints carry: recomputed, never loaded


class LlamaLikeFamily(ModelFamily):
    model_types: ClassVar[tuple[str, ...]] = ("llama",)
    rotary_cls: ClassVar[Any] = LlamaRotaryEmbedding
    #: subnas module path -> `transformers` module path, inside ``model.layers.{i}.``
    layer_names: ClassVar[dict[str, str]] = {
        "attn_norm": "input_layernorm",
        "mlp_norm": "post_attention_layernorm",
        "attn.q": "self_attn.q_proj",
        "attn.k": "self_attn.k_proj",
        "attn.v": "self_attn.v_proj",
        "attn.o": "self_attn.o_proj",
        "mlp.gate": "mlp.gate_proj",
        "mlp.up": "mlp.up_proj",
        "mlp.down": "mlp.down_proj",
    }
    global_names: ClassVar[dict[str, str]] = {
        "model.embed": "model.embed_tokens",
        "model.final_norm": "model.norm",
        "lm_head": "lm_head",
    }

    # ---------------------------------------------------------------- config
    def family_flags(self, hf: PretrainedConfig) -> dict[str, Any]:
        """What differs between the Llama-shaped families (overridden by Qwen and Gemma)."""
        bias = bool(getattr(hf, "attention_bias", False))
        return dict(qkv_bias=bias, o_bias=bias, mlp_bias=bool(getattr(hf, "mlp_bias", False)),
                    hidden_act=hf.hidden_act, norm_eps=hf.rms_norm_eps)

    def rope(self, hf: PretrainedConfig) -> tuple[list[list[float]], list[float]]:
        freqs, scaling = rope_from_hf(self.rotary_cls, hf)
        n = hf.num_hidden_layers
        return [freqs] * n, [scaling] * n

    def layer_types(self, hf: PretrainedConfig) -> list[str]:
        return ["full_attention"] * hf.num_hidden_layers

    def to_subnas_config(self, hf: PretrainedConfig) -> SubnasConfig:
        H = hf.num_attention_heads
        head_dim = getattr(hf, "head_dim", None) or hf.hidden_size // H
        inv_freq, scaling = self.rope(hf)
        # Llama's choices; `family_flags` of a subclass may override any of them (Gemma: sandwich).
        flags: dict[str, Any] = dict(norm_type="rmsnorm", mlp_type="gated", residual="sequential",
                                     position_embedding="rope")
        flags.update(self.family_flags(hf))
        return SubnasConfig(
            family=hf.model_type,
            vocab_size=hf.vocab_size,
            hidden_size=hf.hidden_size,
            num_hidden_layers=hf.num_hidden_layers,
            num_attention_heads=H,
            num_key_value_heads=getattr(hf, "num_key_value_heads", None) or H,
            head_dim=head_dim,
            rotary_dim=[2 * len(f) for f in inv_freq],
            intermediate_size=hf.intermediate_size,
            rope_inv_freq=inv_freq,
            rope_attention_scaling=scaling,
            layer_types=self.layer_types(hf),
            sliding_window=getattr(hf, "sliding_window", None),
            max_position_embeddings=hf.max_position_embeddings,
            tie_word_embeddings=bool(getattr(hf, "tie_word_embeddings", False)),
            **flags,
            **config_kwargs(hf),
        )

    # ---------------------------------------------------------------- weights
    def _to_hf_names(self, state: StateDict) -> StateDict:
        return self.renamed_to_hf(state, layers="model.layers", layer_names=self.layer_names,
                                  global_names=self.global_names, ignore=ROTARY_BUFFER)

    def to_subnas_state(self, hf_state: StateDict, config: SubnasConfig) -> StateDict:
        return self.renamed_from_hf(hf_state, config, layers="model.layers", layer_names=self.layer_names,
                                    global_names=self.global_names, ignore=ROTARY_BUFFER)

    def hf_config_for(self, sub: SubnasConfig, hf_config: PretrainedConfig) -> PretrainedConfig:
        self.require_uniform(sub, "num_attention_heads", "num_key_value_heads", "head_dim", "intermediate_size",
                             "rotary_dim", "rope_inv_freq")
        data = self.hf_config_dict(sub, hf_config)
        try:
            return self.stock_config(hf_config, data)
        except NotExpressible as refused:
            for alternative in self.stock_alternatives(data):
                return alternative
            raise refused from None

    def stock_alternatives(self, data: dict[str, Any]) -> list[PretrainedConfig]:
        """Other stock classes that compute exactly what this family's own class would, for shapes
        its config refuses. transformers 5's `LlamaConfig` insists on hidden % heads == 0 even with
        an explicit ``head_dim`` (which its modeling code fully supports), while `MistralConfig` does
        not: with ``sliding_window=None`` Mistral *is* Llama without biases (same module names, RMSNorm,
        RoPE, SDPA scale head_dim**-0.5). With q/k/v/o or MLP biases, `GraniteConfig` with every
        multiplier 1 and ``attention_multiplier = head_dim**-0.5`` is Llama with biases. Parity of each
        is tested against the supernet (tests/test_export.py)."""
        keys = ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
                "num_key_value_heads", "head_dim", "hidden_act", "max_position_embeddings", "initializer_range",
                "rms_norm_eps", "pad_token_id", "bos_token_id", "eos_token_id", "tie_word_embeddings",
                "rope_parameters", "attention_dropout", "dtype")
        common = {k: data[k] for k in keys if k in data}
        if data.get("pretraining_tp", 1) != 1:
            return []
        if not data.get("attention_bias") and not data.get("mlp_bias"):
            return [MistralConfig.from_dict({**common, "sliding_window": None})]
        return [GraniteConfig.from_dict({
            **common, "attention_bias": bool(data.get("attention_bias")), "mlp_bias": bool(data.get("mlp_bias")),
            "embedding_multiplier": 1.0, "residual_multiplier": 1.0, "logits_scaling": 1.0,
            "attention_multiplier": float(data["head_dim"]) ** -0.5})]

    def to_hf(self, sub: SubnasConfig, state: StateDict, hf_config: PretrainedConfig) -> tuple[PretrainedConfig, StateDict]:
        hf_sub = self.hf_config_for(sub, hf_config)
        state = self._to_hf_names(state)
        if sub.tie_word_embeddings:
            # A tied lm_head is the same Parameter as the embedding, but `state_dict()` (and so
            # `load_state_dict(strict=True)`) still lists it under its own name.
            state["lm_head.weight"] = state[self.global_names["model.embed"] + ".weight"]
        return hf_sub, state

    def hf_config_dict(self, sub: SubnasConfig, hf_config: PretrainedConfig) -> dict[str, Any]:
        """The stock config dict of a uniform sub-network (RoPE base rescaled if the head shrank)."""
        full = self.to_subnas_config(hf_config)
        if sub.layer_types != [sub.layer_types[0]] * sub.num_hidden_layers and not self.has_layer_types:
            raise NotExpressible("layer types differ between layers")
        data = hf_config.to_dict()
        head_dim = sub.head_dim[0]
        factor = (data.get("rope_parameters") or {}).get("partial_rotary_factor", 1.0)
        if sub.rotary_dim[0] != int(head_dim * factor):
            raise NotExpressible(f"rotary width {sub.rotary_dim[0]} != head size {head_dim} x {factor}")
        data.update(
            hidden_size=sub.hidden_size, num_hidden_layers=sub.num_hidden_layers,
            num_attention_heads=sub.num_attention_heads[0], num_key_value_heads=sub.num_key_value_heads[0],
            head_dim=head_dim, intermediate_size=sub.intermediate_size[0],
        )
        data["rope_parameters"] = self.stock_rope_parameters(sub, full, data.get("rope_parameters"))
        return data

    has_layer_types: ClassVar[bool] = False

    def stock_rope_parameters(self, sub: SubnasConfig, full: SubnasConfig, params: Any) -> Any:
        params = dict(params or {})
        if sub.rotary_dim[0]:
            params["rope_theta"] = stock_rope_theta(sub.rope_inv_freq[0], full.rope_inv_freq[0],
                                                    params.get("rope_theta", 10000.0), params.get("rope_type", "default"))
        return params


class MistralFamily(LlamaLikeFamily):
    """Mistral: Llama without biases, with an optional sliding window on every layer.

    With ``sliding_window: null`` (Mistral v0.2 and later, and the exports subnas writes as
    `MistralForCausalLM` for Llama shapes that `LlamaConfig` refuses) it is exactly Llama. With a
    window every layer is a ``sliding_attention`` layer: key k is visible from query q iff
    ``q - sliding_window < k <= q`` (transformers' ``create_sliding_window_causal_mask``, used on
    every layer when the window is set), as for Qwen's and Gemma's sliding layers.
    """

    model_types: ClassVar[tuple[str, ...]] = ("mistral",)
    rotary_cls: ClassVar[Any] = MistralRotaryEmbedding

    def layer_types(self, hf: PretrainedConfig) -> list[str]:
        kind = "full_attention" if getattr(hf, "sliding_window", None) is None else "sliding_attention"
        return [kind] * hf.num_hidden_layers

    def stock_alternatives(self, data: dict[str, Any]) -> list[PretrainedConfig]:
        return []  # `MistralConfig` accepts every shape the Llama alternatives exist for


FAMILIES = [LlamaLikeFamily(), MistralFamily()]
