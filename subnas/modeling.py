"""The generic decoder: one readable implementation of every supported family, sub-network aware.

`SubnasForCausalLM` runs any `SubnasConfig` (Llama/SmolLM, Qwen2/3, Gemma 3, GPT-NeoX, GPT-2 are
flags and per-layer widths of the same decoder). It is both

* the **supernet**: `set_sub_network(resolved)` activates a `ResolvedSubNetwork` without copying
  the model — contiguous selections ("first n", the coarse spaces) are tensor views, arbitrary
  index sets are gathered once and cached until the weights change; and
* the **flexible export format** (model_type ``"subnas"``) for sub-networks that no stock
  `transformers` architecture expresses (layer-wise widths, arbitrary rotary pairs, ...). It is
  registered with the Auto classes on ``import subnas``; no ``trust_remote_code`` involved.

Why one generic decoder rather than patching each `transformers` module in place (DESIGN.md §3):
a sub-network changes widths per layer, head size (and with it the RoPE pair layout and the
attention scale), the embedding width seen by every norm, and the layer list. Expressing that once
here keeps "what you evaluate is what you export" true by construction — export writes the
sub-network's slices into this same module with its own config — and parity with `transformers`
is tested per family (tests/test_families.py, tests/test_invariants.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from transformers import GenerationMixin, PreTrainedModel
from transformers.activations import ACT2FN
from transformers.modeling_outputs import CausalLMOutputWithPast

from subnas.config import SubnasConfig
from subnas.subnet import LayerSelection, ResolvedSubNetwork, SubNetwork

Index = slice | torch.Tensor


def _index(idx: tuple[int, ...], full: int) -> Index:
    """A slice when the indices are a contiguous run (a free view), else an index tensor."""
    if len(idx) == full and idx == tuple(range(full)):
        return slice(None)
    if idx == tuple(range(idx[0], idx[0] + len(idx))):
        return slice(idx[0], idx[0] + len(idx))
    return torch.tensor(idx, dtype=torch.long, device="cpu")


def _take(w: torch.Tensor, dim: int, idx: Index) -> torch.Tensor:
    if isinstance(idx, slice):
        if idx == slice(None):
            return w
        return w.narrow(dim, idx.start, idx.stop - idx.start)
    return w.index_select(dim, idx.to(w.device))


@dataclass
class _LayerPlan:
    """Everything one kept layer needs at run time, computed once per `set_sub_network`."""

    layer: int
    num_heads: int
    num_groups: int
    head_size: int
    rotary_dim: int
    q_rows: Index
    kv_rows: Index
    head_dims: Index
    neurons: Index
    inv_freq: torch.Tensor
    rope_scaling: float
    sliding: bool
    rope_key: tuple[Any, ...]  # layers with equal frequencies share one cos/sin table per forward


class _Norm(nn.Module):
    def __init__(self, config: SubnasConfig, size: int) -> None:
        super().__init__()
        self.kind, self.eps, self.offset = config.norm_type, config.norm_eps, config.norm_weight_offset
        self.weight = nn.Parameter(torch.ones(size))
        self.bias = nn.Parameter(torch.zeros(size)) if self.kind == "layernorm" else None

    def run(self, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        if self.kind == "layernorm":
            return F.layer_norm(x, (x.shape[-1],), weight, bias, self.eps)
        dtype = x.dtype
        h = x.float()
        h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + self.eps)
        if self.offset:  # Gemma: (1 + w), computed in float32
            return (h * (self.offset + weight.float())).to(dtype)
        return weight * h.to(dtype)  # Llama/Qwen: cast first, then scale


class _Attention(nn.Module):
    def __init__(self, config: SubnasConfig, i: int) -> None:
        super().__init__()
        E = config.hidden_size
        H, G, Hs = config.num_attention_heads[i], config.num_key_value_heads[i], config.head_dim[i]
        self.q = nn.Linear(E, H * Hs, bias=config.qkv_bias)
        self.k = nn.Linear(E, G * Hs, bias=config.qkv_bias)
        self.v = nn.Linear(E, G * Hs, bias=config.qkv_bias)
        self.o = nn.Linear(H * Hs, E, bias=config.o_bias)
        if config.qk_norm:
            self.q_norm = _Norm(config, Hs)
            self.k_norm = _Norm(config, Hs)


class _MLP(nn.Module):
    def __init__(self, config: SubnasConfig, i: int) -> None:
        super().__init__()
        E, D = config.hidden_size, config.intermediate_size[i]
        if config.mlp_type == "gated":
            self.gate = nn.Linear(E, D, bias=config.mlp_bias)
        self.up = nn.Linear(E, D, bias=config.mlp_bias)
        self.down = nn.Linear(D, E, bias=config.mlp_bias)
        self.act = ACT2FN[config.hidden_act]


class _Layer(nn.Module):
    def __init__(self, config: SubnasConfig, i: int) -> None:
        super().__init__()
        E = config.hidden_size
        self.attn_norm = _Norm(config, E)
        self.attn = _Attention(config, i)
        self.mlp_norm = _Norm(config, E)
        self.mlp = _MLP(config, i)
        if config.residual == "sandwich":
            self.post_attn_norm = _Norm(config, E)
            self.post_mlp_norm = _Norm(config, E)


class SubnasPreTrainedModel(PreTrainedModel):  # type: ignore[misc]
    config_class = SubnasConfig
    base_model_prefix = "model"
    supports_gradient_checkpointing = False
    _no_split_modules = ["_Layer"]
    _supports_sdpa = True

    def _init_weights(self, module: nn.Module) -> None:
        std = getattr(self.config, "initializer_range", 0.02)
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=std)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=std)
        elif isinstance(module, _Norm):
            # Gemma stores w with y = x * (1 + w): identity is w = 0.
            nn.init.constant_(module.weight, 0.0 if module.offset else 1.0)
            if module.bias is not None:
                nn.init.zeros_(module.bias)


class _Decoder(nn.Module):
    def __init__(self, config: SubnasConfig) -> None:
        super().__init__()
        self.embed = nn.Embedding(config.vocab_size, config.hidden_size)
        if config.position_embedding == "learned":
            self.pos_embed = nn.Embedding(config.max_position_embeddings, config.hidden_size)
        self.layers = nn.ModuleList(_Layer(config, i) for i in range(config.num_hidden_layers))
        self.final_norm = _Norm(config, config.hidden_size)


class SubnasForCausalLM(SubnasPreTrainedModel, GenerationMixin):  # type: ignore[misc]
    """A decoder-only causal LM described by a `SubnasConfig`, able to run any of its sub-networks.

    Example:
        >>> import torch
        >>> from subnas import SubNetwork, SubnasConfig, SubnasForCausalLM
        >>> model = SubnasForCausalLM(SubnasConfig(vocab_size=100, hidden_size=32, num_hidden_layers=2,
        ...                                        num_attention_heads=4, intermediate_size=64))
        >>> model.set_sub_network(SubNetwork(n_layers=1, n_embd=16, num_heads=2))
        >>> model(torch.tensor([[1, 2, 3]])).logits.shape
        torch.Size([1, 3, 100])
    """

    def __init__(self, config: SubnasConfig) -> None:
        super().__init__(config)
        self.model = _Decoder(config)
        if not config.tie_word_embeddings:
            self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self._plan: list[_LayerPlan] = []
        self._embd: Index = slice(None)
        self._vocab: Index = slice(None)  # kept token ids: rows of the embedding and the head
        self._embd_width = config.hidden_size
        self._cache: dict[tuple[Any, ...], tuple[int, torch.Tensor]] = {}
        # Optional observer of intermediate activations (importance scores, subnas.evaluation._importance);
        # called as recorder(kind, layer, tensor). None on every ordinary forward.
        self.recorder: Any = None
        self.post_init()
        self.reset()

    # ------------------------------------------------------------------ sub-networks
    def get_input_embeddings(self) -> nn.Module:
        return self.model.embed

    def get_output_embeddings(self) -> nn.Module | None:
        return getattr(self, "lm_head", None)

    def reset(self) -> None:
        """Activate the full network."""
        self.set_sub_network(None)

    def set_sub_network(self, subnet: SubNetwork | ResolvedSubNetwork | None) -> None:
        """Activate a sub-network (``None``: the full network). Nothing is copied here."""
        cfg = self.config
        resolved = (SubNetwork() if subnet is None else subnet)
        if isinstance(resolved, SubNetwork):
            resolved = resolved.resolve(cfg)
        self.active = resolved
        self._embd = _index(resolved.embd, cfg.hidden_size)
        self._vocab = slice(None) if resolved.vocab is None else _index(resolved.vocab, cfg.vocab_size)
        self._embd_width = len(resolved.embd)
        self._plan = [self._layer_plan(s) for s in resolved.layers]
        self._cache.clear()

    def _layer_plan(self, s: LayerSelection) -> _LayerPlan:
        cfg, i = self.config, s.layer
        Hs = cfg.head_dim[i]
        q_rows = tuple(h * Hs + d for h in s.heads for d in s.head_dims)
        kv_rows = tuple(g * Hs + d for g in s.groups for d in s.head_dims)
        kept = [cfg.rope_inv_freq[i][p] for p in s.rotary_pairs]
        # Explicit CPU: plans are built even inside `torch.device("meta")` model construction.
        freqs = torch.tensor(kept, dtype=torch.float32, device="cpu")
        return _LayerPlan(
            layer=i, num_heads=s.num_heads, num_groups=s.query_groups, head_size=s.head_size,
            rotary_dim=s.rotary_dim, q_rows=_index(q_rows, cfg.num_attention_heads[i] * Hs),
            kv_rows=_index(kv_rows, cfg.num_key_value_heads[i] * Hs), head_dims=_index(s.head_dims, Hs),
            neurons=_index(s.neurons, cfg.intermediate_size[i]), inv_freq=freqs,
            rope_scaling=cfg.rope_attention_scaling[i], sliding=cfg.layer_types[i] == "sliding_attention",
            rope_key=(tuple(kept), cfg.rope_attention_scaling[i]),
        )

    def _w(self, key: tuple[Any, ...], param: torch.Tensor | None, *dims_idx: tuple[int, Index]) -> torch.Tensor | None:
        """``param`` restricted to the active sub-network; gathers are cached until the weights change."""
        if param is None:
            return None
        if all(isinstance(idx, slice) for _, idx in dims_idx):
            out = param
            for dim, idx in dims_idx:
                out = _take(out, dim, idx)
            return out
        if torch.is_grad_enabled() and param.requires_grad:
            out = param  # training through the supernet: gather inside the graph, no cache
            for dim, idx in dims_idx:
                out = _take(out, dim, idx)
            return out
        hit = self._cache.get(key)
        if hit is not None and hit[0] == param._version and hit[1].device == param.device:
            return hit[1]
        with torch.no_grad():
            out = param
            for dim, idx in dims_idx:
                out = _take(out, dim, idx)
            out = out.contiguous()
        self._cache[key] = (param._version, out)
        return out

    # ------------------------------------------------------------------ forward
    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        **kwargs: Any,
    ) -> CausalLMOutputWithPast:
        cfg, E, V = self.config, self._embd, self._vocab
        B, T = input_ids.shape
        if T > cfg.max_position_embeddings and cfg.position_embedding == "learned":
            raise ValueError(f"sequence length {T} exceeds the model's {cfg.max_position_embeddings} positions")
        # A pruned vocabulary gathers the kept rows: input ids and logits are in the sub-network's
        # own numbering 0..len(vocab)-1, exactly as in its export.
        embed_w = self._w(("embed",), self.model.embed.weight, (0, V), (1, E))
        x = F.embedding(input_ids, embed_w)
        if cfg.embedding_scale:
            x = x * torch.tensor(self._embd_width**0.5, dtype=torch.float32).to(x.dtype)
        if position_ids is None:
            position_ids = torch.arange(T, device=input_ids.device).unsqueeze(0)
        if cfg.position_embedding == "learned":
            x = x + F.embedding(position_ids, self._w(("pos",), self.model.pos_embed.weight, (1, E)))

        masks = self._masks(attention_mask, T, x.device)
        rope_cache: dict[Any, tuple[torch.Tensor, torch.Tensor]] = {}
        for plan in self._plan:
            if self.recorder is not None:
                self.recorder("layer_in", plan.layer, x)
            x = self._layer(x, plan, masks, position_ids, rope_cache)
            if self.recorder is not None:
                self.recorder("layer_out", plan.layer, x)

        norm = self.model.final_norm
        x = norm.run(x, self._w(("fn.w",), norm.weight, (0, E)), self._w(("fn.b",), norm.bias, (0, E)))
        head = embed_w if cfg.tie_word_embeddings else self._w(("head",), self.lm_head.weight, (0, V), (1, E))
        logits = F.linear(x, head)
        if cfg.final_logit_softcapping:
            logits = torch.tanh(logits / cfg.final_logit_softcapping) * cfg.final_logit_softcapping
        loss = None
        if labels is not None:
            loss = F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]).float(),
                                   labels[:, 1:].reshape(-1).to(logits.device), ignore_index=-100)
        return CausalLMOutputWithPast(loss=loss, logits=logits)

    def _masks(self, attention_mask: torch.Tensor | None, T: int, device: torch.device) -> dict[bool, torch.Tensor | None]:
        """Boolean masks (True = attend) for full and sliding layers; ``None`` means plain causal."""
        window = self.config.sliding_window
        padded = attention_mask is not None and not bool(attention_mask.all())
        out: dict[bool, torch.Tensor | None] = {}
        for sliding in (False, True):
            needs_window = sliding and window is not None and T > window
            if not padded and not needs_window:
                out[sliding] = None
                continue
            q = torch.arange(T, device=device)[:, None]
            k = torch.arange(T, device=device)[None, :]
            allowed = k <= q
            if needs_window:
                allowed = allowed & (q - k < window)
            allowed = allowed[None, None]
            if padded:
                assert attention_mask is not None
                allowed = allowed & attention_mask.bool()[:, None, None, :]
                # A padding query may see no key at all; a fully masked row gives NaN, and NaN
                # values would leak into real tokens' outputs (0 * NaN) in the next layer. Let
                # every position see itself: real tokens already do.
                allowed = allowed | torch.eye(T, dtype=torch.bool, device=device)
            out[sliding] = allowed
        return out

    def _rope(self, plan: _LayerPlan, position_ids: torch.Tensor, dtype: torch.dtype,
              cache: dict[Any, tuple[torch.Tensor, torch.Tensor]]) -> tuple[torch.Tensor, torch.Tensor]:
        key = plan.rope_key
        hit = cache.get(key)
        if hit is None:
            inv = plan.inv_freq.to(position_ids.device)
            freqs = position_ids[..., None].float() * inv
            emb = torch.cat((freqs, freqs), dim=-1)
            hit = ((emb.cos() * plan.rope_scaling).to(dtype)[:, None], (emb.sin() * plan.rope_scaling).to(dtype)[:, None])
            cache[key] = hit
        return hit

    def _layer(self, x: torch.Tensor, p: _LayerPlan, masks: dict[bool, torch.Tensor | None],
               position_ids: torch.Tensor, rope_cache: dict[Any, Any]) -> torch.Tensor:
        cfg, E, i = self.config, self._embd, p.layer
        layer = self.model.layers[i]

        def norm(name: str, x: torch.Tensor) -> torch.Tensor:
            mod = getattr(layer, name)
            out = mod.run(x, self._w((i, name, "w"), mod.weight, (0, E)), self._w((i, name, "b"), mod.bias, (0, E)))
            if self.recorder is not None and name in ("attn_norm", "mlp_norm"):
                self.recorder("norm_out", i, out)
            return out

        def attention(h: torch.Tensor) -> torch.Tensor:
            a = layer.attn
            B, T, _ = h.shape
            q = F.linear(h, self._w((i, "q"), a.q.weight, (0, p.q_rows), (1, E)), self._w((i, "qb"), a.q.bias, (0, p.q_rows)))
            k = F.linear(h, self._w((i, "k"), a.k.weight, (0, p.kv_rows), (1, E)), self._w((i, "kb"), a.k.bias, (0, p.kv_rows)))
            v = F.linear(h, self._w((i, "v"), a.v.weight, (0, p.kv_rows), (1, E)), self._w((i, "vb"), a.v.bias, (0, p.kv_rows)))
            q = q.view(B, T, p.num_heads, p.head_size)
            k = k.view(B, T, p.num_groups, p.head_size)
            v = v.view(B, T, p.num_groups, p.head_size).transpose(1, 2)
            if cfg.qk_norm:
                q = a.q_norm.run(q, self._w((i, "qn"), a.q_norm.weight, (0, p.head_dims)), None)
                k = a.k_norm.run(k, self._w((i, "kn"), a.k_norm.weight, (0, p.head_dims)), None)
            q, k = q.transpose(1, 2), k.transpose(1, 2)
            if p.rotary_dim:
                cos, sin = self._rope(p, position_ids, q.dtype, rope_cache)
                q, k = _apply_rope(q, cos, sin, p.rotary_dim), _apply_rope(k, cos, sin, p.rotary_dim)
            if p.num_groups != p.num_heads:
                rep = p.num_heads // p.num_groups
                k = k[:, :, None].expand(B, p.num_groups, rep, T, p.head_size).reshape(B, p.num_heads, T, p.head_size)
                v = v[:, :, None].expand(B, p.num_groups, rep, T, p.head_size).reshape(B, p.num_heads, T, p.head_size)
            scale = cfg.attention_scale if cfg.attention_scale is not None else p.head_size**-0.5
            mask = masks[p.sliding]
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=mask is None and T > 1, scale=scale)
            if self.recorder is not None:
                self.recorder("heads_out", i, out)  # [B, heads, T, head_size], before the output projection
            out = out.transpose(1, 2).reshape(B, T, p.num_heads * p.head_size)
            return F.linear(out, self._w((i, "o"), a.o.weight, (0, E), (1, p.q_rows)), self._w((i, "ob"), a.o.bias, (0, E)))

        def mlp(h: torch.Tensor) -> torch.Tensor:
            m = layer.mlp
            up = F.linear(h, self._w((i, "up"), m.up.weight, (0, p.neurons), (1, E)), self._w((i, "upb"), m.up.bias, (0, p.neurons)))
            if cfg.mlp_type == "gated":
                gate = F.linear(h, self._w((i, "g"), m.gate.weight, (0, p.neurons), (1, E)), self._w((i, "gb"), m.gate.bias, (0, p.neurons)))
                up = m.act(gate) * up
            else:
                up = m.act(up)
            if self.recorder is not None:
                self.recorder("mlp_act", i, up)
            return F.linear(up, self._w((i, "down"), m.down.weight, (0, E), (1, p.neurons)), self._w((i, "downb"), m.down.bias, (0, E)))

        if cfg.residual == "parallel":
            return x + attention(norm("attn_norm", x)) + mlp(norm("mlp_norm", x))
        if cfg.residual == "sandwich":
            x = x + norm("post_attn_norm", attention(norm("attn_norm", x)))
            return x + norm("post_mlp_norm", mlp(norm("mlp_norm", x)))
        x = x + attention(norm("attn_norm", x))
        return x + mlp(norm("mlp_norm", x))

    # ------------------------------------------------------------------ extraction
    def sub_state_dict(self) -> dict[str, torch.Tensor]:
        """The active sub-network's weights, named for a `SubnasForCausalLM` of `sub_config()`.

        Uses the very same index plans as `forward`, so the exported model computes exactly what
        was evaluated (DESIGN.md §4, invariant 1).
        """
        E, V = self._embd, self._vocab
        out: dict[str, torch.Tensor] = {}

        def put(name: str, t: torch.Tensor | None) -> None:
            if t is not None:
                out[name] = t.detach().contiguous().clone()

        with torch.no_grad():
            put("model.embed.weight", _take(_take(self.model.embed.weight, 0, V), 1, E))
            if self.config.position_embedding == "learned":
                put("model.pos_embed.weight", _take(self.model.pos_embed.weight, 1, E))
            for j, p in enumerate(self._plan):
                layer, pre = self.model.layers[p.layer], f"model.layers.{j}."
                norms = ["attn_norm", "mlp_norm"] + (["post_attn_norm", "post_mlp_norm"] if self.config.residual == "sandwich" else [])
                for name in norms:
                    mod = getattr(layer, name)
                    put(pre + name + ".weight", _take(mod.weight, 0, E))
                    if mod.bias is not None:
                        put(pre + name + ".bias", _take(mod.bias, 0, E))
                a, m = layer.attn, layer.mlp
                for name, rows in (("q", p.q_rows), ("k", p.kv_rows), ("v", p.kv_rows)):
                    lin = getattr(a, name)
                    put(f"{pre}attn.{name}.weight", _take(_take(lin.weight, 0, rows), 1, E))
                    if lin.bias is not None:
                        put(f"{pre}attn.{name}.bias", _take(lin.bias, 0, rows))
                put(f"{pre}attn.o.weight", _take(_take(a.o.weight, 0, E), 1, p.q_rows))
                if a.o.bias is not None:
                    put(f"{pre}attn.o.bias", _take(a.o.bias, 0, E))
                if self.config.qk_norm:
                    put(f"{pre}attn.q_norm.weight", _take(a.q_norm.weight, 0, p.head_dims))
                    put(f"{pre}attn.k_norm.weight", _take(a.k_norm.weight, 0, p.head_dims))
                for name in ("gate", "up"):
                    lin = getattr(m, name, None)
                    if lin is not None:
                        put(f"{pre}mlp.{name}.weight", _take(_take(lin.weight, 0, p.neurons), 1, E))
                        if lin.bias is not None:
                            put(f"{pre}mlp.{name}.bias", _take(lin.bias, 0, p.neurons))
                put(f"{pre}mlp.down.weight", _take(_take(m.down.weight, 0, E), 1, p.neurons))
                if m.down.bias is not None:
                    put(f"{pre}mlp.down.bias", _take(m.down.bias, 0, E))
            fn = self.model.final_norm
            put("model.final_norm.weight", _take(fn.weight, 0, E))
            if fn.bias is not None:
                put("model.final_norm.bias", _take(fn.bias, 0, E))
            if not self.config.tie_word_embeddings:
                put("lm_head.weight", _take(_take(self.lm_head.weight, 0, V), 1, E))
        return out


def sub_config(config: SubnasConfig, resolved: ResolvedSubNetwork) -> SubnasConfig:
    """The `SubnasConfig` of a sub-network as a standalone model (per-layer lists)."""
    data = config.to_dict()
    for key in ("architectures", "transformers_version", "model_type", "_name_or_path"):
        data.pop(key, None)
    layers = resolved.layers
    data.update(
        hidden_size=len(resolved.embd),
        num_hidden_layers=len(layers),
        num_attention_heads=[s.num_heads for s in layers],
        num_key_value_heads=[s.query_groups for s in layers],
        head_dim=[s.head_size for s in layers],
        rotary_dim=[s.rotary_dim for s in layers],
        intermediate_size=[s.intermediate_size for s in layers],
        rope_inv_freq=[[config.rope_inv_freq[s.layer][p] for p in s.rotary_pairs] for s in layers],
        rope_attention_scaling=[config.rope_attention_scaling[s.layer] for s in layers],
        layer_types=[config.layer_types[s.layer] for s in layers],
    )
    if resolved.vocab is not None:
        data.update(vocab_size=len(resolved.vocab), **remap_token_ids(data, resolved.vocab))
    return SubnasConfig(**data)


def remap_token_ids(config: Any, vocab: tuple[int, ...]) -> dict[str, Any]:
    """``bos/eos/pad_token_id`` of ``config`` (a dict or config) in a pruned vocabulary's numbering.

    A special token that is not kept becomes ``None`` (dropped from a list of EOS ids)."""
    new = {old: j for j, old in enumerate(vocab)}
    out: dict[str, Any] = {}
    for key in ("bos_token_id", "eos_token_id", "pad_token_id"):
        value = config.get(key) if isinstance(config, dict) else getattr(config, key, None)
        if isinstance(value, (list, tuple)):
            out[key] = [new[v] for v in value if v in new] or None
        elif value is not None:
            out[key] = new.get(value)
    return out


def _apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, r: int) -> torch.Tensor:
    rot = x[..., :r] if r != x.shape[-1] else x
    x1, x2 = rot[..., : r // 2], rot[..., r // 2:]
    rotated = rot * cos + torch.cat((-x2, x1), dim=-1) * sin
    if r == x.shape[-1]:
        return rotated
    return torch.cat((rotated, x[..., r:]), dim=-1)

