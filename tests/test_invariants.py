"""docs/design.md#invariants invariants 1-3 on random sub-networks of every family, coarse/fine x uniform/layer-wise.

1. what you evaluate is what you export: supernet logits == logits of the exported model loaded
   back from disk with stock `transformers` Auto classes;
2. the full sub-network == the original `transformers` model;
3. one parameter counter: count_parameters == numel of the exported model (tied weights once).
"""

from __future__ import annotations

import tempfile

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from transformers import AutoModelForCausalLM

from subnas import Supernet, SubNetwork, count_parameters, extract
from tests.conftest import SEQ, TINY_CONFIGS
from tests.strategies import subnetworks

SPACES = [(fine, layerwise) for fine in (False, True) for layerwise in (False, True)]
_SUPERNETS: dict[str, Supernet] = {}


def supernet_for(tiny_models: dict, name: str) -> Supernet:
    if name not in _SUPERNETS:
        _SUPERNETS[name] = Supernet.from_model(tiny_models[name])
    return _SUPERNETS[name]


def tokens(vocab: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, vocab, (2, SEQ), generator=g)


@pytest.mark.parametrize("name", sorted(TINY_CONFIGS))
def test_full_subnetwork_equals_transformers(tiny_models: dict, name: str) -> None:
    hf = tiny_models[name]
    supernet = supernet_for(tiny_models, name)
    ids = tokens(hf.config.vocab_size)
    with torch.no_grad():
        expected = hf(ids).logits
        supernet.reset()
        got = supernet(ids).logits
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    unique = {id(p): p.numel() for p in hf.parameters()}
    assert count_parameters(supernet) == sum(unique.values()) == count_parameters(hf.config)


@pytest.mark.parametrize("fine,layerwise", SPACES, ids=["coarse-uniform", "coarse-layerwise", "fine-uniform",
                                                        "fine-layerwise"])
@pytest.mark.parametrize("name", sorted(TINY_CONFIGS))
def test_evaluated_equals_exported(tiny_models: dict, name: str, fine: bool, layerwise: bool) -> None:
    supernet = supernet_for(tiny_models, name)
    ids = tokens(supernet.subnas_config.vocab_size, seed=1)

    @settings(max_examples=8, deadline=None, derandomize=True,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(subnet=subnetworks(supernet.subnas_config, fine=fine, layerwise=layerwise))
    def check(subnet: SubNetwork) -> None:
        assert_evaluated_equals_exported(supernet, subnet, ids)

    check()


@pytest.mark.parametrize("fine,layerwise", [(False, False), (True, True)], ids=["coarse-uniform", "fine-layerwise"])
@pytest.mark.parametrize("name", sorted(TINY_CONFIGS))
def test_evaluated_equals_exported_with_pruned_vocabulary(tiny_models: dict, name: str, fine: bool,
                                                          layerwise: bool) -> None:
    """Invariants 1 and 3 with a pruned vocabulary (issue #13): the kept embedding rows (and the
    tied or untied head's) are gathered in place and exported; input ids and logits are in the
    sub-network's own numbering 0..V'-1 on both sides."""
    supernet = supernet_for(tiny_models, name)
    ids = tokens(supernet.subnas_config.vocab_size, seed=2)

    @settings(max_examples=4, deadline=None, derandomize=True,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(subnet=subnetworks(supernet.subnas_config, fine=fine, layerwise=layerwise, vocab=True))
    def check(subnet: SubNetwork) -> None:
        kept = subnet.resolve(supernet.subnas_config).vocab_size(supernet.subnas_config)
        assert_evaluated_equals_exported(supernet, subnet, ids % kept)

    check()


def test_pruned_vocabulary_rows_are_the_kept_tokens(tiny_models: dict) -> None:
    """Token j of a pruned sub-network is the j-th kept id of the full model: its logits over the
    kept ids equal the full model's logits at those ids (embedding and head gathered alike)."""
    supernet = supernet_for(tiny_models, "llama-mqa")  # untied head
    kept = [0, 3, 7, 8, 50, 127]
    full_ids = torch.tensor([[3, 7, 50, 0, 127, 8]])
    with torch.no_grad():
        supernet.reset()
        full = supernet(full_ids).logits[..., kept]
        with supernet.sub_network(SubNetwork(vocab_indices=kept)):
            pruned = supernet(torch.tensor([[kept.index(int(t)) for t in full_ids[0]]])).logits
    torch.testing.assert_close(pruned, full)
    cfg = supernet.subnas_config
    assert count_parameters(cfg) - count_parameters(cfg, SubNetwork(vocab_indices=kept)) == \
        2 * (cfg.vocab_size - len(kept)) * cfg.hidden_size


def assert_evaluated_equals_exported(supernet: Supernet, subnet: SubNetwork, ids: torch.Tensor) -> None:
    """Invariants 1 and 3 for one sub-network: supernet logits == the export's, loaded from disk
    with stock Auto classes; count_parameters == the export's true count (padding stated apart)."""
    with torch.no_grad(), supernet.sub_network(subnet):
        evaluated = supernet(ids).logits
    with tempfile.TemporaryDirectory() as out:
        result = extract(supernet, subnet, out, overwrite=True)
        model = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32)
        with torch.no_grad():
            exported = model(ids).logits
    # Stock exports of a shrunk rotary width recompute RoPE from a rescaled base: float32
    # rounding of the frequencies differs by an ulp, hence the looser tolerance there.
    tol = 2e-4 if result.format == "stock" else 1e-5
    torch.testing.assert_close(exported, evaluated, rtol=tol, atol=tol)
    n_exported = sum({id(p): p.numel() for p in model.parameters()}.values())
    assert count_parameters(supernet, subnet) == result.num_parameters
    # Zero-padded stock exports hold more (stated beside the true count); others exactly it.
    assert n_exported == result.exported_parameters
    assert (n_exported > result.num_parameters) == (result.padding is not None)


@pytest.mark.parametrize("name", sorted(TINY_CONFIGS))
def test_first_n_uniform_subnetwork_exports_to_stock(tiny_models: dict, name: str) -> None:
    """Uniform sub-networks with full-size heads are expressible in the family's own class."""
    hf = tiny_models[name]
    supernet = supernet_for(tiny_models, name)
    cfg = supernet.subnas_config
    subnet = SubNetwork(n_layers=cfg.num_hidden_layers - 1, num_heads=cfg.num_attention_heads[0],
                        intermediate_size=cfg.intermediate_size[0] // 2)
    with tempfile.TemporaryDirectory() as out:
        result = extract(supernet, subnet, out)
        assert result.format == "stock", result.reason
        assert result.architecture == type(hf).__name__


def test_subnetwork_gather_is_not_a_model_copy(tiny_models: dict) -> None:
    """Coarse sub-networks run on views of the supernet's own weights (no copy)."""
    supernet = supernet_for(tiny_models, "llama-gqa")
    model = supernet.model
    supernet.set_sub_network(SubNetwork(n_layers=2, n_embd=32, intermediate_size=48))
    layer_plan = model._subnet_plan.layers[0]
    w = layer_plan.weights(model.model.layers[layer_plan.layer].mlp)["up.weight"]
    assert w.untyped_storage().data_ptr() == model.model.layers[0].mlp.up.weight.untyped_storage().data_ptr()
    supernet.reset()


@settings(max_examples=20, deadline=None)
@given(st.integers(1, 3), st.integers(1, 64))
def test_count_matches_instantiated_model(n_layers: int, n_embd: int) -> None:
    from tests.conftest import TINY_CONFIGS as configs

    from subnas.families import load_config
    from subnas.modeling import SubnasForCausalLM, sub_config

    cfg = load_config(configs["llama-gqa"]())
    resolved = SubNetwork(n_layers=n_layers, n_embd=n_embd).resolve(cfg)
    model = SubnasForCausalLM(sub_config(cfg, resolved))
    assert count_parameters(cfg, resolved) == sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("name", ["llama-gqa", "gpt_neox", "gemma3"])
def test_left_padding_matches_transformers_and_stays_finite(tiny_models: dict, name: str) -> None:
    hf = tiny_models[name]
    supernet = supernet_for(tiny_models, name)
    supernet.reset()
    ids = tokens(hf.config.vocab_size, seed=3)
    mask = torch.ones_like(ids)
    mask[0, :5] = 0  # left padding: the first queries of row 0 see no real key
    with torch.no_grad():
        ours = supernet(ids, attention_mask=mask).logits
        theirs = hf(ids, attention_mask=mask).logits
    assert torch.isfinite(ours).all()
    torch.testing.assert_close(ours[0, 5:], theirs[0, 5:], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(ours[1], theirs[1], rtol=1e-5, atol=1e-5)
