"""`subnas demo` end to end on a tiny random-weight model and local text; its verdict and errors."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

import subnas
from subnas.cli import main
from subnas.demo import DEFAULT_LRS, check_lrs, demo, format_summary, verdict
from tests._train_helpers import char_tokenizer, write_text
from tests.conftest import TINY_CONFIGS


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SUBNAS_CACHE", str(tmp_path / "cache"))


def _model_dir(root: Path) -> Path:
    """A tiny random-weight Llama with a context of 512 (the search's calibration pass reads 256-token
    sequences) and the character tokenizer."""
    import torch
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    config = TINY_CONFIGS["llama-gqa"]()
    config.max_position_embeddings = 512
    out = root / "tiny-llama"
    AutoModelForCausalLM.from_config(config).save_pretrained(out)
    char_tokenizer().save_pretrained(out)
    return out


def _bin(model: Path) -> str:
    supernet = subnas.Supernet.from_pretrained(str(model))
    space = subnas.get_search_space("coarse-uniform", supernet.subnas_config)
    lo, hi = space.bounds()
    return f"{lo + (hi - lo) // 3}-{lo + 2 * (hi - lo) // 3}"


def test_demo_trains_three_ways_writes_summary_plot_verdict_and_reruns_as_a_no_op(tmp_path: Path) -> None:
    model, data = _model_dir(tmp_path), write_text(tmp_path / "text.txt", 400)
    out = tmp_path / "demo"
    args = dict(model=str(model), data=str(data), bin=_bin(model), epochs=1, population=3, train_tokens=4 * 4 * 32,
                seq_len=32, batch_size=4, eval_seqs=4, warmup_steps=1)
    summary = demo(out, **args)

    saved = json.loads((out / "summary.json").read_text())
    assert saved["teacher_perplexity"] == summary["teacher_perplexity"] > 1
    assert [r["run"] for r in saved["runs"]] == ["distilled", "cross-entropy", "random init"]
    assert [r["lr"] for r in saved["runs"]] == [DEFAULT_LRS[r["run"]] for r in saved["runs"]]
    for run in saved["runs"]:
        assert run["tokens"] == 4 * 4 * 32 and run["val_perplexity"] > 1
        assert run["curve"][0][0] == 0 and run["curve"][-1][0] == 4 * 4 * 32  # start and end points
        assert Path(run["model_dir"], "config.json").is_file()
    lo, hi = saved["bin"]
    assert lo <= saved["parameters"] <= hi
    kd = saved["runs"][0]["val_perplexity"]
    assert f"reaches validation perplexity {kd:.1f}" in saved["verdict"]
    assert (out / "comparison.png").is_file() and saved["plot"] == str(out / "comparison.png")
    # Only what a user needs: the trained models, no optimizer state, no untrained weights.
    assert not list(out.rglob("optimizer.pt"))
    assert not list((out / "subnet").glob("*.safetensors")) and (out / "subnet" / "subnet.json").is_file()
    assert "weights were dropped" in (out / "subnet" / "README.md").read_text()
    assert saved["disk_bytes"] == sum(p.stat().st_size for p in out.rglob("*") if p.is_file()) - (
        (out / "summary.json").stat().st_size)  # all but summary.json itself
    text = format_summary(saved)
    assert "random init" in text and saved["verdict"] in text
    # The two untrained perplexities are on two texts, and the report says which (issue #19).
    assert "(search split)" in text and "'ppl start' below is the same untrained sub-network on the validation split" in text

    # Rerun: finished runs are read back (no re-extraction, no training), same numbers.
    again = demo(out, **args)
    assert [r["val_perplexity"] for r in again["runs"]] == [r["val_perplexity"] for r in saved["runs"]]
    assert not list((out / "subnet").glob("*.safetensors"))
    # Other settings in the same folder: refused, not silently answered with the old runs.
    with pytest.raises(ValueError, match="another comparison.*max_tokens"):
        demo(out, **{**args, "train_tokens": 2 * 4 * 32})


def _summary(kd: float, ce: float, rnd: float, teacher: float = 20.0) -> dict[str, Any]:
    def run(name: str, ppl: float, init: str) -> dict[str, Any]:
        return {"run": name, "init": init, "loss": "", "lr": 1e-3, "tokens": 1000, "start_perplexity": 100.0,
                "val_perplexity": ppl, "tokens_per_s": 1.0, "curve": [(0, 100.0), (1000, ppl)]}
    return {"teacher_perplexity": teacher, "parameters": 92_000_000, "teacher_parameters": 134_515_008,
            "runs": [run("distilled", kd, "supernet"), run("cross-entropy", ce, "supernet"),
                     run("random init", rnd, "random")]}


def test_the_verdict_says_only_what_the_numbers_say() -> None:
    good = verdict(_summary(kd=40.0, ce=50.0, rnd=5000.0))
    assert "The distilled 92M model (68% of the teacher's parameters) reaches validation perplexity 40.0, 2.00x" in good
    assert "(within 3x)" in good and "random init of the same architecture reaches 5,000 after the same 1,000 tokens" \
        in good
    assert "Distillation beats cross-entropy" in good and "starts below where random init ends" in good
    bad = verdict(_summary(kd=80.0, ce=70.0, rnd=90.0))
    assert "(not within 3x)" in bad and "does NOT beat cross-entropy" in bad and "starts above" in bad


def test_bad_learning_rates_are_clear_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(ValueError, match="unknown run 'kd'.*'distilled'"):
        check_lrs({"kd": 1e-3})
    with pytest.raises(ValueError, match="give a number > 0"):
        check_lrs({"distilled": 0.0})
    assert check_lrs({"random init": 1e-2})["random init"] == 1e-2
    for flags, message in ((["--lr-distilled", "0"], "--lr-distilled 0.0 is out of range"),
                           (["--eval-seqs", "0"], "--eval-seqs 0 is out of range"),
                           (["--warmup-steps", "-1"], "--warmup-steps -1 is out of range")):
        assert main(["demo", "--out", str(tmp_path / "d"), *flags]) == 2
        assert message in capsys.readouterr().err
    assert not (tmp_path / "d").exists()  # refused before anything was loaded or written
