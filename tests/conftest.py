"""Shared fixtures: tiny random-weight models of every family, and the real SmolLM2 (integration)."""

from __future__ import annotations

import os

# As `import subnas` does, but before torch loads OpenMP here: spinning idle threads make a busy
# 2-core machine several times slower (docs/training.md, Speed).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
from typing import Any, Callable

import pytest
import torch
from transformers import (
    AutoModelForCausalLM,
    Gemma3TextConfig,
    GPT2Config,
    GPTNeoXConfig,
    LlamaConfig,
    PretrainedConfig,
    Qwen2Config,
    Qwen3Config,
)

# Keep the suite's threads to the CI machine's 2 cores.
torch.set_num_threads(min(2, os.cpu_count() or 1))

SEQ = 24  # longer than the Gemma sliding window below, so the window mask is exercised


def _tiny() -> dict[str, Callable[[], PretrainedConfig]]:
    common: dict[str, Any] = dict(vocab_size=128, max_position_embeddings=128)
    return {
        "llama-gqa": lambda: LlamaConfig(**common, hidden_size=64, num_hidden_layers=3, num_attention_heads=4,
                                         num_key_value_heads=2, head_dim=16, intermediate_size=96,
                                         tie_word_embeddings=True),
        "llama-mqa": lambda: LlamaConfig(**common, hidden_size=48, num_hidden_layers=2, num_attention_heads=4,
                                         num_key_value_heads=1, head_dim=12, intermediate_size=80,
                                         tie_word_embeddings=False, attention_bias=True),
        "llama-mha": lambda: LlamaConfig(**common, hidden_size=32, num_hidden_layers=3, num_attention_heads=4,
                                         num_key_value_heads=4, intermediate_size=64),
        "qwen2": lambda: Qwen2Config(**common, hidden_size=64, num_hidden_layers=3, num_attention_heads=4,
                                     num_key_value_heads=2, intermediate_size=96, tie_word_embeddings=False),
        "qwen3": lambda: Qwen3Config(**common, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                                     num_key_value_heads=2, head_dim=16, intermediate_size=96,
                                     tie_word_embeddings=True),
        "gemma3": lambda: Gemma3TextConfig(**common, hidden_size=64, num_hidden_layers=3, num_attention_heads=4,
                                           num_key_value_heads=1, head_dim=16, intermediate_size=96,
                                           query_pre_attn_scalar=16, sliding_window=8,
                                           layer_types=["sliding_attention", "sliding_attention", "full_attention"]),
        "gpt_neox": lambda: GPTNeoXConfig(**common, hidden_size=64, num_hidden_layers=3, num_attention_heads=4,
                                          intermediate_size=96,
                                          rope_parameters={"rope_type": "default", "rope_theta": 10000.0,
                                                           "partial_rotary_factor": 0.5}),
        "gpt2": lambda: GPT2Config(vocab_size=128, n_positions=128, n_embd=64, n_layer=3, n_head=4),
    }


TINY_CONFIGS = _tiny()


def tiny_hf_model(name: str, seed: int = 0) -> Any:
    """A random-weight `transformers` model; norms and biases are randomised too, so a wrong
    mapping of any weight shows up in the logits."""
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(TINY_CONFIGS[name](), dtype=torch.float32)
    with torch.no_grad():
        for pname, p in model.named_parameters():
            if p.dim() == 1:
                p.copy_(torch.randn_like(p) * 0.1 + (1.0 if "norm" in pname or "ln" in pname else 0.0))
    return model.eval()


@pytest.fixture(scope="session")
def tiny_models() -> dict[str, Any]:
    return {name: tiny_hf_model(name) for name in TINY_CONFIGS}


@pytest.fixture(scope="session")
def smollm2() -> Any:
    """The real SmolLM2-135M supernet (GGUF converted once and cached)."""
    from subnas import Supernet

    return Supernet.from_pretrained("default")
