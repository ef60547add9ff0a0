"""Cost metrics (issue #22): the analytic counters equal what PyTorch counts and what the export holds.

For random sub-networks of every family, coarse/fine x uniform/layer-wise:
- `flops_per_token` == `FlopCounterMode` on the supernet running the sub-network, and on the
  exported model loaded back from disk (stock exports with eager attention, whose score and value
  matmuls the stock counter sees itself);
- `weight_bytes` == the bytes of the tensors in the export's safetensors files;
- `kv_cache_bytes_per_token` == the KV cache a stock model actually fills.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from safetensors import safe_open
from transformers import AutoModelForCausalLM

import subnas
from subnas import SubNetwork, extract
from subnas.metrics import flops_per_token, kv_cache_bytes_per_token, measure_flops, measure_latency, weight_bytes
from tests.conftest import TINY_CONFIGS
from tests.strategies import subnetworks
from tests.test_invariants import SPACES, supernet_for

SEQ = 12


def _file_bytes(folder: str) -> int:
    total = 0
    for path in Path(folder).glob("*.safetensors"):
        with safe_open(str(path), "pt") as f:
            for name in f.keys():
                t = f.get_slice(name)
                shape, dtype = t.get_shape(), t.get_dtype()
                numel = 1
                for n in shape:
                    numel *= n
                total += numel * {"F32": 4, "BF16": 2, "F16": 2}[dtype]
    return total


def _padded(config: subnas.SubnasConfig, subnet: SubNetwork, stock: dict) -> subnas.SubnasConfig:
    """The architecture a zero-padded export holds: the sub-network's depth, width and vocabulary
    with every layer at the stock shape."""
    resolved = subnet.resolve(config)
    flags = {k: getattr(config, k) for k in ("norm_type", "mlp_type", "qkv_bias", "o_bias", "mlp_bias", "qk_norm",
                                               "residual", "position_embedding", "max_position_embeddings",
                                               "tie_word_embeddings")}
    return subnas.SubnasConfig(vocab_size=resolved.vocab_size(config), hidden_size=len(resolved.embd),
                               num_hidden_layers=len(resolved.layers), **stock, **flags)


def assert_costs_match(supernet: subnas.Supernet, subnet: SubNetwork) -> None:
    config = supernet.subnas_config
    kept = subnet.resolve(config).vocab_size(config)
    ids = torch.arange(SEQ).remainder(kept)[None]
    analytic = flops_per_token(config, subnet, seq_len=SEQ)
    with supernet.sub_network(subnet):
        assert measure_flops(supernet.model, ids) == SEQ * analytic
    with tempfile.TemporaryDirectory() as out:
        result = extract(supernet, subnet, out, overwrite=True)
        options = {"attn_implementation": "eager"} if result.format == "stock" else {}
        model = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32, **options)
        if result.padding is None:  # the export is exactly the sub-network (in whichever stock class)
            assert measure_flops(model, ids) == SEQ * analytic
            assert _file_bytes(out) == weight_bytes(config, subnet, dtype="float32")
        else:  # zero-padded to a stock shape: the counters of that shape
            written = _padded(config, subnet, result.padding["stock_shape"])
            assert measure_flops(model, ids) == SEQ * flops_per_token(written, seq_len=SEQ)
            assert _file_bytes(out) == weight_bytes(written, dtype="float32")


@pytest.mark.parametrize("fine,layerwise", SPACES, ids=["coarse-uniform", "coarse-layerwise", "fine-uniform",
                                                        "fine-layerwise"])
@pytest.mark.parametrize("name", sorted(TINY_CONFIGS))
def test_analytic_costs_equal_measured(tiny_models: dict, name: str, fine: bool, layerwise: bool) -> None:
    supernet = supernet_for(tiny_models, name)

    @settings(max_examples=3, deadline=None, derandomize=True,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(subnet=subnetworks(supernet.subnas_config, fine=fine, layerwise=layerwise, vocab=fine))
    def check(subnet: SubNetwork) -> None:
        assert_costs_match(supernet, subnet)

    check()


@pytest.mark.parametrize("name", sorted(TINY_CONFIGS))
def test_kv_cache_bytes_equal_the_stock_cache(tiny_models: dict, name: str) -> None:
    model = tiny_models[name]
    seq = 6  # inside Gemma's sliding window, so every layer caches every token
    with torch.no_grad():
        cache = model(torch.arange(seq)[None], use_cache=True).past_key_values
    held = sum(t.numel() * t.element_size() for layer in cache.layers for t in (layer.keys, layer.values))
    assert held == seq * kv_cache_bytes_per_token(model.config, dtype="float32")


def test_latency_is_measured_and_cached(tiny_models: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SUBNAS_CACHE", str(tmp_path))
    supernet = supernet_for(tiny_models, "llama-gqa")
    subnet = SubNetwork(n_layers=2, intermediate_size=48)
    first = measure_latency(supernet, subnet, seq_len=8, repeats=3, warmup=1)
    assert first.model_class == "LlamaForCausalLM" and not first.cached
    assert first.min_ms <= first.ms <= first.max_ms and first.iqr_ms >= 0
    again = measure_latency(supernet, subnet, seq_len=8, repeats=3, warmup=1)
    assert again.cached and again.ms == first.ms
    decode = measure_latency(supernet, subnet, mode="decode", seq_len=8, repeats=3, warmup=1)
    assert decode.ms > 0 and decode.mode == "decode"
    # A layer-wise sub-network has no stock class: prefill runs the flexible model, decode is refused.
    layerwise = SubNetwork(n_layers=2, intermediate_size=[48, 96])
    assert measure_latency(supernet, layerwise, seq_len=8, repeats=2, warmup=0).model_class == "SubnasForCausalLM"
    with pytest.raises(ValueError, match="decode latency needs a KV cache"):
        measure_latency(supernet, layerwise, mode="decode", seq_len=8, repeats=2, warmup=0)


def test_metric_plugins(tiny_models: dict) -> None:
    supernet = supernet_for(tiny_models, "qwen2")
    subnet = SubNetwork(n_layers=2)
    context = subnas.SearchContext(seq_len=SEQ, dtype="bfloat16")
    assert subnas.get_metric("params", supernet, context)(subnet) == subnas.count_parameters(supernet, subnet)
    assert subnas.get_metric("flops", supernet, context)(subnet) == flops_per_token(supernet, subnet, seq_len=SEQ)
    assert subnas.get_metric("weight-bytes", supernet, context)(subnet) == 2 * subnas.count_parameters(supernet, subnet)
    assert subnas.get_metric("kv-bytes", supernet, context)(None) == kv_cache_bytes_per_token(supernet, dtype="bfloat16")
    with pytest.raises(subnas.plugins.UnknownNameError, match="flops"):
        subnas.get_metric("flopz", supernet)


def test_bad_dtype_and_sequence_length_are_named() -> None:
    cfg = subnas.SubnasConfig(num_hidden_layers=2)
    with pytest.raises(ValueError, match="unknown dtype 'float12'"):
        weight_bytes(cfg, dtype="float12")
    with pytest.raises(ValueError, match="seq_len 0"):
        flops_per_token(cfg, seq_len=0)
