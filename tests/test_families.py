"""Every model family against `transformers` itself, on tiny random-weight models.

For each family (and its variants: GQA/MQA, tied/untied, sliding windows, partial rotary,
parallel/sequential residual, QK-norm, biases):

* **parity** — the converted `SubnasForCausalLM` gives the same logits as the stock model;
* **counting** — `config_parameters` equals the stock model's unique-parameter count;
* **round trip** — a uniform coarse sub-network, taken out of the supernet and written back in
  stock layout with `ModelFamily.to_hf`, loads strictly into the stock class (and through
  `save_pretrained` / `from_pretrained`) and gives the supernet's logits for that sub-network;
* **published sizes** — full-size configs (built from kwargs, no download) count as published,
  and as `transformers` counts them on the meta device.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import pytest
import torch
from transformers import (
    AutoModelForCausalLM,
    Gemma3TextConfig,
    GPT2Config,
    GPTNeoXConfig,
    LlamaConfig,
    MistralConfig,
    PretrainedConfig,
    Qwen2Config,
    Qwen3Config,
)

from subnas.config import SubnasConfig
from subnas.families import NotExpressible, UnsupportedModelError, family_for, load_config
from subnas.modeling import SubnasForCausalLM, sub_config
from subnas.params import config_parameters
from subnas.subnet import SubNetwork

VOCAB, SEQ = 128, 12
COMMON: dict[str, Any] = dict(vocab_size=VOCAB, max_position_embeddings=64)


@dataclass
class Case:
    make: Callable[[], PretrainedConfig]
    subnet: SubNetwork  # a uniform coarse sub-network that the stock architecture can express


CASES: dict[str, Case] = {
    "llama-gqa-tied": Case(
        lambda: LlamaConfig(**COMMON, hidden_size=64, num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=2,
                            intermediate_size=96, tie_word_embeddings=True,
                            rope_parameters={"rope_type": "default", "rope_theta": 500.0}),
        SubNetwork(n_layers=2, n_embd=48, num_heads=2, head_size=8, intermediate_size=64),
    ),
    "llama-mqa-bias": Case(
        lambda: LlamaConfig(**COMMON, hidden_size=48, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=1,
                            head_dim=16, intermediate_size=80, attention_bias=True, mlp_bias=True, tie_word_embeddings=False),
        SubNetwork(n_layers=2, n_embd=40, num_heads=2, head_size=12, intermediate_size=50),
    ),
    "mistral": Case(
        # what subnas exports Llama shapes as when LlamaConfig refuses them (hidden % heads != 0)
        lambda: MistralConfig(**COMMON, hidden_size=36, num_hidden_layers=2, num_attention_heads=3, num_key_value_heads=1,
                              head_dim=16, intermediate_size=64, sliding_window=None, tie_word_embeddings=True),
        SubNetwork(n_layers=1, n_embd=20, num_heads=3, head_size=8, intermediate_size=40),
    ),
    "mistral-sliding": Case(
        lambda: MistralConfig(**COMMON, hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                              intermediate_size=96, sliding_window=4, tie_word_embeddings=False),
        SubNetwork(n_layers=2, n_embd=48, num_heads=2, head_size=8, intermediate_size=64),
    ),
    "qwen2-sliding": Case(
        lambda: Qwen2Config(**COMMON, hidden_size=64, num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=2,
                            intermediate_size=96, use_sliding_window=True, sliding_window=4, max_window_layers=1,
                            tie_word_embeddings=False),
        SubNetwork(n_layers=2, n_embd=48, num_heads=4, query_groups=2, head_size=8, intermediate_size=64),
    ),
    "qwen2-no-window": Case(
        # a sliding_window is given, but use_sliding_window is off: no layer slides
        lambda: Qwen2Config(**COMMON, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=4,
                            intermediate_size=64, use_sliding_window=False, sliding_window=4, tie_word_embeddings=True),
        SubNetwork(n_layers=1, n_embd=32, num_heads=2, intermediate_size=40),
    ),
    "qwen3-mqa-sliding": Case(
        lambda: Qwen3Config(**COMMON, hidden_size=64, num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=1,
                            head_dim=32, intermediate_size=96, attention_bias=True, use_sliding_window=True,
                            sliding_window=5, max_window_layers=1, tie_word_embeddings=True),
        SubNetwork(n_layers=3, n_embd=40, num_heads=2, query_groups=1, head_size=16, intermediate_size=48),
    ),
    "qwen3-gqa": Case(
        lambda: Qwen3Config(**COMMON, hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                            head_dim=16, intermediate_size=96, tie_word_embeddings=False),
        SubNetwork(n_layers=2, n_embd=64, num_heads=2, head_size=16, intermediate_size=96),
    ),
    "gemma3-mqa": Case(
        lambda: Gemma3TextConfig(**COMMON, hidden_size=64, num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=1,
                                 head_dim=32, intermediate_size=96, query_pre_attn_scalar=24, sliding_window=4,
                                 layer_types=["sliding_attention", "full_attention", "sliding_attention"],
                                 final_logit_softcapping=3.0),
        SubNetwork(n_layers=3, n_embd=48, num_heads=2, head_size=16, intermediate_size=64),
    ),
    "gemma3-scaled-rope": Case(
        # linear RoPE scaling on the global layers, GQA, attention biases, untied head
        lambda: Gemma3TextConfig(**COMMON, hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                                 head_dim=16, intermediate_size=96, query_pre_attn_scalar=16, sliding_window=6,
                                 attention_bias=True, tie_word_embeddings=False,
                                 layer_types=["sliding_attention", "full_attention"],
                                 rope_parameters={"sliding_attention": {"rope_type": "default", "rope_theta": 10000.0},
                                                  "full_attention": {"rope_type": "linear", "factor": 4.0,
                                                                     "rope_theta": 1000000.0}}),
        SubNetwork(n_layers=2, n_embd=32, num_heads=2, head_size=16, intermediate_size=64),  # head kept: scaled RoPE
    ),
    "gpt_neox-parallel": Case(
        lambda: GPTNeoXConfig(**COMMON, hidden_size=64, num_hidden_layers=3, num_attention_heads=4, intermediate_size=128,
                              rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "partial_rotary_factor": 0.25}),
        SubNetwork(n_layers=2, n_embd=32, num_heads=4, head_size=8, intermediate_size=64),
    ),
    "gpt_neox-sequential-tied": Case(
        lambda: GPTNeoXConfig(**COMMON, hidden_size=64, num_hidden_layers=2, num_attention_heads=2, intermediate_size=96,
                              use_parallel_residual=False, tie_word_embeddings=True, hidden_act="gelu_new",
                              rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "partial_rotary_factor": 0.5}),
        SubNetwork(n_layers=2, n_embd=32, num_heads=2, head_size=16, intermediate_size=48),
    ),
    "gpt2": Case(
        lambda: GPT2Config(vocab_size=VOCAB, n_positions=64, n_embd=64, n_layer=3, n_head=4),
        SubNetwork(n_layers=2, n_embd=32, num_heads=4, head_size=8, intermediate_size=64),
    ),
    "gpt2-untied-inner": Case(
        lambda: GPT2Config(vocab_size=VOCAB, n_positions=64, n_embd=48, n_layer=2, n_head=3, n_inner=100,
                           tie_word_embeddings=False, activation_function="gelu"),
        SubNetwork(n_layers=1, n_embd=32, num_heads=2, head_size=16, intermediate_size=100),
    ),
}


def hf_model(name: str, seed: int = 0) -> Any:
    """A stock model with every weight random (norm scales and biases included), in fp32."""
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(CASES[name].make(), dtype=torch.float32)
    with torch.no_grad():
        for pname, p in model.named_parameters():
            if p.dim() == 1:  # norms and biases start at 1/0: randomise so a wrong mapping shows
                p.copy_(torch.randn_like(p) * 0.1 + (1.0 if "norm" in pname or "ln_" in pname else 0.0))
    return model.eval()


def supernet(hf: Any) -> tuple[Any, SubnasConfig, SubnasForCausalLM]:
    family = family_for(hf.config.model_type)
    cfg = family.to_subnas_config(hf.config)
    model = SubnasForCausalLM(cfg).eval()
    model.load_state_dict(family.to_subnas_state(hf.state_dict(), cfg), strict=True)
    return family, cfg, model


def tokens(seed: int = 0) -> torch.Tensor:
    return torch.randint(0, VOCAB, (2, SEQ), generator=torch.Generator().manual_seed(seed))


def unique_numel(model: Any) -> int:
    return sum(p.numel() for p in model.parameters())  # parameters() yields a tied weight once


@pytest.mark.parametrize("name", sorted(CASES))
def test_full_model_matches_transformers(name: str) -> None:
    hf = hf_model(name)
    _, cfg, model = supernet(hf)
    ids = tokens()
    with torch.no_grad():
        expected = hf(ids).logits
        torch.testing.assert_close(model(ids).logits, expected, atol=1e-5, rtol=1e-5)
        # right padding: the real tokens' logits are unchanged by the pad tokens after them
        mask = torch.ones_like(ids)
        mask[1, SEQ - 3:] = 0
        torch.testing.assert_close(model(ids, attention_mask=mask).logits[mask.bool()], expected[mask.bool()],
                                   atol=1e-5, rtol=1e-5)
    assert config_parameters(cfg) == unique_numel(hf)
    assert load_config(hf).to_dict() == cfg.to_dict()


@pytest.mark.parametrize("name", sorted(CASES))
def test_subnetwork_round_trips_through_stock_transformers(name: str, tmp_path: Any) -> None:
    hf = hf_model(name)
    family, cfg, model = supernet(hf)
    model.set_sub_network(CASES[name].subnet)
    sub = sub_config(cfg, model.active)
    hf_cfg, state = family.to_hf(sub, model.sub_state_dict(), hf.config)
    assert hf_cfg.model_type == hf.config.model_type
    stock = AutoModelForCausalLM.from_config(hf_cfg, dtype=torch.float32).eval()
    stock.load_state_dict(state, strict=True)
    ids = tokens(1)
    with torch.no_grad():
        expected = model(ids).logits
        torch.testing.assert_close(stock(ids).logits, expected, atol=1e-5, rtol=1e-5)
    assert config_parameters(sub) == unique_numel(stock)
    # ... and the stock family reads it back as the same architecture (a rescaled RoPE base gives
    # the kept frequencies up to float32 rounding; a window that no kept layer uses may vanish)
    back, want = family.to_subnas_config(hf_cfg).to_dict(), sub.to_dict()
    for freqs_back, freqs_want in zip(back.pop("rope_inv_freq"), want.pop("rope_inv_freq")):
        torch.testing.assert_close(torch.tensor(freqs_back), torch.tensor(freqs_want), rtol=1e-6, atol=0)
    if "sliding_attention" not in sub.layer_types:
        back["sliding_window"] = want["sliding_window"] = None
    assert back == want
    # the written checkpoint loads with plain transformers and computes the same
    stock.save_pretrained(tmp_path)
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path, dtype=torch.float32).eval()
    with torch.no_grad():
        torch.testing.assert_close(reloaded(ids).logits, expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", ["gemma3-mqa", "qwen2-sliding", "qwen3-mqa-sliding", "mistral-sliding"])
def test_sliding_window_is_used(name: str) -> None:
    """Parity alone would not notice a window that both sides ignore: with a window shorter than
    the sequence, the (transformers-equal) logits must differ from unwindowed ones."""
    hf = hf_model(name)
    _, cfg, model = supernet(hf)
    assert cfg.sliding_window is not None and cfg.sliding_window < SEQ and "sliding_attention" in cfg.layer_types
    ids = tokens()
    with torch.no_grad():
        windowed = model(ids).logits
        cfg.sliding_window = None
        unwindowed = model(ids).logits
    assert not torch.allclose(windowed, unwindowed)


def test_qwen_without_use_sliding_window_has_no_sliding_layers() -> None:
    # use_sliding_window=False makes Qwen2Config drop the window (sliding_window=None); a layer
    # still *named* sliding then has no window (transformers 5.23 even fails on it): full attention.
    hf_config = Qwen2Config(**COMMON, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=4,
                            intermediate_size=64,
                            use_sliding_window=False, sliding_window=4,
                            layer_types=["full_attention", "sliding_attention"])
    assert hf_config.sliding_window is None
    cfg = load_config(hf_config)
    assert cfg.layer_types == ["full_attention"] * 2 and cfg.sliding_window is None


@pytest.mark.parametrize("name, rename", [
    ("gpt_neox-parallel", lambda k: "embed_out.weight" if k == "lm_head.weight" else k),
    ("gpt2", lambda k: k.removeprefix("transformer.")),
])
def test_checkpoint_names(name: str, rename: Callable[[str], str]) -> None:
    """Original checkpoints' names: Pythia's ``embed_out``, GPT-2's un-prefixed base model, and
    the causal-mask buffers old files still carry."""
    hf = hf_model(name)
    family, cfg, model = supernet(hf)
    state = {rename(k): v for k, v in hf.state_dict().items()}
    state["h.0.attn.bias" if name == "gpt2" else "gpt_neox.layers.0.attention.bias"] = torch.ones(1, 1, 4, 4)
    reloaded = SubnasForCausalLM(cfg).eval()
    reloaded.load_state_dict(family.to_subnas_state(state, cfg), strict=True)
    ids = tokens()
    with torch.no_grad():
        torch.testing.assert_close(reloaded(ids).logits, model(ids).logits, atol=0, rtol=0)


# --------------------------------------------------------------------------- not expressible


def _sub(name: str, subnet: SubNetwork) -> tuple[Any, SubnasConfig, Any, dict[str, torch.Tensor]]:
    hf = hf_model(name)
    family, cfg, model = supernet(hf)
    model.set_sub_network(subnet)
    return family, sub_config(cfg, model.active), hf.config, model.sub_state_dict()


@pytest.mark.parametrize("name, subnet, why", [
    ("gpt2", SubNetwork(n_embd=48, num_heads=4, head_size=8), "head size"),
    ("gpt_neox-parallel", SubNetwork(n_embd=32, num_heads=2, head_size=8), "head size"),
    ("gpt_neox-parallel", SubNetwork(n_layers=2, num_heads=(4, 2)), "differs between layers"),
    ("llama-gqa-tied", SubNetwork(n_layers=2, intermediate_size=(96, 64)), "differs between layers"),
    ("gemma3-mqa", SubNetwork(n_embd=50), "divisible"),
    ("gemma3-scaled-rope", SubNetwork(head_size=8), "cannot be rescaled"),
    ("llama-gqa-tied", SubNetwork(head_size_indices=[1, 9, 2, 10]), "rotary pairs"),
])
def test_not_expressible(name: str, subnet: SubNetwork, why: str) -> None:
    family, sub, hf_config, state = _sub(name, subnet)
    with pytest.raises(NotExpressible, match=why):
        family.to_hf(sub, state, hf_config)


def test_unsupported_configs_are_refused() -> None:
    with pytest.raises(UnsupportedModelError, match="attn_logit_softcapping"):
        load_config(Gemma3TextConfig(attn_logit_softcapping=50.0))
    for flag in (dict(scale_attn_by_inverse_layer_idx=True), dict(reorder_and_upcast_attn=True),
                 dict(scale_attn_weights=False)):
        with pytest.raises(UnsupportedModelError):
            load_config(GPT2Config(**flag))


# --------------------------------------------------------------------------- published sizes


def _meta_numel(hf_config: PretrainedConfig) -> int:
    with torch.device("meta"):
        return unique_numel(AutoModelForCausalLM.from_config(hf_config))


PYTHIA = dict(max_position_embeddings=2048, tie_word_embeddings=False,
              rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "partial_rotary_factor": 0.25})


@pytest.mark.parametrize("hf_config, published", [
    (GPTNeoXConfig(**PYTHIA, vocab_size=50304, hidden_size=1024, num_hidden_layers=24, num_attention_heads=16,
                   intermediate_size=4096), 405_334_016),  # Pythia-410M
    (GPTNeoXConfig(**PYTHIA, vocab_size=50432, hidden_size=4096, num_hidden_layers=32, num_attention_heads=32,
                   intermediate_size=16384), 6_857_302_016),  # Pythia-6.9B
    (GPT2Config(), 124_439_808),  # GPT-2 small
    (LlamaConfig(vocab_size=49152, hidden_size=576, num_hidden_layers=30, num_attention_heads=9, num_key_value_heads=3,
                 intermediate_size=1536, tie_word_embeddings=True), 134_515_008),  # SmolLM2-135M
    (Gemma3TextConfig(vocab_size=262144, hidden_size=640, num_hidden_layers=18, num_attention_heads=4,
                      num_key_value_heads=1, head_dim=256, intermediate_size=2048, query_pre_attn_scalar=256,
                      sliding_window=512, max_position_embeddings=32768,
                      layer_types=(["sliding_attention"] * 5 + ["full_attention"]) * 3), 268_098_176),  # gemma-3-270m
    (Qwen2Config(vocab_size=151936, hidden_size=896, num_hidden_layers=24, num_attention_heads=14, num_key_value_heads=2,
                 intermediate_size=4864, tie_word_embeddings=True), None),  # Qwen2.5-0.5B
    (Qwen3Config(vocab_size=151936, hidden_size=1024, num_hidden_layers=28, num_attention_heads=16, num_key_value_heads=8,
                 head_dim=128, intermediate_size=3072, tie_word_embeddings=True), None),  # Qwen3-0.6B
], ids=["pythia-410m", "pythia-6.9b", "gpt2", "smollm2-135m", "gemma-3-270m", "qwen2.5-0.5b", "qwen3-0.6b"])
def test_published_parameter_counts(hf_config: PretrainedConfig, published: int | None) -> None:
    counted = config_parameters(load_config(hf_config))
    assert counted == _meta_numel(hf_config)
    if published is not None:
        assert counted == published
