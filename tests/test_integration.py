"""Integration tests on the real SmolLM2-135M (offline GGUF -> cached safetensors) and real text."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM

from subnas import SubNetwork, count_parameters, extract
from subnas.data._assets import default_model_dir
from subnas.cli import main

pytestmark = pytest.mark.integration

IDS = torch.tensor([[1, 504, 3458, 282, 4649, 314, 7042, 30, 378, 3249, 3458, 282, 3066, 314, 1345, 2]])


def test_full_supernet_is_smollm2(smollm2) -> None:
    assert count_parameters("default") == 134_515_008 == count_parameters(smollm2)
    stock = AutoModelForCausalLM.from_pretrained(default_model_dir(), dtype=torch.float32).eval()
    smollm2.reset()
    with torch.no_grad():
        torch.testing.assert_close(smollm2(IDS).logits, stock(IDS).logits, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("subnet,architecture", [
    (SubNetwork(n_layers=20, n_embd=384, num_heads=6, head_size=48, intermediate_size=1024), "LlamaForCausalLM"),
    # Issue 11's shape: LlamaConfig refuses 448 % 6 != 0; Mistral computes the same function.
    (SubNetwork(n_layers=8, n_embd=448, num_heads=6, query_groups=2, intermediate_size=1024), "MistralForCausalLM"),
    # Layer-wise heads and fine-grained layers/neurons: zero-padded (and KV-copied) to a stock Llama.
    (SubNetwork(layer_indices=[0, 3, 7, 11, 15, 19, 23, 27, 29], num_heads=[9, 6, 3, 3, 3, 3, 6, 6, 9],
                intermediate_indices=list(range(0, 1536, 3))), "LlamaForCausalLM"),
    # Head sizes that differ between layers: heads padded to 64 dims, RoPE pairs in place, queries rescaled.
    (SubNetwork(n_layers=3, head_size=[64, 32, 48]), "LlamaForCausalLM"),
])
def test_evaluated_equals_exported_on_smollm2(smollm2, tmp_path: Path, subnet: SubNetwork, architecture: str) -> None:
    with torch.no_grad(), smollm2.sub_network(subnet):
        evaluated = smollm2(IDS).logits
    result = extract(smollm2, subnet, tmp_path / "m")
    assert result.architecture == architecture, result.reason
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "m", dtype=torch.float32)
    with torch.no_grad():
        exported = model(IDS).logits
    torch.testing.assert_close(exported, evaluated, rtol=2e-4, atol=2e-4)
    assert count_parameters(smollm2, subnet) == result.num_parameters
    assert sum(p.numel() for p in model.parameters()) == result.exported_parameters
    assert (tmp_path / "m" / "tokenizer.json").is_file()


def test_cli_evaluate_matches_exported_model(smollm2, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    subnet = SubNetwork(n_layers=24, intermediate_size=1024)
    subnet.save(tmp_path / "s.json")
    args = ["--data", "default:validation", "--seq-len", "64", "--num-seqs", "2", "--json"]
    assert main(["evaluate", "default", "--subnet", str(tmp_path / "s.json"), *args]) == 0
    in_place = json.loads(capsys.readouterr().out)
    assert main(["extract", "default", "--subnet", str(tmp_path / "s.json"), "--out", str(tmp_path / "m")]) == 0
    capsys.readouterr()
    assert main(["evaluate", str(tmp_path / "m"), *args]) == 0
    exported = json.loads(capsys.readouterr().out)
    assert in_place["parameters"] == exported["parameters"]
    assert exported["perplexity"] == pytest.approx(in_place["perplexity"], rel=1e-4)


def test_search_winner_file_reproduces_its_number(smollm2, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`subnas search` (importance order) writes explicit original indices: `subnas evaluate` with the
    original model and the same data gives the search's number, and the kept layers are the most
    important ones, not the first n."""
    data = ["--data", "default:search", "--seq-len", "64", "--num-seqs", "2"]
    assert main(["search", "default", "--bins", "85M-100M", "--trials", "3", "--confirm", "2", "--out",
                 str(tmp_path), *data, "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    entry = result["bins"][0]
    assert result["fitness_data"] == "default:search" and result["order"].startswith("importance:default:calibration")
    assert result["order"].endswith("layers=removal")  # layers ranked by the loss of skipping each
    best = SubNetwork.load(entry["best_subnet_file"])
    assert 85_000_000 <= count_parameters(smollm2, best) <= 100_000_000
    layers = [s.layer for s in best.resolve(smollm2.subnas_config).layers]
    assert layers != list(range(len(layers))) and 29 in layers  # SmolLM2's last layer matters (docs/design.md#measure-the-product)
    assert main(["evaluate", "default", "--subnet", entry["best_subnet_file"], *data, "--json"]) == 0
    again = json.loads(capsys.readouterr().out)
    assert again["perplexity"] == pytest.approx(entry["best_fitness"], rel=1e-6)
    # The winner is the better of the two best confirmed on the next 48 sequences of the split.
    assert len(entry["confirmed"]) == 2 and entry["confirm_data"] == "default:search sequences 2-49 (64 tokens each)"
    assert entry["confirmed_fitness"] == min(c["confirmed_fitness"] for c in entry["confirmed"])


def test_vocab_pruned_10m_export_is_stock_and_round_trips(smollm2, tmp_path: Path) -> None:
    """Issue #13's "done when": a ~10M SmolLM2 sub-network with an 8k vocabulary (most frequent on
    the calibration split) exports as stock Llama + a pruned tokenizer that a process which never
    imports subnas loads with AutoModelForCausalLM + AutoTokenizer; held-out validation text
    (unicode included) round-trips exactly, and the export computes what the supernet evaluated."""
    import subprocess
    import sys

    from subnas.data import resolve_text_source
    from subnas.vocab import pruned_tokenizer, vocab_order

    kept = vocab_order(smollm2).kept(8192)
    subnet = SubNetwork(n_layers=14, n_embd=256, num_heads=3, query_groups=1, intermediate_size=512, vocab_indices=kept)
    assert 9_000_000 <= count_parameters(smollm2, subnet) <= 11_000_000
    result = extract(smollm2, subnet, tmp_path / "m")
    assert result.format == "stock" and result.padding is None
    texts = resolve_text_source("default:validation")[:8] + ["Zürich, naïve café — 日本語 🚀 ‰ \t\n"]
    (tmp_path / "texts.json").write_text(json.dumps(texts))
    script = ("import json, sys, torch; from transformers import AutoModelForCausalLM, AutoTokenizer; "
              "p = sys.argv[1]; texts = json.load(open(sys.argv[2])); tok = AutoTokenizer.from_pretrained(p); "
              "m = AutoModelForCausalLM.from_pretrained(p, dtype=torch.float32); "
              "ids = tok.encode(texts[0], add_special_tokens=False)[:64]; "
              "print(json.dumps({'ok': [tok.decode(tok.encode(t, add_special_tokens=False)) == t for t in texts], "
              "'subnas': 'subnas' in sys.modules, 'vocab': len(tok), 'ids': ids, "
              "'params': sum(x.numel() for x in m.parameters()), "
              "'logits': m(torch.tensor([ids])).logits[0, -1, :16].tolist()}))")
    proc = subprocess.run([sys.executable, "-c", script, str(tmp_path / "m"), str(tmp_path / "texts.json")],
                          capture_output=True, text=True, check=True)
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert all(out["ok"]) and not out["subnas"]
    assert out["vocab"] == 8192 and out["params"] == result.num_parameters
    assert out["ids"] == pruned_tokenizer(smollm2.tokenizer, kept).encode(texts[0], add_special_tokens=False)[:64]
    with torch.no_grad(), smollm2.sub_network(subnet):
        evaluated = smollm2(torch.tensor([out["ids"]])).logits[0, -1, :16]
    torch.testing.assert_close(torch.tensor(out["logits"]), evaluated, rtol=2e-4, atol=2e-4)
