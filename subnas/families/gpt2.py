"""GPT-2 (``GPT2LMHeadModel``, model_type ``gpt2``).

How it maps onto `SubnasConfig`, and why:

* **Learned absolute positions** (``wpe``, ``n_positions`` rows) and no RoPE (``rotary_dim 0``).
* **LayerNorm with bias**, pre-norm sequential residual (``ln_1`` -> attn, ``ln_2`` -> MLP),
  plain MLP ``c_fc`` -> ``gelu_new`` -> ``c_proj`` (width ``n_inner``, or 4 x ``n_embd`` when unset).
* **Conv1D weights are stored transposed**: ``[in, out]``, ``y = x @ W + b``; subnas (like
  ``nn.Linear``) stores ``[out, in]``, so every matrix is transposed on the way in and out.
* **Fused attention input** ``c_attn``: its output is ``q | k | v`` (each ``n_embd`` wide,
  head-major), split along the output dimension.
* **Tied output head** (``tie_word_embeddings``, the default) and attention scale
  ``1/sqrt(head_dim)``.

Not supported: ``scale_attn_by_inverse_layer_idx`` (a per-layer scale), ``reorder_and_upcast_attn``
(different numerics in eager attention), ``scale_attn_weights=False`` and cross-attention.
Stock GPT-2 derives the head size as ``n_embd / n_head`` and has no GQA, which bounds `to_hf`.
"""

from __future__ import annotations

import re
from typing import ClassVar

import torch
from transformers import PretrainedConfig

from subnas.config import SubnasConfig
from subnas.families import ModelFamily, NotExpressible, StateDict, UnsupportedModelError, config_kwargs

#: subnas module path -> GPT-2 module path, inside ``model.layers.{i}.`` / ``transformer.h.{i}.``
LAYER_NAMES = {
    "attn_norm": "ln_1",
    "mlp_norm": "ln_2",
    "attn.o": "attn.c_proj",
    "mlp.up": "mlp.c_fc",
    "mlp.down": "mlp.c_proj",
}
GLOBAL_NAMES = {
    "model.embed": "transformer.wte",
    "model.pos_embed": "transformer.wpe",
    "model.final_norm": "transformer.ln_f",
    "lm_head": "lm_head",
}
#: Causal-mask buffers that old checkpoints carry: not weights.
IGNORED = re.compile(r"(^|\.)attn\.(bias|masked_bias)$")  # not c_attn.bias!
#: Modules whose weight is a Conv1D ([in, out]) in GPT-2.
CONV1D = ("attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj")
LAYER_MAP = {stock: ours for ours, stock in LAYER_NAMES.items()}


def _base_module(module: str) -> str:
    """A stock module name as the renaming expects it: layers as ``h.{i}...``, the rest under ``transformer.``
    (original GPT-2 checkpoints name the base model's weights without ``transformer.``)."""
    if module.split(".")[0] in ("h", "wte", "wpe", "ln_f"):
        module = "transformer." + module
    return module.removeprefix("transformer.") if module.startswith("transformer.h.") else module


class GPT2Family(ModelFamily):
    model_types: ClassVar[tuple[str, ...]] = ("gpt2",)

    # ---------------------------------------------------------------- config
    def to_subnas_config(self, hf: PretrainedConfig) -> SubnasConfig:
        for flag, bad in (("scale_attn_by_inverse_layer_idx", True), ("reorder_and_upcast_attn", True),
                          ("scale_attn_weights", False), ("add_cross_attention", True)):
            if bool(getattr(hf, flag, not bad)) == bad:
                raise UnsupportedModelError(f"GPT-2 with {flag}={bad} is not supported; subnas supports the stock "
                                            f"GPT-2 attention (scaled by 1/sqrt(head_dim), no cross-attention)")
        E = hf.n_embd
        return SubnasConfig(
            family=hf.model_type,
            vocab_size=hf.vocab_size,
            hidden_size=E,
            num_hidden_layers=hf.n_layer,
            num_attention_heads=hf.n_head,
            num_key_value_heads=hf.n_head,
            head_dim=E // hf.n_head,
            rotary_dim=0,
            intermediate_size=hf.n_inner if hf.n_inner is not None else 4 * E,
            norm_type="layernorm",
            norm_eps=hf.layer_norm_epsilon,
            mlp_type="plain",
            hidden_act=hf.activation_function,
            qkv_bias=True,
            o_bias=True,
            mlp_bias=True,
            residual="sequential",
            position_embedding="learned",
            max_position_embeddings=hf.n_positions,
            tie_word_embeddings=bool(getattr(hf, "tie_word_embeddings", True)),
            **config_kwargs(hf),
        )

    # ---------------------------------------------------------------- weights
    def to_subnas_state(self, hf_state: StateDict, config: SubnasConfig) -> StateDict:
        def linear(i: int, name: str, param: str, tensor: torch.Tensor) -> StateDict | None:
            if name in CONV1D and param == "weight":
                tensor = tensor.t()  # Conv1D [in, out] -> Linear [out, in]
            elif name != "attn.c_attn":
                return None  # renamed as usual
            if name == "attn.c_attn":  # output dim is q | k | v, each H*Hs wide
                return {f"model.layers.{i}.attn.{n}.{param}": part for n, part in zip("qkv", tensor.chunk(3, dim=0))}
            return {f"model.layers.{i}.{LAYER_MAP[name]}.{param}": tensor}

        return self.renamed_from_hf(hf_state, config, layers="h", layer_names=LAYER_NAMES, global_names=GLOBAL_NAMES,
                                    convert=linear, ignore=IGNORED, module_name=_base_module)

    # ---------------------------------------------------------------- export
    def hf_config_for(self, sub: SubnasConfig, hf_config: PretrainedConfig) -> PretrainedConfig:
        self.require_uniform(sub, "num_attention_heads", "num_key_value_heads", "head_dim", "intermediate_size")
        h, g, hs, d = sub.num_attention_heads[0], sub.num_key_value_heads[0], sub.head_dim[0], sub.intermediate_size[0]
        if g != h:
            raise NotExpressible(f"stock GPT-2 has no grouped-query attention ({h} heads, {g} query groups)")
        if h * hs != sub.hidden_size:
            raise NotExpressible(f"stock GPT-2 fixes head size = n_embd / n_head; {h} heads x {hs} != {sub.hidden_size}")
        data = hf_config.to_dict()
        keep_default = data.get("n_inner") is None and d == 4 * sub.hidden_size
        data.update(n_embd=sub.hidden_size, n_layer=sub.num_hidden_layers, n_head=h, n_inner=None if keep_default else d)
        return self.stock_config(hf_config, data)

    def to_hf(self, sub: SubnasConfig, state: StateDict, hf_config: PretrainedConfig) -> tuple[PretrainedConfig, StateDict]:
        hf_sub = self.hf_config_for(sub, hf_config)

        def conv1d(i: int, name: str, param: str, tensor: torch.Tensor) -> StateDict | None:
            if name in ("attn.q", "attn.k", "attn.v"):
                return {}  # fused below
            stock = LAYER_NAMES[name]
            if stock in CONV1D and param == "weight":  # Conv1D stores (in, out)
                return {f"transformer.h.{i}.{stock}.{param}": tensor.t().contiguous()}
            return None

        out = self.renamed_to_hf(state, layers="transformer.h", layer_names=LAYER_NAMES,
                                 global_names=GLOBAL_NAMES, convert=conv1d)
        for i in range(sub.num_hidden_layers):
            q, k, v = (state[f"model.layers.{i}.attn.{n}.weight"] for n in "qkv")
            out[f"transformer.h.{i}.attn.c_attn.weight"] = torch.cat([q, k, v], dim=0).t().contiguous()
            out[f"transformer.h.{i}.attn.c_attn.bias"] = torch.cat([state[f"model.layers.{i}.attn.{n}.bias"] for n in "qkv"])
        if sub.tie_word_embeddings:
            out["lm_head.weight"] = out["transformer.wte.weight"]  # listed by state_dict() though tied
        return hf_sub, out


FAMILIES = [GPT2Family()]
