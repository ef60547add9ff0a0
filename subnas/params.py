"""`count_parameters`: the one parameter counter shared by bins, search, export and the CLI.

It counts from the architecture alone (no weights, instant even for 12B models) and equals the
numel of the extracted model, tied embeddings counted once (docs/design.md#invariants, invariant 3).
"""

from __future__ import annotations

from typing import Any

from subnas.config import SubnasConfig
from subnas.subnet import ResolvedSubNetwork, SubNetwork


def config_parameters(config: SubnasConfig, resolved: ResolvedSubNetwork | None = None) -> int:
    """Parameters of the model ``config`` describes, or of its sub-network ``resolved``.

    Both cases run the same formula: a sub-network only replaces the widths, so the count of
    ``resolved`` equals ``config_parameters(sub_config(config, resolved))`` — what
    `SubnasForCausalLM` of the extracted config holds — without building that config (search
    calls this for every candidate).
    """
    V = config.vocab_size if resolved is None else resolved.vocab_size(config)  # pruned vocabulary: kept rows
    if resolved is None:
        E = config.hidden_size
        widths = [(config.num_attention_heads[i], config.num_key_value_heads[i], config.head_dim[i],
                   config.intermediate_size[i]) for i in range(config.num_hidden_layers)]
    else:
        E = len(resolved.embd)
        widths = [(s.num_heads, s.query_groups, s.head_size, s.intermediate_size) for s in resolved.layers]
    norm = E * (2 if config.norm_type == "layernorm" else 1)
    total = V * E + norm  # embedding + final norm
    if not config.tie_word_embeddings:
        total += V * E
    if config.position_embedding == "learned":
        total += config.max_position_embeddings * E
    norms_per_layer = 4 if config.residual == "sandwich" else 2
    matrices = 3 if config.mlp_type == "gated" else 2
    for h, g, hs, d in widths:
        q, kv = h * hs, g * hs
        total += E * (q + 2 * kv) + q * E  # q, k, v, o
        if config.qkv_bias:
            total += q + 2 * kv
        if config.o_bias:
            total += E
        if config.qk_norm:
            total += 2 * hs
        total += matrices * E * d
        if config.mlp_bias:
            total += (matrices - 1) * d + E
        total += norms_per_layer * norm
    return total


def count_parameters(model_or_config: Any, subnet: SubNetwork | ResolvedSubNetwork | dict[str, Any] | None = None) -> int:
    """Exact parameter count of a model or of one of its sub-networks.

    Args:
        model_or_config: a `subnas.Supernet`, a `transformers` model or config, a `SubnasConfig`,
            a model folder, a ``config.json``, a hub name, or ``"default"``.
        subnet: a `SubNetwork` (or its dict form); ``None`` counts the full model.

    Example:
        >>> from subnas import SubnasConfig, SubNetwork, count_parameters
        >>> cfg = SubnasConfig(vocab_size=100, hidden_size=32, num_hidden_layers=2,
        ...                    num_attention_heads=4, intermediate_size=64)
        >>> count_parameters(cfg), count_parameters(cfg, SubNetwork(n_layers=1))
        (23840, 13536)
    """
    from subnas.families import load_config

    config = load_config(model_or_config)
    if subnet is None:
        return config_parameters(config)
    subnet = SubNetwork.coerce(subnet)
    resolved = subnet.resolve(config) if isinstance(subnet, SubNetwork) else subnet
    return config_parameters(config, resolved)
