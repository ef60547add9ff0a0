"""Importance scores (paper Appendix E, after Minitron): cheap fitness for sub-networks.

One calibration pass of the full model records, per unit,

* MLP neuron: mean |activation| entering the down projection (|act(X·W1)[:, i]|);
* embedding channel: mean |output| of every LayerNorm/RMSNorm, summed over norms;
* attention head: mean L2 norm of the head's attention output (before the output projection);
* head dimension: mean |attention output| of that dimension over all heads;
* block: 1 − mean cosine similarity between a block's input and output;

or, without data, weight magnitudes (L2 norms of the weights each unit owns). Scores become unit
weights per component (within each layer for per-layer components) by ``log1p(score / median)``,
which keeps their order but not the outliers' dominance; a sub-network's score is the
importance-weighted share of parameters it keeps (`ImportanceScorer`): 1.0 for the full model,
higher is better. Scoring a candidate is a few index sums over precomputed arrays — microseconds —
and never touches the model. The same scores order the units of the search spaces
(`subnas.spaces.UnitOrder`).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save

from subnas._io import atomic_write_bytes
from subnas.config import SubnasConfig
from subnas.subnet import ResolvedSubNetwork, SubNetwork

METHODS = ("activation", "magnitude")


@dataclass
class ImportanceScores:
    """Raw per-unit scores of a full model (one tensor per component and layer)."""

    embd: torch.Tensor  # [E]
    blocks: torch.Tensor  # [L]
    heads: list[torch.Tensor]  # per layer [H_l]
    head_dims: list[torch.Tensor]  # per layer [Hs_l]
    neurons: list[torch.Tensor]  # per layer [D_l]

    def to_state(self) -> dict[str, torch.Tensor]:
        state = {"embd": self.embd, "blocks": self.blocks}
        for name in ("heads", "head_dims", "neurons"):
            for i, t in enumerate(getattr(self, name)):
                state[f"{name}.{i}"] = t
        return {k: v.detach().float().contiguous().cpu() for k, v in state.items()}

    @classmethod
    def from_state(cls, state: dict[str, torch.Tensor]) -> ImportanceScores:
        n = int(state["blocks"].numel())
        return cls(embd=state["embd"], blocks=state["blocks"],
                   **{name: [state[f"{name}.{i}"] for i in range(n)] for name in ("heads", "head_dims", "neurons")})


def activation_scores(model: Any, tokens: torch.Tensor, *, batch_size: int = 4) -> ImportanceScores:
    """One calibration pass of the full ``model`` (a `SubnasForCausalLM`) over ``tokens``."""
    cfg: SubnasConfig = model.config
    L = cfg.num_hidden_layers
    embd = torch.zeros(cfg.hidden_size, dtype=torch.float64)
    blocks = torch.zeros(L, dtype=torch.float64)
    heads = [torch.zeros(h, dtype=torch.float64) for h in cfg.num_attention_heads]
    dims = [torch.zeros(d, dtype=torch.float64) for d in cfg.head_dim]
    neurons = [torch.zeros(d, dtype=torch.float64) for d in cfg.intermediate_size]
    layer_in: dict[int, torch.Tensor] = {}

    def record(kind: str, layer: int, x: torch.Tensor) -> None:
        x = x.detach().float()
        if kind == "norm_out":
            embd.add_(x.abs().mean(dim=(0, 1)).double())
        elif kind == "heads_out":  # [B, H, T, Hs]
            heads[layer].add_(x.norm(dim=-1).mean(dim=(0, 2)).double())
            dims[layer].add_(x.abs().mean(dim=(0, 1, 2)).double())
        elif kind == "mlp_act":
            neurons[layer].add_(x.abs().mean(dim=(0, 1)).double())
        elif kind == "layer_in":
            layer_in[layer] = x
        elif kind == "layer_out":
            cos = torch.nn.functional.cosine_similarity(layer_in.pop(layer), x, dim=-1)
            blocks[layer] += float(1.0 - cos.mean())

    model.reset()
    model.recorder = record
    try:
        with torch.no_grad():
            for batch in tokens.split(batch_size):
                model(batch.to(next(model.parameters()).device))
    finally:
        model.recorder = None
    return ImportanceScores(embd=embd, blocks=blocks, heads=heads, head_dims=dims, neurons=neurons)


def magnitude_scores(model: Any) -> ImportanceScores:
    """Weight-magnitude importance: the L2 norm of the weights each unit reads and writes."""
    cfg: SubnasConfig = model.config
    layers = model.model.layers
    with torch.no_grad():
        embd = model.model.embed.weight.float().norm(dim=0).double()
        heads, dims, neurons, blocks = [], [], [], []
        for i, layer in enumerate(layers):
            H, Hs = cfg.num_attention_heads[i], cfg.head_dim[i]
            q = layer.attn.q.weight.float().view(H, Hs, -1)
            o = layer.attn.o.weight.float().view(-1, H, Hs)
            heads.append((q.pow(2).sum(dim=(1, 2)) + o.pow(2).sum(dim=(0, 2))).sqrt().double())
            dims.append((q.pow(2).sum(dim=(0, 2)) + o.pow(2).sum(dim=(0, 1))).sqrt().double())
            up, down = layer.mlp.up.weight.float(), layer.mlp.down.weight.float()
            neurons.append((up.pow(2).sum(dim=1) + down.pow(2).sum(dim=0)).sqrt().double())
            blocks.append(float(sum(p.float().pow(2).sum() for p in layer.parameters()) ** 0.5))
    return ImportanceScores(embd=embd, blocks=torch.tensor(blocks, dtype=torch.float64), heads=heads,
                            head_dims=dims, neurons=neurons)


def _normalise(scores: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Unit weights summing to 1, and their prefix sums (for O(1) coarse lookups).

    ``log1p(score / median)``: monotone in the score, so the order is kept, but compressive, so
    the handful of outlier units that real LLMs have (massive-activation channels, layer 0's
    block influence) cannot take all the mass — a softmax of standardised scores did, and every
    candidate of a bin then scored ~1.0 (no ranking at all).
    """
    s = scores.double().clamp(min=0)
    median = float(s.median()) if s.numel() else 0.0
    w = torch.log1p(s / median) if median > 0 else torch.ones_like(s)
    total = float(w.sum())
    values = (w / total if total > 0 else torch.full_like(w, 1.0 / max(1, w.numel()))).numpy()
    return values, np.concatenate([[0.0], np.cumsum(values)])


class ImportanceScorer:
    """Scores sub-networks from precomputed `ImportanceScores` in microseconds.

    A sub-network's score is the importance-weighted fraction of the model's parameters it keeps:
    the embedding counts with its share of the parameters times the channel weight it keeps; each
    layer counts with its block weight (block influence) times its parameters, of which attention
    keeps (head weight kept × head-dim weight kept) and the MLP keeps its neuron weight. 1.0 for
    the full model, higher is better, and candidates of one bin spread out (see `_normalise`).

    A pruned vocabulary (issue #13) keeps ``V'/V`` of the embedding's rows (and of an untied
    head's), so the embedding term is multiplied by that share of rows: exactly the share of the
    embedding's parameters kept, as `subnas.count_parameters` counts them. Not by the kept tokens'
    share of calibration token frequency: the kept tokens are the most frequent ones on that very
    split, so the share says almost nothing is lost (SmolLM2: 0.90 at 4k tokens, 0.97 at 8k,
    1.00 from 16k on: only ~10k distinct tokens occur), while the teacher with only its vocabulary
    pruned loses a lot (validation bits per byte 0.845 full, 1.142 at 16k, 1.876 at 4k;
    docs/benchmarks/tiny_targets.md): dropped tokens are not unused, the text they covered is
    re-split into smaller pieces the model rarely saw in that combination.

    Example:
        >>> import torch
        >>> from subnas import SubnasConfig, SubnasForCausalLM, SubNetwork
        >>> model = SubnasForCausalLM(SubnasConfig(vocab_size=50, hidden_size=16, num_hidden_layers=2,
        ...                                        num_attention_heads=2, intermediate_size=32))
        >>> scorer = ImportanceScorer(magnitude_scores(model), model.config)
        >>> scorer(SubNetwork()), scorer(SubNetwork(n_layers=1)) < 1.0
        (1.0, True)
    """

    def __init__(self, scores: ImportanceScores, config: SubnasConfig) -> None:
        self.config = config
        self.embd = _normalise(scores.embd)
        self.blocks = _normalise(scores.blocks)
        self.heads = [_normalise(t) for t in scores.heads]
        self.head_dims = [_normalise(t) for t in scores.head_dims]
        self.neurons = [_normalise(t) for t in scores.neurons]
        E, matrices = config.hidden_size, 3 if config.mlp_type == "gated" else 2
        self.attn_params = [2 * E * config.head_dim[i] * (config.num_attention_heads[i] + config.num_key_value_heads[i])
                            for i in range(config.num_hidden_layers)]
        self.mlp_params = [matrices * E * d for d in config.intermediate_size]
        layers = sum(self.attn_params) + sum(self.mlp_params)
        embedding = config.vocab_size * E * (1 if config.tie_word_embeddings else 2)
        self.embd_share, self.layer_share = embedding / (embedding + layers), layers / (embedding + layers)

    def __call__(self, subnet: SubNetwork | ResolvedSubNetwork) -> float:
        r = subnet.resolve(self.config) if isinstance(subnet, SubNetwork) else subnet
        block_weights = self.blocks[0]
        layers = 0.0
        for s in r.layers:
            i = s.layer
            attn = _mass(self.heads[i], s.heads) * _mass(self.head_dims[i], s.head_dims, ascending=False)
            mlp = _mass(self.neurons[i], s.neurons)
            layers += block_weights[i] * (self.attn_params[i] * attn + self.mlp_params[i] * mlp) / (
                self.attn_params[i] + self.mlp_params[i])
        rows = 1.0 if r.vocab is None else len(r.vocab) / self.config.vocab_size  # kept vocabulary
        return float(round(self.embd_share * rows * _mass(self.embd, r.embd) + self.layer_share * layers, 12))


def _mass(weights: tuple[np.ndarray, np.ndarray], idx: tuple[int, ...], *, ascending: bool = True) -> float:
    """Sum of ``weights[idx]``; a contiguous run (every coarse choice) is one prefix-sum lookup.

    ``ascending``: ``idx`` is sorted (true for every index set but head dims), so first/last
    bound it and contiguity is an O(1) test.
    """
    values, prefix = weights
    if ascending and idx[-1] - idx[0] + 1 == len(idx):
        return float(prefix[idx[-1] + 1] - prefix[idx[0]])
    return float(values[list(idx)].sum())


def layer_removal_scores(model: Any, tokens: torch.Tensor, *, batch_size: int = 4,
                         progress: bool = True) -> torch.Tensor:
    """How much the mean next-token loss on ``tokens`` rises when each layer alone is skipped ([L], nats).

    The layer criterion of the importance order (`subnas.spaces._ordering`): one forward pass of the model
    without layer i, for every i. Block influence (1 − cos(x_in, x_out), ShortGPT) is the cheap
    proxy for the same question, and on SmolLM2-135M a poor one: it ranks layer 11 15th of 30
    where skipping it costs 1.84 nats (the 4th largest cost), and layer 2 (0.58 nats) 19th. Ranking
    by the measured cost, the one-shot grid's best 85M–100M sub-network has validation perplexity
    110.7 instead of 128.9, 55M–65M 759 instead of 2,577 (docs/benchmarks/search.md).
    """
    from tqdm.auto import tqdm

    from subnas.evaluation._perplexity import mean_token_nll

    L = model.config.num_hidden_layers
    previous = getattr(model, "active", None)
    costs = torch.zeros(L, dtype=torch.float64)
    try:
        model.reset()
        full = mean_token_nll(model, tokens, batch_size=batch_size, progress=False)
        for i in tqdm(range(L), desc="layer removal", unit="layer", disable=None if progress else True):
            keep = tuple(j for j in range(L) if j != i)
            model.set_sub_network(SubNetwork(n_layers=L - 1, layer_indices=keep))
            costs[i] = mean_token_nll(model, tokens, batch_size=batch_size, progress=False) - full
    finally:
        model.set_sub_network(previous)
    return costs


def _cache_path(method: str, model: Any, source: str, tokens: torch.Tensor | None, cache_dir: Path | None) -> Path:
    from subnas.data._assets import cache_root

    h = hashlib.sha256(f"{method}|{source}|{model.config.to_json_string()}".encode())
    if tokens is not None and method != "magnitude":
        h.update(tokens.numpy().tobytes())
    return (cache_dir or cache_root() / "importance") / f"{h.hexdigest()[:24]}.safetensors"


def cached_scores(model: Any, method: str, *, tokens: torch.Tensor | None = None, source: str = "",
                  cache_dir: Path | None = None, batch_size: int = 4) -> ImportanceScores:
    """`activation_scores` / `magnitude_scores`, computed once and cached as safetensors."""
    if method not in METHODS:
        raise ValueError(f"importance method {method!r} is not one of {METHODS}")
    if method == "activation" and tokens is None:
        raise ValueError("activation importance needs calibration tokens (--data)")
    path = _cache_path(method, model, source, tokens, cache_dir)
    if path.is_file():
        return ImportanceScores.from_state(load_file(path))
    scores = magnitude_scores(model) if method == "magnitude" else activation_scores(model, tokens, batch_size=batch_size)
    state = scores.to_state()
    atomic_write_bytes(path, save(state))
    # What the cache will return (float32), so a first run and a cached one rank near-ties alike.
    return ImportanceScores.from_state(state)


def cached_layer_removal(model: Any, tokens: torch.Tensor, *, source: str = "", cache_dir: Path | None = None,
                         batch_size: int = 4) -> torch.Tensor:
    """`layer_removal_scores`, computed once per (model, tokens) and cached as safetensors."""
    path = _cache_path("layer-removal", model, source, tokens, cache_dir)
    if path.is_file():
        return load_file(path)["removal"]
    costs = layer_removal_scores(model, tokens, batch_size=batch_size)
    # float64 both ways, so a cached ranking is the computed one even for near-ties.
    atomic_write_bytes(path, save({"removal": costs.contiguous()}))
    return costs
