"""lm-eval, offline: custom tasks over local jsonl files, in place and through the stock CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import lm_eval  # noqa: F401 - a test dependency ([test] extra): missing, these tests fail instead of skipping
import pytest

from subnas import SubNetwork, Supernet, extract  # noqa: E402
from subnas.evaluation._lm_eval import evaluate_tasks  # noqa: E402
from tests._train_helpers import char_tokenizer, sentences, tiny_model_dir  # noqa: E402

TASKS = {
    # A multiple-choice task (like copa/piqa) and a next-word task scored by perplexity (like lambada).
    "subnas_tiny_mc": """
output_type: multiple_choice
doc_to_text: "{{question}}"
doc_to_choice: "{{choices}}"
doc_to_target: "{{answer}}"
metric_list:
  - metric: acc
    aggregation: mean
    higher_is_better: true
""",
    "subnas_tiny_ll": """
output_type: loglikelihood
doc_to_text: "{{question}}"
doc_to_target: "{{' ' + choices[answer]}}"
metric_list:
  - metric: perplexity
    aggregation: perplexity
    higher_is_better: false
  - metric: acc
    aggregation: mean
    higher_is_better: true
""",
}


@pytest.fixture()
def task_dir(tmp_path: Path) -> Path:
    docs = tmp_path / "tiny.jsonl"
    rows = [{"question": s.rsplit(" ", 1)[0], "choices": [s.rsplit(" ", 1)[1], "zq."], "answer": 0}
            for s in sentences(8, seed=5)]
    docs.write_text("".join(json.dumps(r) + "\n" for r in rows))
    folder = tmp_path / "tasks"
    folder.mkdir()
    for name, body in TASKS.items():
        (folder / f"{name}.yaml").write_text(
            f"task: {name}\ndataset_path: json\ndataset_kwargs:\n  data_files:\n    test: {docs}\n"
            f"test_split: test\n{body}")
    return folder


@pytest.fixture()
def offline(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("SUBNAS_CACHE", str(tmp_path / "cache"))


def test_in_place_sub_network_scores_like_its_export(tmp_path: Path, task_dir: Path, offline: None) -> None:
    supernet = Supernet.from_pretrained(tiny_model_dir(tmp_path))
    supernet.tokenizer = char_tokenizer()
    subnet = SubNetwork(n_layers=2, intermediate_size=48)
    tasks = ["subnas_tiny_mc", "subnas_tiny_ll"]
    in_place = evaluate_tasks(supernet, tasks, subnet=subnet, include_path=task_dir, include_defaults=False,
                              batch_size=4, bootstrap_iters=0)
    assert supernet.active == supernet.model.active and len(supernet.active.layers) == 3  # restored
    exported = extract(supernet, subnet, tmp_path / "export")
    from_folder = evaluate_tasks(exported.path, tasks, include_path=task_dir, include_defaults=False, batch_size=4,
                                 bootstrap_iters=0)
    for task in tasks:
        a, b = in_place["results"][task], from_folder["results"][task]
        assert a["acc,none"] == b["acc,none"]
        assert in_place["n-samples"][task]["effective"] == 8
    ppl_a, ppl_b = in_place["results"]["subnas_tiny_ll"]["perplexity,none"], from_folder["results"]["subnas_tiny_ll"]["perplexity,none"]
    assert ppl_a == pytest.approx(ppl_b, rel=1e-4)
    full = evaluate_tasks(supernet, ["subnas_tiny_ll"], include_path=task_dir, include_defaults=False, limit=4,
                          bootstrap_iters=0)
    assert full["n-samples"]["subnas_tiny_ll"]["effective"] == 4


@pytest.mark.slow
def test_exported_folder_passes_the_stock_lm_eval_cli(tmp_path: Path, task_dir: Path, offline: None) -> None:
    supernet = Supernet.from_pretrained(tiny_model_dir(tmp_path))
    supernet.tokenizer = char_tokenizer()
    result = extract(supernet, SubNetwork(n_layers=2), tmp_path / "export")
    assert result.format == "stock"
    out = tmp_path / "results"
    proc = subprocess.run(
        [sys.executable, "-m", "lm_eval", "--model", "hf", "--model_args", f"pretrained={result.path},dtype=float32",
         "--tasks", "subnas_tiny_mc", "--include_path", str(task_dir), "--device", "cpu", "--batch_size", "4",
         "--output_path", str(out)],
        env={**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}, capture_output=True, text=True,
        timeout=120, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    files = list(out.rglob("results_*.json"))
    assert len(files) == 1
    acc = json.loads(files[0].read_text())["results"]["subnas_tiny_mc"]["acc,none"]
    assert 0.0 <= acc <= 1.0
