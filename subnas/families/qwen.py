"""Qwen2 / Qwen2.5 and Qwen3: Llama-shaped, so both subclass `LlamaLikeFamily`.

What differs from Llama, and why each flag is set the way it is:

* **Biases.** Qwen2 hard-codes ``bias=True`` on q/k/v and ``bias=False`` on o (there is no
  ``attention_bias`` flag). Qwen3 has an ``attention_bias`` flag that switches all four, o included.
* **Head size.** Qwen2 configs usually have no ``head_dim``; its attention and rotary modules use
  ``getattr(config, "head_dim", hidden // heads)``, so a stock Qwen2 can still hold a shrunk head
  size if ``head_dim`` is written into its config. Qwen3 always has an explicit ``head_dim``.
* **QK-norm (Qwen3).** ``self_attn.q_norm`` / ``k_norm`` are Llama-style RMSNorms over one head
  (weight shape ``[head_dim]``), applied per head before RoPE.
* **Sliding windows.** Both configs carry ``layer_types`` and ``sliding_window``; their
  ``__post_init__`` sets ``sliding_window = None`` unless ``use_sliding_window`` is true. A layer
  of type ``sliding_attention`` then has no window to use (transformers' mask builder refuses
  it), so subnas treats every layer as full attention in that case; with ``use_sliding_window``
  the layer types are kept as given and the window is ``sliding_window`` (key k is visible from
  query q iff ``q - sliding_window < k <= q``).
"""

from __future__ import annotations

from typing import Any, ClassVar

from transformers import PretrainedConfig
from transformers.models.qwen2.modeling_qwen2 import Qwen2RotaryEmbedding
from transformers.models.qwen3.modeling_qwen3 import Qwen3RotaryEmbedding

from subnas.config import SubnasConfig
from subnas.families.llama import LlamaLikeFamily


class Qwen2Family(LlamaLikeFamily):
    model_types: ClassVar[tuple[str, ...]] = ("qwen2",)
    rotary_cls: ClassVar[Any] = Qwen2RotaryEmbedding
    has_layer_types: ClassVar[bool] = True

    def family_flags(self, hf: PretrainedConfig) -> dict[str, Any]:
        # Qwen2Attention: q/k/v_proj(bias=True), o_proj(bias=False); Qwen2MLP has no bias.
        return dict(qkv_bias=True, o_bias=False, mlp_bias=False, hidden_act=hf.hidden_act, norm_eps=hf.rms_norm_eps)

    def layer_types(self, hf: PretrainedConfig) -> list[str]:
        # Without a window (use_sliding_window false -> sliding_window None) no layer slides.
        if not getattr(hf, "use_sliding_window", False) or getattr(hf, "sliding_window", None) is None:
            return ["full_attention"] * hf.num_hidden_layers
        types = getattr(hf, "layer_types", None)
        return list(types) if types is not None else ["full_attention"] * hf.num_hidden_layers

    def to_subnas_config(self, hf: PretrainedConfig) -> SubnasConfig:
        config = super().to_subnas_config(hf)
        if "sliding_attention" not in config.layer_types:
            config.sliding_window = None  # a window that no layer uses would only confuse readers
        return config

    def stock_alternatives(self, data: dict[str, Any]) -> list[PretrainedConfig]:
        return []  # Qwen's own configs accept every uniform shape; Mistral lacks Qwen's biases / QK-norm

    def hf_config_dict(self, sub: SubnasConfig, hf_config: PretrainedConfig) -> dict[str, Any]:
        data = super().hf_config_dict(sub, hf_config)
        # The kept layers keep their own types (fine-grained spaces may drop any layer), so the
        # stock config gets an explicit list rather than one derived from max_window_layers.
        data["layer_types"] = list(sub.layer_types)
        if "sliding_attention" in sub.layer_types:
            data["use_sliding_window"] = True
            data["sliding_window"] = sub.sliding_window
        if sub.head_dim[0] * sub.num_attention_heads[0] == sub.hidden_size and "head_dim" not in hf_config.to_dict():
            data.pop("head_dim", None)  # stock Qwen2 derives it; write it only when it differs
        return data


class Qwen3Family(Qwen2Family):
    model_types: ClassVar[tuple[str, ...]] = ("qwen3",)
    rotary_cls: ClassVar[Any] = Qwen3RotaryEmbedding
    layer_names: ClassVar[dict[str, str]] = {
        **LlamaLikeFamily.layer_names,
        "attn.q_norm": "self_attn.q_norm",
        "attn.k_norm": "self_attn.k_norm",
    }

    def family_flags(self, hf: PretrainedConfig) -> dict[str, Any]:
        # Qwen3Attention: one attention_bias flag for q, k, v and o; RMSNorm on q and k per head.
        bias = bool(getattr(hf, "attention_bias", False))
        return dict(qkv_bias=bias, o_bias=bias, mlp_bias=False, qk_norm=True, hidden_act=hf.hidden_act,
                    norm_eps=hf.rms_norm_eps)


FAMILIES = [Qwen2Family(), Qwen3Family()]
