"""Gemma 3 text models (``Gemma3ForCausalLM``, model_type ``gemma3_text``), e.g. gemma-3-270m.

Llama-shaped module names, so it subclasses `LlamaLikeFamily`; what differs, and how subnas
expresses it:

* **RMSNorm with (1 + w)**, computed in float32 and cast back after scaling: ``norm_weight_offset=1``.
* **Scaled embeddings**: ``embed_tokens(x) * sqrt(hidden)``, the scale cast to the weight dtype
  first (bf16 rounds sqrt(640) to 25.25): ``embedding_scale=True``. A sub-network with a
  narrower embedding uses sqrt of *its* width, exactly as the exported stock model will.
* **Sandwich residual**: four norms per layer. subnas' ``attn_norm``/``post_attn_norm`` wrap the
  attention and ``mlp_norm``/``post_mlp_norm`` wrap the MLP.
* **QK-norm** over one head (``self_attn.q_norm`` / ``k_norm``), also (1 + w).
* **Attention scale** ``query_pre_attn_scalar ** -0.5``, fixed: it does not follow the head size,
  so a shrunk head keeps the model's scale (``attention_scale``), and so does the exported model.
* **Two RoPEs**: sliding layers and full layers each have their own ``rope_parameters`` entry
  (local theta 10k, global theta 1M, possibly scaled). The per-layer ``rope_inv_freq`` of
  `SubnasConfig` holds the right one for each layer.
* **Sliding windows** on ``sliding_attention`` layers (``q - window < k <= q``), final-logit
  soft-capping, GELU-tanh gated MLP, and a BOS token on every sequence (``require_bos``).

Not supported: attention-logit soft-capping (Gemma 2 style; `subnas.modeling` uses SDPA without
it) and bidirectional attention (an encoder variant).
"""

from __future__ import annotations

from typing import Any, ClassVar

from transformers import PretrainedConfig
from transformers.models.gemma3.modeling_gemma3 import Gemma3RotaryEmbedding

from subnas.config import SubnasConfig
from subnas.families import NotExpressible, StateDict, UnsupportedModelError, rope_from_hf, stock_rope_theta
from subnas.families.llama import LlamaLikeFamily


class Gemma3TextFamily(LlamaLikeFamily):
    model_types: ClassVar[tuple[str, ...]] = ("gemma3_text",)
    rotary_cls: ClassVar[Any] = Gemma3RotaryEmbedding
    has_layer_types: ClassVar[bool] = True
    layer_names: ClassVar[dict[str, str]] = {
        "attn_norm": "input_layernorm",
        "post_attn_norm": "post_attention_layernorm",
        "mlp_norm": "pre_feedforward_layernorm",
        "post_mlp_norm": "post_feedforward_layernorm",
        "attn.q": "self_attn.q_proj",
        "attn.k": "self_attn.k_proj",
        "attn.v": "self_attn.v_proj",
        "attn.o": "self_attn.o_proj",
        "attn.q_norm": "self_attn.q_norm",
        "attn.k_norm": "self_attn.k_norm",
        "mlp.gate": "mlp.gate_proj",
        "mlp.up": "mlp.up_proj",
        "mlp.down": "mlp.down_proj",
    }

    # ---------------------------------------------------------------- config
    def family_flags(self, hf: PretrainedConfig) -> dict[str, Any]:
        if getattr(hf, "attn_logit_softcapping", None) is not None:
            raise UnsupportedModelError(
                f"attn_logit_softcapping={hf.attn_logit_softcapping} is not supported (subnas' attention has no "
                f"logit soft-capping); Gemma 3 checkpoints leave it unset"
            )
        if getattr(hf, "use_bidirectional_attention", False):
            raise UnsupportedModelError("use_bidirectional_attention=True (an encoder variant) is not supported; "
                                        "subnas models causal decoders")
        bias = bool(getattr(hf, "attention_bias", False))
        return dict(
            qkv_bias=bias, o_bias=bias, mlp_bias=False, qk_norm=True,
            hidden_act=hf.hidden_activation, norm_eps=hf.rms_norm_eps, norm_weight_offset=1.0,
            residual="sandwich", embedding_scale=True, attention_scale=float(hf.query_pre_attn_scalar) ** -0.5,
            final_logit_softcapping=hf.final_logit_softcapping, require_bos=True,
        )

    def layer_types(self, hf: PretrainedConfig) -> list[str]:
        return list(hf.layer_types)

    def rope(self, hf: PretrainedConfig) -> tuple[list[list[float]], list[float]]:
        # Gemma3RotaryEmbedding builds one table per layer type that occurs in the model.
        per_type = {t: rope_from_hf(self.rotary_cls, hf, layer_type=t) for t in set(hf.layer_types)}
        return [per_type[t][0] for t in hf.layer_types], [per_type[t][1] for t in hf.layer_types]

    def to_subnas_config(self, hf: PretrainedConfig) -> SubnasConfig:
        config = super().to_subnas_config(hf)
        if "sliding_attention" not in config.layer_types:
            config.sliding_window = None
        return config

    # ---------------------------------------------------------------- export
    def hf_config_for(self, sub: SubnasConfig, hf_config: PretrainedConfig) -> PretrainedConfig:
        # rope_inv_freq legitimately differs between sliding and full layers: checked per type below.
        self.require_uniform(sub, "num_attention_heads", "num_key_value_heads", "head_dim", "intermediate_size",
                             "rotary_dim")
        h, hs = sub.num_attention_heads[0], sub.head_dim[0]
        if sub.hidden_size % h:
            # Gemma3TextConfig.validate_architecture insists, although head_dim is explicit, and no
            # other stock class has Gemma's sandwich norms; zero-padded heads can restore divisibility.
            raise NotExpressible(f"stock Gemma 3 needs hidden size divisible by heads ({sub.hidden_size} % {h} != 0)")
        full = self.to_subnas_config(hf_config)
        data = hf_config.to_dict()
        data.update(
            hidden_size=sub.hidden_size, num_hidden_layers=sub.num_hidden_layers, num_attention_heads=h,
            num_key_value_heads=sub.num_key_value_heads[0], head_dim=hs, intermediate_size=sub.intermediate_size[0],
            layer_types=list(sub.layer_types),
        )
        params = {t: dict(p) for t, p in (data.get("rope_parameters") or {}).items()}
        for t in set(sub.layer_types):
            p = params[t]
            if sub.rotary_dim[0] != int(hs * p.get("partial_rotary_factor", 1.0)):
                raise NotExpressible(f"rotary width {sub.rotary_dim[0]} != head size {hs} x "
                                     f"{p.get('partial_rotary_factor', 1.0)} ({t} layers)")
            freqs = [f for f, lt in zip(sub.rope_inv_freq, sub.layer_types) if lt == t]
            if any(f != freqs[0] for f in freqs):
                raise NotExpressible(f"RoPE frequencies differ between {t} layers")
            full_freqs = full.rope_inv_freq[full.layer_types.index(t)]
            p["rope_theta"] = stock_rope_theta(freqs[0], full_freqs, p["rope_theta"], p.get("rope_type", "default"))
        data["rope_parameters"] = params
        return self.stock_config(hf_config, data)

    def to_hf(self, sub: SubnasConfig, state: StateDict, hf_config: PretrainedConfig) -> tuple[PretrainedConfig, StateDict]:
        hf_sub = self.hf_config_for(sub, hf_config)
        state = self._to_hf_names(state)
        if sub.tie_word_embeddings:
            state["lm_head.weight"] = state["model.embed_tokens.weight"]  # listed by state_dict() though tied
        return hf_sub, state


FAMILIES = [Gemma3TextFamily()]
