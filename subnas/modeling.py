"""The generic decoder: one readable implementation of every supported family, sub-network aware.

`SubnasForCausalLM` runs any `SubnasConfig` (Llama/SmolLM, Qwen2/3, Gemma 3, GPT-NeoX, GPT-2 are
flags and per-layer widths of the same decoder). It is both

* the **supernet**: `set_sub_network(resolved)` activates a `ResolvedSubNetwork` without copying
  the model — contiguous selections ("first n", the coarse spaces) are tensor views, arbitrary
  index sets are gathered once and cached until the weights change; and
* the **flexible export format** (model_type ``"subnas"``) for sub-networks that no stock
  `transformers` architecture expresses (layer-wise widths, arbitrary rotary pairs, ...). It is
  registered with the Auto classes when this module is imported (``import subnas`` does); no
  ``trust_remote_code`` involved.

Why one generic decoder rather than patching each `transformers` module in place (docs/design.md#architecture):
a sub-network changes widths per layer, head size (and with it the RoPE pair layout and the
attention scale), the embedding width seen by every norm, and the layer list. Expressing that once
here keeps "what you evaluate is what you export" true by construction — export writes the
sub-network's slices into this same module with its own config — and parity with `transformers`
is tested per family (tests/test_families.py, tests/test_invariants.py).

Reading order: index helpers, the plans (`set_sub_network` turns a sub-network into per-layer
index plans once), then the blocks top to bottom — `_Norm`, `_Embedding`, `_Attention`, `_MLP`,
`_Layer`, `_Decoder`, `_Head` — and the model. Each block lists once, in ``slices(plan)``, which
slices of its weights the sub-network uses; its ``forward(x, plan, ...)`` computes with those
slices and its ``sliced_state(plan)`` exports them (`SubnasForCausalLM.sub_state_dict` is the
decoder's and the head's), so evaluation and export cannot drift apart.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from transformers import AutoConfig, AutoModelForCausalLM, GenerationMixin, PreTrainedModel
from transformers.activations import ACT2FN
from transformers.modeling_outputs import CausalLMOutputWithPast

from subnas.config import SubnasConfig
from subnas.subnet import LayerSelection, ResolvedSubNetwork, SubNetwork

Index = slice | torch.Tensor
Selection = tuple[tuple[int, Index], ...]  # (dim, index) pairs, applied in order
Slice = tuple[str, torch.Tensor, Selection]  # a weight's name in its block, the full weight, what is kept of it


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


def _select(w: torch.Tensor, selection: Selection) -> torch.Tensor:
    for dim, idx in selection:
        w = _take(w, dim, idx)
    return w


# ---------------------------------------------------------------------------- plans
@dataclass
class _Plan:
    """What a block needs to find its weights in the active sub-network (base of the plans below).

    Plans are computed once per `set_sub_network`; all plans of one sub-network share one cache of
    gathered weights, so no gather outlives the sub-network it was made for.
    """

    embd: Index  # the kept embedding channels, read by every norm and projection
    cache: dict[Any, tuple[int, torch.Tensor]]  # key -> (weight version when gathered, gathered weight)

    def gather(self, key: Any, param: torch.Tensor, selection: Selection) -> torch.Tensor:
        """``param`` restricted to ``selection``: a view when every index is a contiguous run, else a
        gather cached under ``key`` until the weight changes (its version) or moves to another device."""
        if all(isinstance(idx, slice) for _, idx in selection):
            return _select(param, selection)
        if torch.is_grad_enabled() and param.requires_grad:
            return _select(param, selection)  # training through the supernet: gather inside the graph, no cache
        hit = self.cache.get(key)
        if hit is not None and hit[0] == param._version and hit[1].device == param.device:
            return hit[1]
        with torch.no_grad():
            out = _select(param, selection).contiguous()
        self.cache[key] = (param._version, out)
        return out

    def weights(self, block: _Block) -> dict[str, torch.Tensor]:
        """``block``'s weights in this sub-network, by name, to compute with (views or cached gathers).

        A gather is cached under the weight itself: a plan keeps one selection of each weight."""
        return {name: self.gather(param, param, selection) for name, param, selection in block.slices(self)}


@dataclass
class _LayerPlan(_Plan):
    """Everything one kept layer needs at run time."""

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


@dataclass
class _SubnetPlan(_Plan):
    """The whole active sub-network: embeddings and head, and the kept layers in order."""

    vocab: Index  # kept token ids: rows of the embedding and the head
    embd_width: int
    layers: list[_LayerPlan]


@dataclass
class _Pass:
    """What the layers of one forward pass share."""

    masks: dict[bool, torch.Tensor | None]  # by "is a sliding-window layer"; None: plain causal
    position_ids: torch.Tensor
    recorder: Any  # SubnasForCausalLM.recorder
    rope_tables: dict[Any, tuple[torch.Tensor, torch.Tensor]] = field(default_factory=dict)

    def rope(self, plan: _LayerPlan, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """cos and sin of ``plan``'s kept rotary frequencies, computed once per pass for equal ones."""
        hit = self.rope_tables.get(plan.rope_key)
        if hit is None:
            inv = plan.inv_freq.to(self.position_ids.device)
            freqs = self.position_ids[..., None].float() * inv
            emb = torch.cat((freqs, freqs), dim=-1)
            hit = ((emb.cos() * plan.rope_scaling).to(dtype)[:, None], (emb.sin() * plan.rope_scaling).to(dtype)[:, None])
            self.rope_tables[plan.rope_key] = hit
        return hit


def _masks(attention_mask: torch.Tensor | None, T: int, device: torch.device,
           window: int | None) -> dict[bool, torch.Tensor | None]:
    """Boolean masks (True = attend) for full and sliding layers; ``None`` means plain causal."""
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


# ---------------------------------------------------------------------------- blocks
class _Block(nn.Module):
    """A part of the decoder that lists, once, which slices of its weights a sub-network uses.

    `forward` computes with exactly those slices (through `_Plan.weights`) and `sliced_state`
    exports them, so what is evaluated is what is exported (docs/design.md#invariants, invariant 1).
    """

    def slices(self, plan: Any) -> Iterator[Slice]:
        """``(name relative to the block, full weight, selection)`` of each weight the plan uses."""
        raise NotImplementedError

    def sliced_state(self, plan: Any, prefix: str = "") -> dict[str, torch.Tensor]:
        """This block's weights under ``plan`` as standalone tensors, named ``prefix`` + relative name."""
        with torch.no_grad():
            return {prefix + name: _select(param, selection).detach().contiguous().clone()
                    for name, param, selection in self.slices(plan)}


def _prefixed(prefix: str, slices: Iterable[Slice]) -> Iterator[Slice]:
    for name, param, selection in slices:
        yield prefix + name, param, selection


def _linear_slices(name: str, linear: nn.Linear, rows: Index, cols: Index) -> Iterator[Slice]:
    """A projection keeps ``rows`` (outputs) x ``cols`` (inputs) of its weight and ``rows`` of its bias."""
    yield f"{name}.weight", linear.weight, ((0, rows), (1, cols))
    if linear.bias is not None:
        yield f"{name}.bias", linear.bias, ((0, rows),)


class _Norm(_Block):
    """RMSNorm (Gemma: scaled by ``offset + w``) or LayerNorm over the kept embedding channels."""

    def __init__(self, config: SubnasConfig, size: int) -> None:
        super().__init__()
        self.kind, self.eps, self.offset = config.norm_type, config.norm_eps, config.norm_weight_offset
        self.weight = nn.Parameter(torch.ones(size))
        self.bias = nn.Parameter(torch.zeros(size)) if self.kind == "layernorm" else None

    def slices(self, plan: _Plan) -> Iterator[Slice]:
        yield "weight", self.weight, ((0, plan.embd),)
        if self.bias is not None:
            yield "bias", self.bias, ((0, plan.embd),)

    def forward(self, x: torch.Tensor, plan: _Plan) -> torch.Tensor:
        w = plan.weights(self)
        return self.normalize(x, w["weight"], w.get("bias"))

    def normalize(self, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        if self.kind == "layernorm":
            return F.layer_norm(x, (x.shape[-1],), weight, bias, self.eps)
        dtype = x.dtype
        h = x.float()
        h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + self.eps)
        if self.offset:  # Gemma: (1 + w), computed in float32
            return (h * (self.offset + weight.float())).to(dtype)
        return weight * h.to(dtype)  # Llama/Qwen: cast first, then scale


class _Embedding(_Block, nn.Embedding):
    """Token embedding (rows: the kept token ids) or learned position embedding (rows: every
    position); columns: the kept embedding channels.

    A pruned vocabulary gathers the kept rows: input ids (and logits, through the tied head) are in
    the sub-network's own numbering 0..len(vocab)-1, exactly as in its export.
    """

    def __init__(self, rows: int, width: int, *, tokens: bool) -> None:
        super().__init__(rows, width)
        self.tokens = tokens

    def slices(self, plan: _SubnetPlan) -> Iterator[Slice]:
        yield "weight", self.weight, ((0, plan.vocab if self.tokens else slice(None)), (1, plan.embd))

    def forward(self, ids: torch.Tensor, plan: _SubnetPlan | None = None) -> torch.Tensor:
        if plan is None:  # a plain nn.Embedding, for transformers utilities that call get_input_embeddings()
            return super().forward(ids)  # type: ignore[no-any-return]
        return F.embedding(ids, plan.weights(self)["weight"])


class _Attention(_Block):
    """Grouped-query self-attention over the kept heads, query groups and head dims (with their
    rotary pairs), optionally with per-head q/k norms (Qwen3, Gemma 3)."""

    def __init__(self, config: SubnasConfig, i: int) -> None:
        super().__init__()
        self.config = config
        E = config.hidden_size
        H, G, Hs = config.num_attention_heads[i], config.num_key_value_heads[i], config.head_dim[i]
        self.q = nn.Linear(E, H * Hs, bias=config.qkv_bias)
        self.k = nn.Linear(E, G * Hs, bias=config.qkv_bias)
        self.v = nn.Linear(E, G * Hs, bias=config.qkv_bias)
        self.o = nn.Linear(H * Hs, E, bias=config.o_bias)
        if config.qk_norm:
            self.q_norm = _Norm(config, Hs)
            self.k_norm = _Norm(config, Hs)

    def slices(self, plan: _LayerPlan) -> Iterator[Slice]:
        yield from _linear_slices("q", self.q, plan.q_rows, plan.embd)
        yield from _linear_slices("k", self.k, plan.kv_rows, plan.embd)
        yield from _linear_slices("v", self.v, plan.kv_rows, plan.embd)
        yield from _linear_slices("o", self.o, plan.embd, plan.q_rows)
        if self.config.qk_norm:  # over each head's kept dims; weights only (no family has a q/k-norm bias)
            yield "q_norm.weight", self.q_norm.weight, ((0, plan.head_dims),)
            yield "k_norm.weight", self.k_norm.weight, ((0, plan.head_dims),)

    def forward(self, x: torch.Tensor, plan: _LayerPlan, run: _Pass) -> torch.Tensor:
        w, p = plan.weights(self), plan
        B, T, _ = x.shape
        q = F.linear(x, w["q.weight"], w.get("q.bias")).view(B, T, p.num_heads, p.head_size)
        k = F.linear(x, w["k.weight"], w.get("k.bias")).view(B, T, p.num_groups, p.head_size)
        v = F.linear(x, w["v.weight"], w.get("v.bias")).view(B, T, p.num_groups, p.head_size).transpose(1, 2)
        if self.config.qk_norm:
            q = self.q_norm.normalize(q, w["q_norm.weight"], None)
            k = self.k_norm.normalize(k, w["k_norm.weight"], None)
        q, k = q.transpose(1, 2), k.transpose(1, 2)
        if p.rotary_dim:
            cos, sin = run.rope(p, q.dtype)
            q, k = _apply_rope(q, cos, sin, p.rotary_dim), _apply_rope(k, cos, sin, p.rotary_dim)
        if p.num_groups != p.num_heads:
            rep = p.num_heads // p.num_groups
            k = k[:, :, None].expand(B, p.num_groups, rep, T, p.head_size).reshape(B, p.num_heads, T, p.head_size)
            v = v[:, :, None].expand(B, p.num_groups, rep, T, p.head_size).reshape(B, p.num_heads, T, p.head_size)
        scale = self.config.attention_scale  # None: 1/sqrt(head size), of the sub-network's head size
        mask = run.masks[p.sliding]
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=mask is None and T > 1,
                                             scale=scale if scale is not None else p.head_size**-0.5)
        if run.recorder is not None:
            run.recorder("heads_out", p.layer, out)  # [B, heads, T, head_size], before the output projection
        out = out.transpose(1, 2).reshape(B, T, p.num_heads * p.head_size)
        return F.linear(out, w["o.weight"], w.get("o.bias"))


class _MLP(_Block):
    """Plain (act(up)) or gated (act(gate) * up) MLP over the kept neurons."""

    def __init__(self, config: SubnasConfig, i: int) -> None:
        super().__init__()
        self.config = config
        E, D = config.hidden_size, config.intermediate_size[i]
        if config.mlp_type == "gated":
            self.gate = nn.Linear(E, D, bias=config.mlp_bias)
        self.up = nn.Linear(E, D, bias=config.mlp_bias)
        self.down = nn.Linear(D, E, bias=config.mlp_bias)
        self.act = ACT2FN[config.hidden_act]

    def slices(self, plan: _LayerPlan) -> Iterator[Slice]:
        if self.config.mlp_type == "gated":
            yield from _linear_slices("gate", self.gate, plan.neurons, plan.embd)
        yield from _linear_slices("up", self.up, plan.neurons, plan.embd)
        yield from _linear_slices("down", self.down, plan.embd, plan.neurons)

    def forward(self, x: torch.Tensor, plan: _LayerPlan, run: _Pass) -> torch.Tensor:
        w = plan.weights(self)
        up = F.linear(x, w["up.weight"], w.get("up.bias"))
        if self.config.mlp_type == "gated":
            up = self.act(F.linear(x, w["gate.weight"], w.get("gate.bias"))) * up
        else:
            up = self.act(up)
        if run.recorder is not None:
            run.recorder("mlp_act", plan.layer, up)
        return F.linear(up, w["down.weight"], w.get("down.bias"))


class _Layer(_Block):
    """Attention and MLP with their norms, joined by the family's residual: sequential (pre-norm),
    parallel (GPT-NeoX: both branches read the layer's input) or sandwich (Gemma: each branch's
    output is normed too)."""

    def __init__(self, config: SubnasConfig, i: int) -> None:
        super().__init__()
        self.config = config
        E = config.hidden_size
        self.attn_norm = _Norm(config, E)
        self.attn = _Attention(config, i)
        self.mlp_norm = _Norm(config, E)
        self.mlp = _MLP(config, i)
        if config.residual == "sandwich":
            self.post_attn_norm = _Norm(config, E)
            self.post_mlp_norm = _Norm(config, E)

    def slices(self, plan: _LayerPlan) -> Iterator[Slice]:
        sandwich = ("post_attn_norm", "post_mlp_norm") if self.config.residual == "sandwich" else ()
        for name in ("attn_norm", "mlp_norm", *sandwich, "attn", "mlp"):
            yield from _prefixed(name + ".", getattr(self, name).slices(plan))

    def forward(self, x: torch.Tensor, plan: _LayerPlan, run: _Pass) -> torch.Tensor:
        if run.recorder is not None:
            run.recorder("layer_in", plan.layer, x)
        branch = self._branch
        if self.config.residual == "parallel":
            x = x + branch(self.attn_norm, self.attn, x, plan, run) + branch(self.mlp_norm, self.mlp, x, plan, run)
        elif self.config.residual == "sandwich":
            x = x + self.post_attn_norm(branch(self.attn_norm, self.attn, x, plan, run), plan)
            x = x + self.post_mlp_norm(branch(self.mlp_norm, self.mlp, x, plan, run), plan)
        else:
            x = x + branch(self.attn_norm, self.attn, x, plan, run)
            x = x + branch(self.mlp_norm, self.mlp, x, plan, run)
        if run.recorder is not None:
            run.recorder("layer_out", plan.layer, x)
        return x

    def _branch(self, norm: _Norm, block: _Attention | _MLP, x: torch.Tensor, plan: _LayerPlan,
                run: _Pass) -> torch.Tensor:
        h = norm(x, plan)
        if run.recorder is not None:  # the pre-norms' outputs: importance of the embedding channels
            run.recorder("norm_out", plan.layer, h)
        return block(h, plan, run)  # type: ignore[no-any-return]


class _Decoder(_Block):
    """Embeddings, the kept layers in order, the final norm: hidden states for the head."""

    def __init__(self, config: SubnasConfig) -> None:
        super().__init__()
        self.config = config
        self.embed = _Embedding(config.vocab_size, config.hidden_size, tokens=True)
        if config.position_embedding == "learned":
            self.pos_embed = _Embedding(config.max_position_embeddings, config.hidden_size, tokens=False)
        self.layers = nn.ModuleList(_Layer(config, i) for i in range(config.num_hidden_layers))
        self.final_norm = _Norm(config, config.hidden_size)

    def slices(self, plan: _SubnetPlan) -> Iterator[Slice]:
        yield from _prefixed("embed.", self.embed.slices(plan))
        if self.config.position_embedding == "learned":
            yield from _prefixed("pos_embed.", self.pos_embed.slices(plan))
        for j, layer_plan in enumerate(plan.layers):  # the kept layers, renumbered 0..n-1 as in the export
            yield from _prefixed(f"layers.{j}.", self.layers[layer_plan.layer].slices(layer_plan))
        yield from _prefixed("final_norm.", self.final_norm.slices(plan))

    def forward(self, input_ids: torch.Tensor, plan: _SubnetPlan, *, attention_mask: torch.Tensor | None,
                position_ids: torch.Tensor | None, recorder: Any) -> torch.Tensor:
        cfg = self.config  # read at each pass, as callers may change e.g. the sliding window in place
        _, T = input_ids.shape
        if T > cfg.max_position_embeddings and cfg.position_embedding == "learned":
            raise ValueError(f"sequence length {T} exceeds the model's {cfg.max_position_embeddings} positions")
        x = self.embed(input_ids, plan)
        if cfg.embedding_scale:
            x = x * torch.tensor(plan.embd_width**0.5, dtype=torch.float32).to(x.dtype)
        if position_ids is None:
            position_ids = torch.arange(T, device=input_ids.device).unsqueeze(0)
        if cfg.position_embedding == "learned":
            x = x + self.pos_embed(position_ids, plan)
        run = _Pass(masks=_masks(attention_mask, T, x.device, cfg.sliding_window), position_ids=position_ids,
                    recorder=recorder)
        for layer_plan in plan.layers:
            x = self.layers[layer_plan.layer](x, layer_plan, run)
        return self.final_norm(x, plan)  # type: ignore[no-any-return]


class _Head(_Block, nn.Linear):
    """The untied output head: rows are the kept token ids, columns the kept embedding channels."""

    def slices(self, plan: _SubnetPlan) -> Iterator[Slice]:
        yield "weight", self.weight, ((0, plan.vocab), (1, plan.embd))

    def forward(self, x: torch.Tensor, plan: _SubnetPlan | None = None) -> torch.Tensor:
        if plan is None:  # a plain nn.Linear, for transformers utilities that call get_output_embeddings()
            return super().forward(x)  # type: ignore[no-any-return]
        return F.linear(x, plan.weights(self)["weight"])


# ---------------------------------------------------------------------------- the model
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

    _subnet_plan: _SubnetPlan  # the active sub-network's plans and gather cache (set_sub_network)

    def __init__(self, config: SubnasConfig) -> None:
        super().__init__(config)
        self.model = _Decoder(config)
        if not config.tie_word_embeddings:
            self.lm_head = _Head(config.hidden_size, config.vocab_size, bias=False)
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
        embd = _index(resolved.embd, cfg.hidden_size)
        cache: dict[Any, tuple[int, torch.Tensor]] = {}  # a fresh cache: gathers of the previous sub-network go
        self._subnet_plan = _SubnetPlan(
            embd=embd, cache=cache,
            vocab=slice(None) if resolved.vocab is None else _index(resolved.vocab, cfg.vocab_size),
            embd_width=len(resolved.embd), layers=[self._layer_plan(s, embd, cache) for s in resolved.layers],
        )

    def _layer_plan(self, s: LayerSelection, embd: Index, cache: dict[Any, tuple[int, torch.Tensor]]) -> _LayerPlan:
        cfg, i = self.config, s.layer
        Hs = cfg.head_dim[i]
        q_rows = tuple(h * Hs + d for h in s.heads for d in s.head_dims)
        kv_rows = tuple(g * Hs + d for g in s.groups for d in s.head_dims)
        kept = [cfg.rope_inv_freq[i][p] for p in s.rotary_pairs]
        # Explicit CPU: plans are built even inside `torch.device("meta")` model construction.
        freqs = torch.tensor(kept, dtype=torch.float32, device="cpu")
        return _LayerPlan(
            embd=embd, cache=cache,
            layer=i, num_heads=s.num_heads, num_groups=s.query_groups, head_size=s.head_size,
            rotary_dim=s.rotary_dim, q_rows=_index(q_rows, cfg.num_attention_heads[i] * Hs),
            kv_rows=_index(kv_rows, cfg.num_key_value_heads[i] * Hs), head_dims=_index(s.head_dims, Hs),
            neurons=_index(s.neurons, cfg.intermediate_size[i]), inv_freq=freqs,
            rope_scaling=cfg.rope_attention_scaling[i], sliding=cfg.layer_types[i] == "sliding_attention",
            rope_key=(tuple(kept), cfg.rope_attention_scaling[i]),
        )

    # ------------------------------------------------------------------ forward
    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        **kwargs: Any,
    ) -> CausalLMOutputWithPast:
        cfg, plan = self.config, self._subnet_plan
        x = self.model(input_ids, plan, attention_mask=attention_mask, position_ids=position_ids, recorder=self.recorder)
        if cfg.tie_word_embeddings:  # the embedding is the head: the same slice, the same cached gather
            logits = F.linear(x, plan.weights(self.model.embed)["weight"])
        else:
            logits = self.lm_head(x, plan)
        if cfg.final_logit_softcapping:
            logits = torch.tanh(logits / cfg.final_logit_softcapping) * cfg.final_logit_softcapping
        loss = None
        if labels is not None:
            loss = F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]).float(),
                                   labels[:, 1:].reshape(-1).to(logits.device), ignore_index=-100)
        return CausalLMOutputWithPast(loss=loss, logits=logits)

    # ------------------------------------------------------------------ extraction
    def sub_state_dict(self) -> dict[str, torch.Tensor]:
        """The active sub-network's weights, named for a `SubnasForCausalLM` of `sub_config()`.

        The blocks' `sliced_state`: the very slices their `forward` computes with, so the exported
        model computes exactly what was evaluated (docs/design.md#invariants, invariant 1).
        """
        plan = self._subnet_plan
        state = self.model.sliced_state(plan, prefix="model.")
        if not self.config.tie_word_embeddings:
            state.update(self.lm_head.sliced_state(plan, prefix="lm_head."))
        return state


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


# The flexible export format (model_type "subnas") loads through the Auto classes as soon as this
# module is imported (``import subnas`` does), with no trust_remote_code.
AutoConfig.register("subnas", SubnasConfig, exist_ok=True)
AutoModelForCausalLM.register(SubnasConfig, SubnasForCausalLM, exist_ok=True)
