"""Importance scores (paper Appendix E, after Minitron): cheap fitness for sub-networks.

One calibration pass of the full model records, per unit,

* MLP neuron: mean |activation| entering the down projection (|act(X·W1)[:, i]|);
* embedding channel: mean |output| of every LayerNorm/RMSNorm, summed over norms;
* attention head: mean L2 norm of the head's attention output (before the output projection);
* head dimension: mean |attention output| of that dimension over all heads;
* block: 1 − mean cosine similarity between a block's input and output;

or, without data, weight magnitudes (L2 norms of the weights each unit owns). Scores are
softmax-normalised per component (within each layer for per-layer components) after
standardisation, because raw activation scales differ by orders of magnitude and a bare softmax
would put all mass on one unit. A sub-network's score is the mean over components of the
importance mass it keeps: 1.0 for the full model, higher is better. Scoring a candidate is a few
index sums over precomputed arrays — microseconds — and never touches the model.
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
    """Softmax of standardised scores, and its prefix sums (for O(1) coarse lookups)."""
    s = scores.double()
    std = s.std() if s.numel() > 1 else torch.tensor(1.0, dtype=torch.float64)
    z = (s - s.mean()) / (std if std > 0 else 1.0)
    values = torch.softmax(z, dim=0).numpy()
    return values, np.concatenate([[0.0], np.cumsum(values)])


class ImportanceScorer:
    """Scores sub-networks from precomputed `ImportanceScores` in microseconds.

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

    def __call__(self, subnet: SubNetwork | ResolvedSubNetwork) -> float:
        r = subnet.resolve(self.config) if isinstance(subnet, SubNetwork) else subnet
        L = self.config.num_hidden_layers
        embd = _mass(self.embd, r.embd)
        blocks = _mass(self.blocks, tuple(s.layer for s in r.layers))
        heads = sum(_mass(self.heads[s.layer], s.heads) for s in r.layers) / L
        dims = sum(_mass(self.head_dims[s.layer], s.head_dims, ascending=False) for s in r.layers) / L
        neurons = sum(_mass(self.neurons[s.layer], s.neurons) for s in r.layers) / L
        return round((embd + blocks + heads + dims + neurons) / 5.0, 12)


def _mass(weights: tuple[np.ndarray, np.ndarray], idx: tuple[int, ...], *, ascending: bool = True) -> float:
    """Sum of ``weights[idx]``; a contiguous run (every coarse choice) is one prefix-sum lookup.

    ``ascending``: ``idx`` is sorted (true for every index set but head dims), so first/last
    bound it and contiguity is an O(1) test.
    """
    values, prefix = weights
    if ascending and idx[-1] - idx[0] + 1 == len(idx):
        return float(prefix[idx[-1] + 1] - prefix[idx[0]])
    return float(values[list(idx)].sum())


def cached_scores(model: Any, method: str, *, tokens: torch.Tensor | None = None, source: str = "",
                  cache_dir: Path | None = None, batch_size: int = 4) -> ImportanceScores:
    """`activation_scores` / `magnitude_scores`, computed once and cached as safetensors."""
    if method not in METHODS:
        raise ValueError(f"importance method {method!r} is not one of {METHODS}")
    if method == "activation" and tokens is None:
        raise ValueError("activation importance needs calibration tokens (--data)")
    from subnas.assets import cache_root

    h = hashlib.sha256(f"{method}|{source}|{model.config.to_json_string()}".encode())
    if tokens is not None and method == "activation":
        h.update(tokens.numpy().tobytes())
    path = (cache_dir or cache_root() / "importance") / f"{h.hexdigest()[:24]}.safetensors"
    if path.is_file():
        return ImportanceScores.from_state(load_file(path))
    scores = magnitude_scores(model) if method == "magnitude" else activation_scores(model, tokens, batch_size=batch_size)
    atomic_write_bytes(path, save(scores.to_state()))
    return scores
