"""Exports every stock tool loads (issue 11): alternative stock classes, zero-padded layer-wise
exports, the flexible format's loading hints, and permissions that follow the umask.

Stock exports are checked the way users meet them: loaded by plain ``AutoModelForCausalLM`` in a
subprocess that never imports subnas, and compared logit by logit (fp32) with the supernet.
"""

from __future__ import annotations

import json
import os
import re
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM

from subnas import SubNetwork, Supernet, count_parameters, extract
from subnas.families import NotExpressible
from tests._train_helpers import char_tokenizer, tiny_model_dir
from tests.conftest import SEQ
from tests.test_lm_eval import offline, task_dir  # noqa: F401  (fixtures: local lm-eval tasks, offline)

# (family fixture, sub-network, expected stock class, padded?). Every shape here is refused by the
# family's own stock config as it is: hidden % heads != 0 (Llama), head size != hidden / heads
# (GPT-NeoX, GPT-2), or widths that differ between layers (all).
CASES: dict[str, tuple[str, SubNetwork, str, bool]] = {
    "llama-mistral": ("llama-mha", SubNetwork(n_embd=20, num_heads=3), "MistralForCausalLM", False),
    "llama-bias-granite": ("llama-mqa", SubNetwork(n_embd=40, num_heads=3), "GraniteForCausalLM", False),
    "llama-layerwise": ("llama-gqa", SubNetwork(num_heads=[4, 2, 2], query_groups=[2, 1, 1],
                                                intermediate_size=[96, 40, 8]), "LlamaForCausalLM", True),
    "llama-layerwise-kv-copies": ("llama-gqa", SubNetwork(num_heads=[4, 2, 1], query_groups=[2, 2, 1],
                                                          intermediate_size=[16, 96, 48]), "LlamaForCausalLM", True),
    "llama-layerwise-mistral": ("llama-mha", SubNetwork(n_embd=20, num_heads=[3, 1, 2], intermediate_size=[64, 8, 30]),
                                "MistralForCausalLM", True),
    # Head sizes per layer / arbitrary RoPE pairs: heads padded to one size, queries rescaled.
    "llama-layerwise-head-sizes": ("llama-gqa", SubNetwork(num_heads=[4, 2, 2], query_groups=[2, 1, 1],
                                                           head_size=[16, 8, 12]), "LlamaForCausalLM", True),
    "gpt_neox-head-sizes": ("gpt_neox", SubNetwork(num_heads=[4, 2, 3], head_size=[16, 12, 8]),  # partial rotary
                            "GPTNeoXForCausalLM", True),
    "gpt2-head-sizes": ("gpt2", SubNetwork(num_heads=[2, 4, 1], head_size=[16, 6, 10]), "GPT2LMHeadModel", True),
    "qwen2-fine-head-dims": ("qwen2", SubNetwork(head_size_indices=[1, 3, 6, 9, 11, 14]), "Qwen2ForCausalLM", True),
    "qwen2-layerwise": ("qwen2", SubNetwork(num_heads=[2, 4, 2], query_groups=[1, 2, 1], intermediate_size=[8, 96, 50]),
                        "Qwen2ForCausalLM", True),
    "qwen3-layerwise": ("qwen3", SubNetwork(num_heads=[4, 2], query_groups=[2, 1], intermediate_size=[24, 96]),
                        "Qwen3ForCausalLM", True),
    # MQA: one KV head, so layer-wise head counts need key/value copies; equal ones pad only the MLP.
    "gemma3-layerwise": ("gemma3", SubNetwork(num_heads=2, intermediate_size=[96, 8, 60]), "Gemma3ForCausalLM", True),
    "gemma3-layerwise-kv-copies": ("gemma3", SubNetwork(num_heads=[4, 2, 3], intermediate_size=[96, 8, 60]),
                                   "Gemma3ForCausalLM", True),
    "gpt_neox-heads": ("gpt_neox", SubNetwork(num_heads=3), "GPTNeoXForCausalLM", True),
    "gpt_neox-layerwise": ("gpt_neox", SubNetwork(num_heads=[4, 1, 3], intermediate_size=[96, 8, 50]),
                           "GPTNeoXForCausalLM", True),
    "gpt2-heads": ("gpt2", SubNetwork(num_heads=2), "GPT2LMHeadModel", True),
    "gpt2-layerwise": ("gpt2", SubNetwork(num_heads=[4, 1, 3], intermediate_size=[256, 8, 50]), "GPT2LMHeadModel", True),
}

# Loads every folder with stock transformers only and writes its logits; fails if subnas got imported.
LOADER = """
import json, sys, torch
from safetensors.torch import save_file
from transformers import AutoModelForCausalLM
folders, ids = json.loads(sys.argv[1]), torch.tensor(json.loads(sys.argv[2]))
out = {}
for name, path in folders.items():
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    with torch.no_grad():
        out[name] = model(ids).logits.contiguous()
    out[name + ".numel"] = torch.tensor(sum(p.numel() for p in model.parameters()))
    out[name + ".class"] = torch.tensor(list(type(model).__name__.encode()))
assert not [m for m in sys.modules if m.split(".")[0] == "subnas"], "subnas was imported"
save_file(out, sys.argv[3])
"""

_SUPERNETS: dict[str, Supernet] = {}


def supernet_for(tiny_models: dict, name: str) -> Supernet:
    if name not in _SUPERNETS:
        _SUPERNETS[name] = Supernet.from_model(tiny_models[name])
    return _SUPERNETS[name]


def ids_for(vocab: int) -> torch.Tensor:
    return torch.randint(0, vocab, (2, SEQ), generator=torch.Generator().manual_seed(7))


def load_without_subnas(folders: dict[str, Path], ids: torch.Tensor, out: Path) -> dict[str, torch.Tensor]:
    """Run `LOADER` in a fresh interpreter outside the repository, with no PYTHONPATH."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_VERBOSITY="error")
    proc = subprocess.run([sys.executable, "-c", LOADER, json.dumps({k: str(v) for k, v in folders.items()}),
                           json.dumps(ids.tolist()), str(out)], capture_output=True, text=True, env=env,
                          cwd=out.parent, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return load_file(str(out))


@pytest.fixture(scope="module")
def exported(tiny_models: dict, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Every case exported with format="auto", its supernet logits, and its stock reload."""
    root = tmp_path_factory.mktemp("exports")
    ids = ids_for(128)
    results, evaluated = {}, {}
    for case, (model, subnet, _, _) in CASES.items():
        supernet = supernet_for(tiny_models, model)
        with torch.no_grad(), supernet.sub_network(subnet):
            evaluated[case] = supernet(ids).logits
        results[case] = extract(supernet, subnet, root / case)
    loaded = load_without_subnas({c: Path(r.path) for c, r in results.items()}, ids, root / "logits.safetensors")
    return {"results": results, "evaluated": evaluated, "loaded": loaded}


@pytest.mark.parametrize("case", sorted(CASES))
def test_auto_export_is_exact_stock(exported: dict[str, Any], tiny_models: dict, case: str) -> None:
    model, subnet, architecture, padded = CASES[case]
    result, loaded = exported["results"][case], exported["loaded"]
    assert result.format == "stock", result.reason
    assert result.architecture == architecture == bytes(loaded[case + ".class"].tolist()).decode()
    # What you evaluate is what you export, in a process that never imported subnas.
    torch.testing.assert_close(loaded[case], exported["evaluated"][case], rtol=1e-5, atol=1e-5)
    # The true count stays the one counter's; the padded count is what the files hold.
    assert result.num_parameters == count_parameters(supernet_for(tiny_models, model), subnet)
    assert result.exported_parameters == int(loaded[case + ".numel"])
    assert (result.exported_parameters > result.num_parameters) == padded == (result.padding is not None)
    meta = json.loads((Path(result.path) / "subnas_extract.json").read_text())
    assert (meta["num_parameters"], meta["exported_parameters"]) == (result.num_parameters, result.exported_parameters)
    readme = (Path(result.path) / "README.md").read_text()
    assert f"{result.num_parameters:,}" in readme and f"{result.exported_parameters:,}" in readme
    if architecture != type(tiny_models[model]).__name__:
        assert result.note and "computes the same function" in result.note


@pytest.mark.parametrize("config_class,accepts", [
    ("LlamaConfig", False), ("Gemma3TextConfig", False),  # hence Mistral / padded heads
    ("MistralConfig", True), ("GraniteConfig", True), ("Qwen2Config", True), ("Qwen3Config", True),
])
def test_which_stock_configs_accept_hidden_not_divisible_by_heads(config_class: str, accepts: bool) -> None:
    """The transformers behaviour the alternative classes rest on (448 = SmolLM2 pruned to 6 heads)."""
    import transformers

    shape = dict(hidden_size=448, num_attention_heads=6, num_key_value_heads=2, head_dim=64, intermediate_size=64,
                 vocab_size=64)
    if accepts:
        assert getattr(transformers, config_class)(**shape).head_dim == 64
    else:
        with pytest.raises(Exception, match="not a multiple of the number of attention heads"):
            getattr(transformers, config_class)(**shape)


def _padded_zeros(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Masks of the exactly-zero entries of per-layer weights — the only ones padding touches. Random
    real weights are never exactly 0 there; elsewhere they can be (Gemma's padding-token embedding
    row, which the tied output head still trains)."""
    layer = re.compile(r"\.(layers|h)\.\d+\.")
    return {n: (p.detach() == 0) if layer.search(n) else torch.zeros_like(p, dtype=torch.bool)
            for n, p in model.named_parameters()}


@pytest.mark.parametrize("case", sorted(c for c, v in CASES.items() if v[3] and "kv-copies" not in c))
def test_padded_units_are_the_padding_and_stay_zero_under_adamw(exported: dict[str, Any], case: str) -> None:
    result = exported["results"][case]
    model = AutoModelForCausalLM.from_pretrained(result.path, dtype=torch.float32)
    zeros = _padded_zeros(model)
    # Exactly the padded parameters are zero: the padded count beside the true one is honest.
    assert sum(int(m.sum()) for m in zeros.values()) == result.exported_parameters - result.num_parameters > 0
    model.train()  # dropout (GPT-2) on: zeros stay zeros through it too
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.1)
    ids = ids_for(128)
    for step in range(3):
        opt.zero_grad()
        model(ids, labels=ids).loss.backward()
        for name, p in model.named_parameters():
            assert p.grad is not None
            assert not p.grad[zeros[name]].any(), f"step {step}: gradient reaches padded entries of {name}"
        opt.step()
    for name, p in model.named_parameters():
        assert not p.detach()[zeros[name]].any(), f"padded entries of {name} moved"
    assert any(p.grad.abs().sum() > 0 for p in model.parameters() if p.grad is not None)  # the rest did train


@pytest.mark.parametrize("case", ["llama-layerwise", "gemma3-layerwise", "gpt_neox-layerwise", "gpt2-layerwise"])
def test_training_the_padded_export_is_training_the_subnetwork(exported: dict[str, Any], tiny_models: dict,
                                                               case: str, tmp_path: Path) -> None:
    """The same SGD steps on the padded stock export and on the unpadded flexible export give the
    same model: padding is invisible to training, not only at export time."""
    model_name, subnet, _, _ = CASES[case]
    flexible = extract(supernet_for(tiny_models, model_name), subnet, tmp_path / "flex", format="subnas")
    # No pad token (id 0) in the batch: stock Gemma's embedding has padding_idx=0 (no gradient for
    # that row) and subnas' does not — a difference between the classes, not due to padding.
    ids = ids_for(127) + 1
    logits = []
    for path in (exported["results"][case].path, flexible.path):
        model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()  # eval: no dropout
        opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=0.01)
        for _ in range(3):
            opt.zero_grad()
            model(ids, labels=ids).loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
        with torch.no_grad():
            logits.append(model(ids).logits)
    before = exported["evaluated"][case]
    assert (logits[1] - before).abs().max() > 1e-2  # training did change the model
    torch.testing.assert_close(logits[0], logits[1], rtol=1e-4, atol=1e-4)


def test_query_scale_is_stated(exported: dict[str, Any]) -> None:
    result = exported["results"]["llama-layerwise-head-sizes"]
    assert result.padding is not None and result.padding["query_scale"]
    assert result.padding["stock_shape"]["head_dim"] == 16
    assert [round(layer["query_scale"] ** 2, 6) for layer in result.padding["layers"]] == [1.0, 2.0, round(16 / 12, 6)]
    assert "query_scale" in (Path(result.path) / "README.md").read_text()


def test_kv_copies_are_stated_and_padded_groups_stay_zero(exported: dict[str, Any]) -> None:
    result = exported["results"]["llama-layerwise-kv-copies"]
    assert result.padding is not None and result.padding["kv_copies"]
    assert [layer["kv_copies"] for layer in result.padding["layers"]] == [2, 1, 1]
    assert "copies of their key/value" in (Path(result.path) / "README.md").read_text()
    model = AutoModelForCausalLM.from_pretrained(result.path, dtype=torch.float32)
    k0 = model.model.layers[0].self_attn.k_proj.weight  # layer 0: 2 groups of 2 heads -> 4 groups of 1
    torch.testing.assert_close(k0[0:16], k0[16:32], rtol=0, atol=0)
    zeros = _padded_zeros(model)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.1)
    ids = ids_for(128)
    for _ in range(2):
        opt.zero_grad()
        model(ids, labels=ids).loss.backward()
        opt.step()
    for name, p in model.named_parameters():
        assert not p.detach()[zeros[name]].any(), f"padded entries of {name} moved"


def test_a_padded_head_inside_a_real_group_would_come_alive() -> None:
    """Why padding never puts a zero head into a real query group: softmax(0) averages the group's
    real values, so the zero output column gets a gradient after one step."""
    torch.manual_seed(0)
    T, hs = 6, 4
    v = torch.randn(1, 1, T, hs)  # the real group's values
    q_pad = torch.zeros(1, 1, T, hs)  # padded head: zero query ...
    k = torch.randn(1, 1, T, hs)
    o_col = torch.zeros(hs, 3, requires_grad=True)  # ... and zero output columns
    out = torch.nn.functional.scaled_dot_product_attention(q_pad, k, v, is_causal=True)
    (out @ o_col).sum().backward()
    assert o_col.grad is not None and o_col.grad.abs().sum() > 0
    # With the group's values zero too (a whole padded group) the same gradient is exactly 0.
    o_col.grad = None
    out = torch.nn.functional.scaled_dot_product_attention(q_pad, torch.zeros_like(k), torch.zeros_like(v), is_causal=True)
    (out @ o_col).sum().backward()
    assert not o_col.grad.any()


def test_flexible_only_when_nothing_is_exact_or_asked(tiny_models: dict, tmp_path: Path) -> None:
    qwen3 = supernet_for(tiny_models, "qwen3")
    mixed = SubNetwork(head_size=[16, 8])  # QK-norm averages over the head: no padding, no stock model
    result = extract(qwen3, mixed, tmp_path / "mixed")
    assert result.format == "subnas" and "head sizes differ between layers" in (result.reason or "")
    assert "QK-norm" in (result.reason or "")
    with pytest.raises(NotExpressible, match="no stock architecture computes this sub-network exactly"):
        extract(qwen3, mixed, tmp_path / "stock", format="stock")
    supernet = supernet_for(tiny_models, "llama-gqa")
    layerwise = CASES["llama-layerwise"][1]
    assert extract(supernet, layerwise, tmp_path / "asked", format="subnas").format == "subnas"
    assert extract(supernet, layerwise, tmp_path / "strict", format="stock").padding is not None  # padded is stock
    unpadded = extract(supernet, layerwise, tmp_path / "nopad", pad=False)
    assert unpadded.format == "subnas" and "differs between layers" in (unpadded.reason or "")
    assert unpadded.exported_parameters == unpadded.num_parameters


def test_flexible_export_says_how_to_load_it(tiny_models: dict, tmp_path: Path) -> None:
    supernet = supernet_for(tiny_models, "qwen3")
    result = extract(supernet, SubNetwork(head_size=[16, 8]), tmp_path / "flex")
    config = json.loads((tmp_path / "flex" / "config.json").read_text())
    for text in (result.how_to_load, config["how_to_load"], (tmp_path / "flex" / "README.md").read_text()):
        # No stock model exists here: the hint says so, and how to evaluate it anyway.
        assert "import subnas" in text and "no exact stock model exists" in text and "cli_evaluate" in text
    asked = extract(supernet, SubNetwork(n_layers=1), tmp_path / "asked", format="subnas")
    assert "import subnas" in asked.how_to_load and "--format stock" in asked.how_to_load
    # What a user without subnas sees today, and that the folder then points the right way.
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = subprocess.run([sys.executable, "-c", "from transformers import AutoModelForCausalLM; "
                           f"AutoModelForCausalLM.from_pretrained({str(tmp_path / 'flex')!r})"],
                          capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120)
    assert proc.returncode != 0 and "does not recognize this architecture" in proc.stderr
    # With subnas imported it loads, and the hint is just a config attribute.
    model = AutoModelForCausalLM.from_pretrained(result.path, dtype=torch.float32)
    assert type(model).__name__ == "SubnasForCausalLM"
    # Re-extracting from the flexible folder writes a hint naming the new folder, not the old one.
    again = extract(Supernet.from_pretrained(result.path), SubNetwork(n_layers=1), tmp_path / "again")
    written = json.loads((tmp_path / "again" / "config.json").read_text())["how_to_load"]
    assert "from_pretrained('again')" in written and str(tmp_path) not in written  # the folder, wherever it goes
    assert str(tmp_path / "again") in again.how_to_load  # what the CLI prints: where it is now


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002])
def test_written_files_follow_the_umask(tiny_models: dict, tmp_path: Path, umask: int) -> None:
    old = os.umask(umask)
    try:
        result = extract(supernet_for(tiny_models, "llama-gqa"), SubNetwork(n_layers=1), tmp_path / "m")
        SubNetwork(n_layers=1).save(tmp_path / "s.json")
    finally:
        os.umask(old)
    folder = Path(result.path)
    assert stat.S_IMODE(folder.stat().st_mode) == 0o777 & ~umask
    files = [*folder.iterdir(), tmp_path / "s.json"]
    assert files and all(stat.S_IMODE(f.stat().st_mode) == 0o666 & ~umask for f in files if f.is_file())


# ----------------------------------------------------------------------------- the stock lm_eval CLI

# `python -m lm_eval ...`, plus a report of whether anything imported subnas on the way.
LM_EVAL = """
import runpy, sys
sys.argv = ["lm_eval"] + sys.argv[1:]
try:
    runpy.run_module("lm_eval", run_name="__main__", alter_sys=True)
finally:
    print("SUBNAS_MODULES", [m for m in sys.modules if m.split(".")[0] == "subnas"])
"""


@pytest.mark.slow
def test_stock_lm_eval_cli_scores_a_padded_layerwise_export_like_subnas(tmp_path: Path, task_dir: Path,
                                                                        offline: None) -> None:
    from subnas.evaluation._lm_eval import evaluate_tasks

    supernet = Supernet.from_pretrained(tiny_model_dir(tmp_path))
    supernet.tokenizer = char_tokenizer()
    subnet = CASES["llama-layerwise"][1]
    result = extract(supernet, subnet, tmp_path / "export")
    assert result.format == "stock" and result.padding is not None
    ours = evaluate_tasks(supernet, ["subnas_tiny_ll"], subnet=subnet, include_path=task_dir, include_defaults=False,
                          batch_size=4, bootstrap_iters=0)["results"]["subnas_tiny_ll"]
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    out = tmp_path / "results"
    proc = subprocess.run(
        [sys.executable, "-c", LM_EVAL, "--model", "hf", "--model_args", f"pretrained={result.path},dtype=float32",
         "--tasks", "subnas_tiny_ll", "--include_path", str(task_dir), "--device", "cpu", "--batch_size", "4",
         "--output_path", str(out)],
        env=env, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "SUBNAS_MODULES []" in proc.stdout
    files = list(out.rglob("results_*.json"))
    assert len(files) == 1
    theirs = json.loads(files[0].read_text())["results"]["subnas_tiny_ll"]
    assert theirs["acc,none"] == ours["acc,none"]
    assert theirs["perplexity,none"] == pytest.approx(ours["perplexity,none"], rel=1e-4)
