"""Hypothesis strategies for legal sub-networks of any `SubnasConfig` (tests only).

Independent of the search spaces on purpose: the invariants are checked against sub-networks drawn
here, so a bug in a space cannot hide a bug in the supernet or the exporter.
"""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st

from subnas import SubnasConfig, SubNetwork


@st.composite
def subnetworks(draw: Any, config: SubnasConfig, *, fine: bool, layerwise: bool, vocab: bool = False) -> SubNetwork:
    L, E = config.num_hidden_layers, config.hidden_size
    n = draw(st.integers(1, L))
    layers = sorted(draw(st.permutations(range(L)))[:n]) if fine else list(range(n))
    e = draw(st.integers(1, E))
    embd = sorted(draw(st.permutations(range(E)))[:e]) if fine else None

    # Fine-grained uniform (paper §2.1): one set of sizes, every layer its own index sets of them.
    sizes: dict[str, int] = {}

    def size(name: str, lo: int, hi: int) -> int:
        if fine and not layerwise:
            if name not in sizes:
                sizes[name] = draw(st.integers(lo, hi))
            return max(lo, min(sizes[name], hi))  # a layer of another shape: the nearest legal size
        return draw(st.integers(lo, hi))

    def layer_choice(layer: int) -> dict[str, Any]:
        H, G = config.num_attention_heads[layer], config.num_key_value_heads[layer]
        Hs, R, D = config.head_dim[layer], config.rotary_dim[layer], config.intermediate_size[layer]
        per_group = H // G
        g = size("g", 1, G)
        k = size("k", 1, per_group)
        d = size("d", 1, D)
        if not fine:
            # Coarse head sizes: any size whose first-n layout keeps rotary pairs whole.
            legal = [hs for hs in range(1, Hs + 1) if hs - 2 * ((hs * R) // (2 * Hs)) <= Hs - R]
            return dict(num_heads=g * k, query_groups=g, head_size=draw(st.sampled_from(legal)),
                        intermediate_size=d)
        groups = sorted(draw(st.permutations(range(G)))[:g])
        heads = [grp * per_group + h for grp in groups
                 for h in sorted(draw(st.permutations(range(per_group)))[:k])]
        pairs = sorted(draw(st.permutations(range(R // 2)))[: size("pairs", 0, R // 2)])
        passes = sorted(draw(st.permutations(range(R, Hs)))[: size("passes", 0, Hs - R)])
        if not pairs and not passes:
            pairs, passes = ([0], []) if R else ([], [R])
        dims = pairs + [p + R // 2 for p in pairs] + passes
        neurons = sorted(draw(st.permutations(range(D)))[:d])
        return dict(head_indices=heads, head_size_indices=sorted(dims), intermediate_indices=neurons)

    if layerwise or fine:
        choices = [layer_choice(layer) for layer in layers]
        per_layer = {key: [c[key] for c in choices] for key in choices[0]}
    else:
        per_layer = layer_choice(layers[0])
    if vocab:  # a pruned vocabulary: the first v ids (coarse) or any v ids (fine)
        V = config.vocab_size
        v = draw(st.integers(1, V))
        if fine:
            per_layer["vocab_indices"] = sorted(draw(st.permutations(range(V)))[:v])
        else:
            per_layer["vocab_size"] = v
    return SubNetwork(n_layers=n, n_embd=e, layer_indices=layers if fine else None, embd_indices=embd, **per_layer)
