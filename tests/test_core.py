"""SubNetwork validation and JSON, the CLI verbs of the core, and exports that need no subnas."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from subnas import SubnasConfig, SubNetwork, SubNetworkError, Supernet, count_parameters, extract
from subnas.cli import main
from subnas.families import load_config
from tests.conftest import TINY_CONFIGS
from tests.strategies import subnetworks

SMOL = SubnasConfig(vocab_size=49152, hidden_size=576, num_hidden_layers=30, num_attention_heads=9,
                    num_key_value_heads=3, head_dim=64, intermediate_size=1536)
NEOX = SubnasConfig(family="gpt_neox", vocab_size=50304, hidden_size=1024, num_hidden_layers=24,
                    num_attention_heads=16, head_dim=64, rotary_dim=16, intermediate_size=4096,
                    norm_type="layernorm", mlp_type="plain", residual="parallel", tie_word_embeddings=False)


# ----------------------------------------------------------------------------- validation
@pytest.mark.parametrize("subnet,message", [
    (SubNetwork(n_layers=31), "n_layers=31 is illegal; legal values are 1..30"),
    (SubNetwork(n_layers=0), "legal values are 1..30"),
    (SubNetwork(n_embd=577), "n_embd=577 is illegal"),
    (SubNetwork(num_heads=5), "num_heads=5 cannot be split"),
    (SubNetwork(num_heads=4, query_groups=3), "not divisible by query_groups=3"),
    (SubNetwork(num_heads=9, query_groups=1), "only 3 per group"),
    (SubNetwork(head_size=11), "would split a rotary pair"),
    (SubNetwork(head_size_indices=[0, 1]), "would split rotary pair (0, 32)"),
    (SubNetwork(embd_indices=[3, 3]), "index 3 appears more than once"),
    (SubNetwork(intermediate_indices=[1536]), "index 1536 is out of range; legal indices are 0..1535"),
    (SubNetwork(layer_indices=[5, 2]), "must be increasing"),
    (SubNetwork(n_layers=2, layer_indices=[1, 2, 3]), "disagrees with the 3 layer_indices"),
    (SubNetwork(num_heads=[3, 6]), "2 per-layer values but the sub-network keeps 30 layers"),
    (SubNetwork(head_indices=[0, 1, 3]), "same number of heads"),
    (SubNetwork(query_group_indices=[0], head_indices=[4]), "not kept"),
    (SubNetwork(intermediate_indices=[]), "at least one index"),
])
def test_illegal_subnetworks_name_the_problem(subnet: SubNetwork, message: str) -> None:
    with pytest.raises(SubNetworkError) as info:
        subnet.resolve(SMOL)
    assert message in str(info.value)


def test_partial_rotary_head_size_keeps_pairs_and_pass_dims() -> None:
    layer = SubNetwork(head_size=32).resolve(NEOX).layers[0]
    # GPT-NeoX rotates 16 of 64 dims: half the head keeps half the rotary pairs + pass dims.
    assert layer.rotary_pairs == (0, 1, 2, 3)
    assert layer.head_dims[:8] == (0, 1, 2, 3, 8, 9, 10, 11)
    assert layer.head_dims[8:] == tuple(range(16, 40))
    with pytest.raises(SubNetworkError, match=r"split rotary pair \(1, 9\)"):
        SubNetwork(head_size_indices=[0, 8, 1, 20]).resolve(NEOX)


def test_default_query_groups() -> None:
    assert SubNetwork(num_heads=6).resolve(SMOL).layers[0].groups == (0, 1, 2)
    assert SubNetwork(num_heads=4).resolve(SMOL).layers[0].groups == (0, 1)
    mha = load_config(TINY_CONFIGS["llama-mha"]())
    assert SubNetwork(num_heads=2).resolve(mha).layers[0].groups == (0, 1)


def test_bools_and_unknown_keys_are_rejected() -> None:
    with pytest.raises(SubNetworkError, match="n_layers"):
        SubNetwork(n_layers=True)  # type: ignore[arg-type]
    with pytest.raises(SubNetworkError, match="unknown sub-network key 'layers'"):
        SubNetwork.from_dict({"layers": 3})


# ----------------------------------------------------------------------------- JSON
@settings(max_examples=60, deadline=None)
@given(data=st.data(), fine=st.booleans(), layerwise=st.booleans())
def test_json_round_trip(data: st.DataObject, fine: bool, layerwise: bool) -> None:
    subnet = data.draw(subnetworks(SMOL, fine=fine, layerwise=layerwise))
    again = SubNetwork.from_json(subnet.to_json())
    assert again == subnet
    assert again.resolve(SMOL) == subnet.resolve(SMOL)
    # The fully explicit form resolves to the same selection.
    assert subnet.resolve(SMOL).to_subnetwork().resolve(SMOL) == subnet.resolve(SMOL)


def test_whittle_keys(tmp_path: Path) -> None:
    whittle = {"sub_network_n_embd": 256, "sub_network_intermediate_size": 512, "sub_network_num_heads": 6,
               "sub_network_n_layers": 4, "sub_network_query_groups": 3, "sampled_layer_indices": [0, 3, 5, 9]}
    subnet = SubNetwork.from_dict(whittle)
    assert subnet == SubNetwork(n_embd=256, intermediate_size=512, num_heads=6, n_layers=4, query_groups=3,
                                layer_indices=[0, 3, 5, 9])
    path = tmp_path / "s.json"
    subnet.save(path)
    assert SubNetwork.load(path) == subnet
    with pytest.raises(SubNetworkError, match="given twice"):
        SubNetwork.from_dict({"n_layers": 3, "sub_network_n_layers": 3})
    (tmp_path / "bad.json").write_text("[1, 2]")
    with pytest.raises(SubNetworkError, match="one JSON object"):
        SubNetwork.load(tmp_path / "bad.json")


# ----------------------------------------------------------------------------- counting
@pytest.mark.parametrize("kwargs,published", [
    (dict(vocab_size=50304, hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, intermediate_size=4096),
     405_334_016),
    (dict(vocab_size=50432, hidden_size=4096, num_hidden_layers=32, num_attention_heads=32, intermediate_size=16384),
     6_857_302_016),
    (dict(vocab_size=50688, hidden_size=5120, num_hidden_layers=36, num_attention_heads=40, intermediate_size=20480),
     11_846_072_320),
])
def test_published_pythia_sizes_from_config_json(tmp_path: Path, kwargs: dict, published: int) -> None:
    from transformers import GPTNeoXConfig

    path = tmp_path / "config.json"
    GPTNeoXConfig(**kwargs).to_json_file(path)
    assert count_parameters(str(path)) == published


# ----------------------------------------------------------------------------- CLI
def test_cli_params_and_extract(tmp_path: Path, tiny_models: dict, capsys: pytest.CaptureFixture[str]) -> None:
    model_dir = tmp_path / "model"
    tiny_models["llama-gqa"].save_pretrained(model_dir)
    subnet_file = tmp_path / "subnet.json"
    SubNetwork(n_layers=2, intermediate_size=48).save(subnet_file)

    assert main(["params", str(model_dir), "--subnet", str(subnet_file), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["parameters"] == count_parameters(tiny_models["llama-gqa"].config, SubNetwork(n_layers=2, intermediate_size=48))
    assert main(["params", str(model_dir / "config.json")]) == 0
    assert capsys.readouterr().out.strip().endswith("parameters")

    assert main(["extract", str(model_dir), "--subnet", str(subnet_file), "--out", str(tmp_path / "x"), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["format"] == "stock" and (tmp_path / "x" / "model.safetensors").is_file()
    # A second extract into the same folder refuses instead of silently overwriting.
    assert main(["extract", str(model_dir), "--subnet", str(subnet_file), "--out", str(tmp_path / "x")]) == 2
    assert "exists and is not empty" in capsys.readouterr().err


def test_cli_errors_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"num_heads": 5}))
    cfg = tmp_path / "config.json"
    TINY_CONFIGS["llama-gqa"]().to_json_file(cfg)
    assert main(["params", str(cfg), "--subnet", str(bad)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("subnas: error: num_heads=5 (kept layer 0") and "Traceback" not in err
    assert main(["params", str(tmp_path / "missing")]) == 2
    assert "no model folder" in capsys.readouterr().err
    unsupported = tmp_path / "bert.json"
    unsupported.write_text(json.dumps({"model_type": "bert"}))
    assert main(["params", str(unsupported)]) == 2
    assert "supported: gemma3_text" in capsys.readouterr().err


def test_cli_help_for_every_verb(capsys: pytest.CaptureFixture[str]) -> None:
    from subnas.cli import COMMANDS

    for verb in COMMANDS:
        with pytest.raises(SystemExit) as info:
            main([verb, "--help"])
        assert info.value.code == 0
        assert "usage" in capsys.readouterr().out


# ----------------------------------------------------------------------------- exports without subnas
def test_stock_export_loads_without_importing_subnas(tmp_path: Path, tiny_models: dict) -> None:
    supernet = Supernet.from_model(tiny_models["qwen2"])
    subnet = SubNetwork(n_layers=2, n_embd=32, num_heads=2, intermediate_size=40)
    result = extract(supernet, subnet, tmp_path / "m")
    assert result.format == "stock"
    script = (
        "import sys, torch\n"
        "from transformers import AutoModelForCausalLM\n"
        f"m = AutoModelForCausalLM.from_pretrained({str(tmp_path / 'm')!r}, dtype=torch.float32)\n"
        "assert not any(k.startswith('subnas') for k in sys.modules), 'subnas was imported'\n"
        "print(type(m).__name__, sum(p.numel() for p in m.parameters()))\n"
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["Qwen2ForCausalLM", str(count_parameters(supernet, subnet))]


def test_flexible_export_is_a_supernet_too(tmp_path: Path, tiny_models: dict) -> None:
    """A flexible-format folder loads as a Supernet, and its own sub-networks work."""
    supernet = Supernet.from_model(tiny_models["llama-gqa"])
    layerwise = SubNetwork(n_layers=3, num_heads=[4, 2, 2], intermediate_size=[96, 48, 24])
    result = extract(supernet, layerwise, tmp_path / "flex", pad=False)  # unpadded: flexible
    assert result.format == "subnas" and "differs between layers" in (result.reason or "")
    again = Supernet.from_pretrained(tmp_path / "flex")
    assert again.count_parameters() == result.num_parameters
    assert again.count_parameters(SubNetwork(n_layers=1)) < result.num_parameters
