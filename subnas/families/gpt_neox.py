"""GPT-NeoX (Pythia, the paper's models): ``GPTNeoXForCausalLM``, model_type ``gpt_neox``.

How it maps onto `SubnasConfig`, and why:

* **LayerNorm with bias** everywhere (``layer_norm_eps``), a **plain MLP** with biases
  (``dense_h_to_4h`` -> act -> ``dense_4h_to_h``), ``attention_bias`` on both the fused QKV and
  the output projection (``dense``).
* **Fused QKV, interleaved per head.** ``query_key_value`` outputs ``[H, 3, Hs]``: for each head
  its query, key and value rows in turn (``view(..., H, 3*Hs)`` then ``chunk(3)``), *not* all
  queries then all keys. Converting unfuses that layout into subnas' separate q/k/v (head-major
  ``[H, Hs]`` rows), and `to_hf` fuses it back.
* **Partial rotary**: only the first ``int(Hs * partial_rotary_factor)`` dims of a head rotate
  (Pythia: 25%), rotate_half pairing — the same layout subnas uses.
* **Residual**: ``use_parallel_residual`` (Pythia: true) computes
  ``x + attn(ln1(x)) + mlp(ln2(x))``; otherwise sequential.
* **No GQA**, and stock GPT-NeoX derives the head size as hidden / heads, so `to_hf` can only
  write sub-networks with ``heads * head_size == hidden`` and all heads kept per group.
* The untied output head is ``embed_out`` in checkpoints and ``lm_head`` in the transformers 5
  module (its loader renames it); both names are accepted.
"""

from __future__ import annotations

import re
from typing import ClassVar

import torch
from transformers import PretrainedConfig
from transformers.models.gpt_neox.modeling_gpt_neox import GPTNeoXRotaryEmbedding

from subnas.config import SubnasConfig
from subnas.families import (
    ModelFamily,
    NotExpressible,
    StateDict,
    config_kwargs,
    rope_from_hf,
    stock_rope_theta,
)

#: subnas module path -> GPT-NeoX module path, inside ``model.layers.{i}.`` / ``gpt_neox.layers.{i}.``
LAYER_NAMES = {
    "attn_norm": "input_layernorm",
    "mlp_norm": "post_attention_layernorm",
    "attn.o": "attention.dense",
    "mlp.up": "mlp.dense_h_to_4h",
    "mlp.down": "mlp.dense_4h_to_h",
}
GLOBAL_NAMES = {
    "model.embed": "gpt_neox.embed_in",
    "model.final_norm": "gpt_neox.final_layer_norm",
    "lm_head": "lm_head",
}
#: Buffers that old checkpoints still carry (causal mask, rotary table): not weights.
IGNORED = re.compile(r"\.attention\.(bias|masked_bias)$|rotary_emb\.inv_freq$")


class GPTNeoXFamily(ModelFamily):
    model_types: ClassVar[tuple[str, ...]] = ("gpt_neox",)

    # ---------------------------------------------------------------- config
    def to_subnas_config(self, hf: PretrainedConfig) -> SubnasConfig:
        H = hf.num_attention_heads
        inv_freq, scaling = rope_from_hf(GPTNeoXRotaryEmbedding, hf)
        bias = bool(getattr(hf, "attention_bias", True))
        return SubnasConfig(
            family=hf.model_type,
            vocab_size=hf.vocab_size,
            hidden_size=hf.hidden_size,
            num_hidden_layers=hf.num_hidden_layers,
            num_attention_heads=H,
            num_key_value_heads=H,
            head_dim=hf.hidden_size // H,
            rotary_dim=2 * len(inv_freq),  # the width of GPT-NeoX's cos/sin tables
            intermediate_size=hf.intermediate_size,
            rope_inv_freq=[inv_freq] * hf.num_hidden_layers,
            rope_attention_scaling=scaling,
            norm_type="layernorm",
            norm_eps=hf.layer_norm_eps,
            mlp_type="plain",
            hidden_act=hf.hidden_act,
            qkv_bias=bias,
            o_bias=bias,
            mlp_bias=True,
            residual="parallel" if hf.use_parallel_residual else "sequential",
            position_embedding="rope",
            max_position_embeddings=hf.max_position_embeddings,
            tie_word_embeddings=bool(getattr(hf, "tie_word_embeddings", False)),
            **config_kwargs(hf),
        )

    # ---------------------------------------------------------------- weights
    def to_subnas_state(self, hf_state: StateDict, config: SubnasConfig) -> StateDict:
        def unfuse_qkv(i: int, name: str, param: str, tensor: torch.Tensor) -> StateDict | None:
            if name != "attention.query_key_value":
                return None
            # rows are [H, 3, Hs]: per head its q, k and v rows
            per_head = tensor.reshape(config.num_attention_heads[i], 3, -1, *tensor.shape[1:])
            return {f"model.layers.{i}.attn.{n}.{param}": per_head[:, j].reshape(-1, *tensor.shape[1:])
                    for j, n in enumerate("qkv")}

        return self.renamed_from_hf(hf_state, config, layers="gpt_neox.layers", layer_names=LAYER_NAMES,
                                    global_names=GLOBAL_NAMES, convert=unfuse_qkv, ignore=IGNORED,
                                    aliases={"embed_out": "lm_head"})  # the checkpoint's name of the output head

    # ---------------------------------------------------------------- export
    def hf_config_for(self, sub: SubnasConfig, hf_config: PretrainedConfig) -> PretrainedConfig:
        self.require_uniform(sub, "num_attention_heads", "num_key_value_heads", "head_dim", "intermediate_size",
                             "rotary_dim", "rope_inv_freq")
        h, g, hs = sub.num_attention_heads[0], sub.num_key_value_heads[0], sub.head_dim[0]
        if g != h:
            raise NotExpressible(f"stock GPT-NeoX has no grouped-query attention ({h} heads, {g} query groups)")
        if h * hs != sub.hidden_size:
            raise NotExpressible(f"stock GPT-NeoX fixes head size = hidden / heads; {h} heads x {hs} != {sub.hidden_size}")
        data = hf_config.to_dict()
        params = dict(data.get("rope_parameters") or {})
        factor = params.get("partial_rotary_factor", 1.0)
        if sub.rotary_dim[0] != int(hs * factor):
            raise NotExpressible(f"rotary width {sub.rotary_dim[0]} != head size {hs} x partial_rotary_factor {factor}")
        if sub.rotary_dim[0]:
            full = self.to_subnas_config(hf_config)
            params["rope_theta"] = stock_rope_theta(sub.rope_inv_freq[0], full.rope_inv_freq[0],
                                                    params.get("rope_theta", 10000.0), params.get("rope_type", "default"))
        data.update(hidden_size=sub.hidden_size, num_hidden_layers=sub.num_hidden_layers, num_attention_heads=h,
                    intermediate_size=sub.intermediate_size[0], rope_parameters=params)
        return self.stock_config(hf_config, data)

    def to_hf(self, sub: SubnasConfig, state: StateDict, hf_config: PretrainedConfig) -> tuple[PretrainedConfig, StateDict]:
        hf_sub = self.hf_config_for(sub, hf_config)
        h, hs = sub.num_attention_heads[0], sub.head_dim[0]

        out = self.renamed_to_hf(state, layers="gpt_neox.layers", layer_names=LAYER_NAMES, global_names=GLOBAL_NAMES,
                                 convert=lambda i, name, param, tensor: {} if name in ("attn.q", "attn.k", "attn.v")
                                 else None)  # q, k, v: fused below
        for i in range(sub.num_hidden_layers):
            for param in ("weight", "bias") if sub.qkv_bias else ("weight",):
                parts = [state[f"model.layers.{i}.attn.{n}.{param}"] for n in "qkv"]
                fused = torch.stack([p.reshape(h, hs, *p.shape[1:]) for p in parts], dim=1)  # [H, 3, Hs, ...]
                out[f"gpt_neox.layers.{i}.attention.query_key_value.{param}"] = fused.reshape(3 * h * hs, *parts[0].shape[1:])
        if sub.tie_word_embeddings:
            out["lm_head.weight"] = out["gpt_neox.embed_in.weight"]  # listed by state_dict() though tied
        return hf_sub, out


FAMILIES = [GPTNeoXFamily()]
