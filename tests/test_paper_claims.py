"""benchmarks/paper_claims.py: the verdicts follow the numbers (synthetic results; no training)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any

import pytest

_SPEC = importlib.util.spec_from_file_location(
    "paper_claims", Path(__file__).resolve().parents[1] / "benchmarks" / "paper_claims.py")
assert _SPEC is not None and _SPEC.loader is not None
claims = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(claims)


def _run(seed: int, name: str, curve: list[tuple[int, float]]) -> dict[str, Any]:
    return {"seed": seed, "run": name, "init": "random" if name == "random init" else "supernet", "lr": 1e-3,
            "tokens": curve[-1][0], "start_perplexity": curve[0][1], "val_perplexity": curve[-1][1],
            "curve": [list(p) for p in curve]}


def _results(kd_end: float, ce_end: float) -> dict[str, Any]:
    runs = []
    for seed in (0, 1):
        runs += [_run(seed, "distilled", [(0, 130.0), (500, 90.0), (1000, kd_end)]),
                 _run(seed, "cross-entropy", [(0, 130.0), (1000, ce_end)]),
                 _run(seed, "random init", [(0, 50000.0), (500, 3000.0), (1000, 100.0 + seed)])]
    return {"setup": {"train_tokens": 1000, "lrs": {}, "eval_seqs": 16, "seq_len": 128}, "teacher_perplexity": 25.0,
            "parameters": 92_000_000,
            "runs": runs}


def test_training_claims_follow_the_curves() -> None:
    got = claims.training_claims(_results(kd_end=60.0, ce_end=70.0))
    assert got["seeds"] == 2
    # Random init ends at 100/101; the distilled curve is below that at 500 tokens: 2x fewer.
    assert [r["distilled_tokens_needed"] for r in got["a"]["rows"]] == [500, 500] and got["a"]["holds"]
    assert got["d"]["holds"] and got["d"]["mean"] == (60.0, 70.0)
    worse = claims.training_claims(_results(kd_end=75.0, ce_end=70.0))
    assert not worse["d"]["holds"]
    assert claims.tokens_to_reach([[0, 10.0]], 5.0) is None


def test_claim_a_is_not_measurable_when_the_distilled_curve_starts_below_random_inits_end(tmp_path: Path) -> None:
    results = _results(kd_end=60.0, ce_end=70.0)
    for row in results["runs"]:
        if row["run"] == "random init":  # random init ends far above where distillation starts (130)
            row["curve"][-1][1] = row["val_perplexity"] = 2500.0
    got = claims.training_claims(results)
    assert [r["distilled_tokens_needed"] for r in got["a"]["rows"]] == [0, 0]
    assert not any(r["measurable"] for r in got["a"]["rows"]) and not got["a"]["holds"]
    assert got["a"]["verdict"].startswith("not measurable at this budget (2 of 2 seeds)")
    assert "starts at 130.0 after 0 tokens, already below random init's final 2,500.0" in got["a"]["verdict"]
    assert "not measurable at this budget" in claims.report(results, None, tmp_path)
    measurable = claims.training_claims(_results(kd_end=60.0, ce_end=70.0))
    assert measurable["a"]["verdict"] == "holds (2 seeds)" and measurable["d"]["verdict"] == "holds (2 seeds)"


def test_one_seed_is_no_verdict() -> None:
    results = _results(kd_end=60.0, ce_end=70.0)
    results["runs"] = [r for r in results["runs"] if r["seed"] == 0]
    got = claims.training_claims(results)
    assert got["seeds"] == 1 and not got["a"]["holds"] and not got["d"]["holds"]
    assert got["a"]["verdict"].startswith("no verdict (1 seed;") and got["d"]["verdict"].startswith("no verdict")


def test_search_claims_and_report(tmp_path: Path) -> None:
    runs = [{"bin": "85M-100M", "seed": s, "arm": arm, "val_perplexity": v}
            for s in (0, 1) for arm, v in (("default", 130.0 + s), ("random", 900.0), ("importance", 600.0),
                                           ("paper", 20000.0), ("one-shot", 129.0))]
    runs += [{"bin": "55M-65M", "seed": 0, "arm": "default", "val_perplexity": 5000.0},
             {"bin": "55M-65M", "seed": 0, "arm": "random", "val_perplexity": 4000.0},
             {"bin": "55M-65M", "seed": 0, "arm": "importance", "val_perplexity": 9000.0}]
    path = tmp_path / "search_quality.json"
    path.write_text(json.dumps({"setup": {}, "runs": runs}))
    search = claims.search_claims(path)
    assert search["b"] == {"bins_won": 1, "bins": 2, "holds": False}
    assert search["c"]["winner"] == "perplexity" and search["c"]["bins_won_by_perplexity"] == 2
    text = claims.report(_results(kd_end=60.0, ce_end=70.0), search, tmp_path)
    assert "130.5 ± 0.7 (n=2)" in text and "(d) distillation beats cross-entropy at equal tokens" in text
    assert "1/2 bins -> does not hold" in text and "perplexity fitness wins" in text
    assert (tmp_path / "paper_claims_training.png").is_file() and (tmp_path / "paper_claims_search.png").is_file()


def test_budget_below_one_step_is_refused() -> None:
    with pytest.raises(SystemExit):
        claims.parse_args(["--train-tokens", "10"])


def test_final_models_are_scored_on_all_of_the_heldout_text_and_compared_there(tmp_path: Path) -> None:
    from tests._train_helpers import tiny_model_dir, write_text

    text = write_text(tmp_path / "heldout.txt", n=40)
    ppl = claims.heldout_perplexity(str(tiny_model_dir(tmp_path)), str(text), seq_len=16)
    assert 1 < ppl < 1e6
    results = _results(kd_end=60.0, ce_end=70.0)
    results["setup"]["heldout"] = "default:test"
    results["teacher_heldout_perplexity"] = 30.0
    for row in results["runs"]:  # on held-out text cross-entropy wins, unlike the curves' last point
        row["heldout_perplexity"] = {"distilled": 80.0, "cross-entropy": 75.0, "random init": 900.0}[row["run"]]
    got = claims.training_claims(results)
    assert not got["d"]["holds"] and got["d"]["rows"][0]["metric"] == "heldout_perplexity"
    text_report = claims.report(results, None, tmp_path)
    assert "final perplexity on default:test (all of it)" in text_report
    assert "teacher perplexity on default:test" in text_report
