"""Extraction slice by slice (`subnas.export._sliced`): the same files as the in-memory path, in
memory proportional to the sub-network."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors.torch import load_file

from subnas import SubNetwork, Supernet, extract, get_search_space
from subnas.export import SlicedSource, open_source
from tests.conftest import TINY_CONFIGS, tiny_hf_model
from tests.strategies import subnetworks

SPACES = ("coarse-uniform", "coarse-layerwise", "fine-uniform", "fine-layerwise")


def extract_both(a: object, b: object, subnet: SubNetwork, tmp: Path, name: str) -> tuple[object, object]:
    """Extract from ``a`` and from ``b`` to the same folder name (the metadata names the folder), kept
    as ``tmp/name-a`` and ``tmp/name-b``."""
    results = []
    for source, side in ((a, "a"), (b, "b")):
        results.append(extract(source, subnet, tmp / name))
        (tmp / name).rename(tmp / f"{name}-{side}")
    return results[0], results[1]


def same_folders(a: Path, b: Path) -> None:
    """Every file byte for byte; safetensors files tensor by tensor (names, dtypes, shapes, bytes)."""
    names = sorted(p.name for p in a.iterdir())
    assert names == sorted(p.name for p in b.iterdir())
    for name in names:
        if name.endswith(".safetensors"):
            ta, tb = load_file(str(a / name)), load_file(str(b / name))
            assert ta.keys() == tb.keys()
            for key in ta:
                assert ta[key].dtype == tb[key].dtype and ta[key].shape == tb[key].shape, key
                assert ta[key].contiguous().view(torch.uint8).equal(tb[key].contiguous().view(torch.uint8)), key
        else:
            assert (a / name).read_bytes() == (b / name).read_bytes(), name


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("sources")
    for name in TINY_CONFIGS:
        tiny_hf_model(name).save_pretrained(root / name)
    return {name: root / name for name in TINY_CONFIGS}


def subnets(source: SlicedSource, seed: int) -> list[SubNetwork]:
    """One random sub-network per space, and one with explicit, unsorted index sets and a pruned vocabulary."""
    rng = random.Random(seed)
    config = source.subnas_config
    out = [get_search_space(space, config).sample(rng) for space in SPACES]
    E, n = config.hidden_size, config.num_hidden_layers
    D = config.intermediate_size[0]
    out.append(SubNetwork(layer_indices=tuple(sorted(rng.sample(range(n), max(1, n - 1)))),
                          embd_indices=tuple(rng.sample(range(E), E // 2)),
                          intermediate_indices=tuple(rng.sample(range(D), D // 3)),
                          # the special tokens (low ids in these configs) stay, as a legal pruned vocabulary must
                          vocab_indices=tuple(range(8)) + tuple(sorted(rng.sample(range(8, config.vocab_size), 90)))))
    return out


@pytest.mark.parametrize("family", sorted(TINY_CONFIGS))
def test_sliced_weights_equal_the_loaded_models(saved: dict[str, Path], family: str) -> None:
    source = SlicedSource(saved[family], block_bytes=256)  # tiny spans: many reads per weight
    supernet = Supernet.from_pretrained(str(saved[family]))
    for subnet in subnets(source, seed=len(family)):
        sliced = source.sub_state_dict(subnet)
        with supernet.sub_network(subnet):
            whole = supernet.model.sub_state_dict()
        assert sliced.keys() == whole.keys()
        for key in whole:
            assert sliced[key].dtype == whole[key].dtype and torch.equal(sliced[key], whole[key]), (subnet, key)


_LOADED: dict[str, tuple[SlicedSource, Supernet]] = {}


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), family=st.sampled_from(sorted(TINY_CONFIGS)), fine=st.booleans(), layerwise=st.booleans())
def test_any_legal_sub_network_reads_the_same_weights(saved: dict[str, Path], data: st.DataObject, family: str,
                                                      fine: bool, layerwise: bool) -> None:
    if family not in _LOADED:
        _LOADED[family] = (SlicedSource(saved[family], block_bytes=512), Supernet.from_pretrained(str(saved[family])))
    source, supernet = _LOADED[family]
    subnet = data.draw(subnetworks(source.subnas_config, fine=fine, layerwise=layerwise))
    sliced = source.sub_state_dict(subnet)
    with supernet.sub_network(subnet):
        whole = supernet.model.sub_state_dict()
    assert sliced.keys() == whole.keys()
    assert all(torch.equal(sliced[k], whole[k]) for k in whole)


@pytest.mark.parametrize("family", ["llama-gqa", "gpt_neox", "gpt2", "gemma3"])
def test_sliced_export_writes_the_same_files(saved: dict[str, Path], family: str, tmp_path: Path) -> None:
    source = open_source(str(saved[family]))
    assert isinstance(source, SlicedSource)
    supernet = Supernet.from_pretrained(str(saved[family]))
    for i, subnet in enumerate(subnets(source, seed=1)):
        a, b = extract_both(source, supernet, subnet, tmp_path, f"m{i}")
        assert a == b
        same_folders(tmp_path / f"m{i}-a", tmp_path / f"m{i}-b")


def test_bf16_source_extracted_in_float32_like_the_loaded_model(tmp_path: Path) -> None:
    tiny_hf_model("qwen2").to(torch.bfloat16).save_pretrained(tmp_path / "src")
    subnet = SubNetwork(n_layers=2, n_embd=48, intermediate_size=50)
    extract_both(SlicedSource(tmp_path / "src"), Supernet.from_pretrained(str(tmp_path / "src")), subnet, tmp_path, "m")
    same_folders(tmp_path / "m-a", tmp_path / "m-b")
    assert next(iter(load_file(str(tmp_path / "m-a" / "model.safetensors")).values())).dtype == torch.float32


def test_cli_extract_reads_a_safetensors_folder_slice_by_slice(saved: dict[str, Path], tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    from subnas.cli import main

    def never(*args: object, **kwargs: object) -> None:
        raise AssertionError("the whole model was loaded")

    monkeypatch.setattr(Supernet, "from_pretrained", never)
    subnet = tmp_path / "sub.json"
    subnet.write_text(json.dumps({"n_layers": 2, "intermediate_size": 32}))
    assert main(["extract", str(saved["qwen3"]), "--subnet", str(subnet), "--out", str(tmp_path / "x")]) == 0
    assert (tmp_path / "x" / "model.safetensors").is_file()


def test_a_flexible_format_source_is_sliced_too(saved: dict[str, Path], tmp_path: Path) -> None:
    whole = Supernet.from_pretrained(str(saved["llama-gqa"]))
    extract(whole, None, tmp_path / "flex", format="subnas")  # the full model in subnas' own format
    source = SlicedSource(tmp_path / "flex")
    assert source.family is None
    subnet = SubNetwork(n_layers=2, n_embd=48, head_indices=(3, 1), intermediate_indices=tuple(range(0, 96, 3)))
    a, b = extract_both(source, Supernet.from_pretrained(str(tmp_path / "flex")), subnet, tmp_path, "m")
    same_folders(tmp_path / "m-a", tmp_path / "m-b")


def test_open_source_loads_whole_what_it_cannot_slice(tmp_path: Path) -> None:
    model = tiny_hf_model("llama-mha")
    model.config.save_pretrained(tmp_path / "bin")
    torch.save(model.state_dict(), tmp_path / "bin" / "pytorch_model.bin")
    assert isinstance(open_source(str(tmp_path / "bin")), Supernet)


# ------------------------------------------------------------------ a ~1B model, in a subprocess
BIG = dict(vocab_size=32000, hidden_size=2048, num_hidden_layers=16, num_attention_heads=32, num_key_value_heads=8,
           intermediate_size=8192, tie_word_embeddings=True, max_position_embeddings=2048)

WRITE = r"""
import json, sys, torch
from pathlib import Path
from safetensors.torch import save_file
from transformers import LlamaConfig
from subnas.families import family_for
folder = Path(sys.argv[1]); cfg = LlamaConfig(**json.loads(sys.argv[2]), dtype="bfloat16")
cfg.save_pretrained(folder)
with torch.device("meta"):
    from transformers import LlamaForCausalLM
    shapes = {k: v.shape for k, v in LlamaForCausalLM(cfg).state_dict().items() if k != "lm_head.weight"}
tile = torch.randn(1 << 20, generator=torch.Generator().manual_seed(0)).to(torch.bfloat16)
weight_map = {}
for shard, keys in enumerate([[k for k in shapes if f"layers.{i}." in k] for i in range(cfg.num_hidden_layers)]
                             + [[k for k in shapes if ".layers." not in k]]):
    name = f"model-{shard:05d}.safetensors"
    # random-looking values at memory speed: a shifted tile of random numbers per weight
    tensors = {k: tile.roll(hash(k) % (1 << 20)).repeat(shapes[k].numel() // (1 << 20) + 1)[: shapes[k].numel()]
                  .view(shapes[k]).clone() for k in keys}
    save_file(tensors, str(folder / name), metadata={"format": "pt"})
    weight_map.update({k: name for k in keys})
(folder / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
"""

EXTRACT = r"""
import json, resource, sys, torch
from subnas import SubNetwork, Supernet, extract, count_parameters
from subnas.export import SlicedSource
folder, out, mode, sub = sys.argv[1], sys.argv[2], sys.argv[3], SubNetwork.from_dict(json.loads(sys.argv[4]))
if mode == "sliced":
    source = SlicedSource(folder, dtype=torch.bfloat16)
else:
    source = Supernet.from_pretrained(folder, dtype=torch.bfloat16)
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
result = extract(source, sub, out)
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
print(json.dumps({"base": base, "peak": peak, "params": result.num_parameters}))
"""


@pytest.mark.slow
def test_a_quarter_of_a_1b_model_is_extracted_in_a_quarter_of_its_memory(tmp_path: Path) -> None:
    """Peak RSS over the process's own baseline <= the sub-network's bytes + 200 MiB, and the same files
    as the in-memory path. The constant: one 64 MiB read span, its cast/gather copies, safetensors'
    serialisation of the largest written tensor, and the allocator's slack."""
    from subnas import count_parameters
    from subnas.families import load_config

    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_VERBOSITY": "error"}

    def run(script: str, *args: str) -> str:
        proc = subprocess.run([sys.executable, "-c", script, *args], capture_output=True, text=True, env=env,
                              timeout=600)
        assert proc.returncode == 0, proc.stderr[-3000:]
        return proc.stdout

    folder = tmp_path / "llama-1b"
    run(WRITE, str(folder), json.dumps(BIG))
    config = load_config(str(folder))
    full = count_parameters(config)
    rng = random.Random(0)
    subnet = SubNetwork(n_layers=8, n_embd=1536, num_heads=16, query_groups=4,
                        intermediate_indices=tuple(sorted(rng.sample(range(8192), 4096))))
    n = count_parameters(config, subnet)
    assert 0.9e9 < full < 1.2e9 and 0.2 < n / full < 0.3
    out = tmp_path / "out"
    sliced = json.loads(run(EXTRACT, str(folder), str(out), "sliced", json.dumps(subnet.to_dict())))
    out.rename(tmp_path / "sliced")
    print(f"sub-network {n:,} parameters ({2 * n / 2**20:.0f} MiB in bf16); peak RSS over baseline "
          f"{(sliced['peak'] - sliced['base']) / 2**20:.0f} MiB")
    constant = 200 * 2**20
    assert sliced["peak"] - sliced["base"] <= 2 * n + constant, (sliced, 2 * n)  # bf16: 2 bytes a parameter
    run(EXTRACT, str(folder), str(out), "whole", json.dumps(subnet.to_dict()))
    same_folders(tmp_path / "sliced", out)
