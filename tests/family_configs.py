"""Full-size `SubnasConfig`s that mimic each supported family, built directly from kwargs (no
weights, no Hub): the shapes search-space and bin tests run on."""

from __future__ import annotations

from typing import Any

from subnas import SubnasConfig, get_search_space

CONFIGS = {
    # llama, GQA 9 heads in 3 groups, tied embeddings: 134,515,008 parameters.
    "smollm2": SubnasConfig(family="llama", vocab_size=49152, hidden_size=576, num_hidden_layers=30,
                            num_attention_heads=9, num_key_value_heads=3, head_dim=64, intermediate_size=1536,
                            tie_word_embeddings=True),
    # gpt_neox, MHA, partial rotary (16 of 64), parallel residual, biases: 405,334,016.
    "pythia-410m": SubnasConfig(family="gpt_neox", vocab_size=50304, hidden_size=1024, num_hidden_layers=24,
                                num_attention_heads=16, head_dim=64, rotary_dim=16, intermediate_size=4096,
                                tie_word_embeddings=False, norm_type="layernorm", norm_eps=1e-5, mlp_type="plain",
                                hidden_act="gelu", qkv_bias=True, o_bias=True, mlp_bias=True, residual="parallel"),
    # qwen2 (Qwen2.5-0.5B shape), GQA 14 heads in 2 groups, qkv bias: 494,032,768.
    "qwen2": SubnasConfig(family="qwen2", vocab_size=151936, hidden_size=896, num_hidden_layers=24,
                          num_attention_heads=14, num_key_value_heads=2, head_dim=64, intermediate_size=4864,
                          qkv_bias=True, tie_word_embeddings=True),
    # gemma3_text, MQA, head_dim 256, qk-norm, sandwich norms: 268,098,176.
    "gemma3-270m": SubnasConfig(family="gemma3_text", vocab_size=262144, hidden_size=640, num_hidden_layers=18,
                                num_attention_heads=4, num_key_value_heads=1, head_dim=256, intermediate_size=2048,
                                qk_norm=True, residual="sandwich", hidden_act="gelu_pytorch_tanh",
                                tie_word_embeddings=True),
    # gpt2, no rotary, learned positions, biases: 124,439,808.
    "gpt2": SubnasConfig(family="gpt2", vocab_size=50257, hidden_size=768, num_hidden_layers=12,
                         num_attention_heads=12, intermediate_size=3072, position_embedding="learned",
                         max_position_embeddings=1024, norm_type="layernorm", mlp_type="plain", hidden_act="gelu_new",
                         qkv_bias=True, o_bias=True, mlp_bias=True, tie_word_embeddings=True),
}

PUBLISHED = {"smollm2": 134_515_008, "pythia-410m": 405_334_016, "qwen2": 494_032_768,
             "gemma3-270m": 268_098_176, "gpt2": 124_439_808}


SPACES = ("coarse-uniform", "coarse-layerwise", "fine-uniform", "fine-layerwise")
_spaces: dict[tuple[str, str, str], Any] = {}


def space_for(name: str, family: str, **choices: Any) -> Any:
    """One space per (name, family, choices) for the whole session, so that examples share its
    memo of parameter counts."""
    key = (name, family, repr(sorted(choices.items())))
    if key not in _spaces:
        _spaces[key] = get_search_space(name, CONFIGS[family], **choices)
    return _spaces[key]
