"""The paper's four claims in miniature on the real SmolLM2-135M (docs/benchmarks/paper_claims.md).

(a) supernet init + distillation reaches random init's final validation perplexity with >= 2x
    fewer tokens;
(b) evolutionary search beats random search at equal evaluations;
(c) perplexity fitness vs importance fitness (whichever wins is reported);
(d) distillation beats cross-entropy at equal tokens.

(a) and (d) are measured here: the default search's sub-network (as `subnas demo` finds it) is
trained three ways per seed — distilled, cross-entropy from the supernet's weights, cross-entropy
from random init — at equal tokens, each with its swept learning rate (`subnas.demo.DEFAULT_LRS`);
training curves on ``--eval-seqs`` sequences of the validation split, and every final model (and the
teacher) scored on all of ``--heldout`` (default: the held-out test split), which the claims
compare. Every finished run is merged into
``--out/paper_claims.json`` at once; running the same command again resumes (finished runs are read
back, an interrupted one continues from its checkpoint). (b) and (c) are read from the search
benchmark's results (``benchmarks/search_quality.py``, arms ``default``, ``random``,
``importance``), which are not re-run here.

    python benchmarks/paper_claims.py --seeds 0 1 2 --train-tokens 40960 --out runs/paper_claims
    python benchmarks/paper_claims.py --out runs/paper_claims --report   # tables + plots only
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import subnas  # noqa: E402,F401  (sets OMP_WAIT_POLICY before torch loads)
from subnas._io import atomic_write_text  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="runs/paper_claims", help="folder for the runs and paper_claims.json")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1], help="training seeds (>= 2 for a spread)")
    p.add_argument("--train-tokens", type=int, default=40_960, help="training tokens per run")
    p.add_argument("--bin", default="85M-100M")
    p.add_argument("--seq-len", type=int, default=128)
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--eval-seqs", type=int, default=16, help="validation sequences of the training curves")
    p.add_argument("--heldout", default="default:test",
                   help="text every final model (and the teacher) is scored on, all of it: the headline numbers")
    p.add_argument("--warmup-steps", type=int, default=8)
    p.add_argument("--search-results", default=str(ROOT / "docs/benchmarks/search_quality.json"),
                   help="benchmarks/search_quality.py's JSON, for claims (b) and (c)")
    p.add_argument("--docs", default=str(ROOT / "docs/benchmarks"), help="where the plots go")
    p.add_argument("--report", action="store_true", help="only the tables and plots, from the JSON files")
    args = p.parse_args(argv)
    if args.train_tokens < args.seq_len * args.batch_size:
        p.error(f"--train-tokens {args.train_tokens} is less than one step ({args.seq_len * args.batch_size} tokens)")
    return args


# ---------------------------------------------------------------------------- training, (a) and (d)
def train(args: argparse.Namespace) -> dict[str, Any]:
    from subnas.demo import DEFAULT_LRS, search_subnet, train_three
    from subnas.evaluation._perplexity import evaluate
    from subnas.supernet import Supernet

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "paper_claims.json"
    setup = {"model": "default", "bin": args.bin, "train_tokens": args.train_tokens, "seq_len": args.seq_len,
             "batch_size": args.batch_size, "eval_seqs": args.eval_seqs, "warmup_steps": args.warmup_steps,
             "lrs": DEFAULT_LRS, "validation": "default:validation", "heldout": args.heldout}
    results = json.loads(path.read_text()) if path.is_file() else {"setup": setup, "runs": []}
    if results["setup"] != setup:
        raise SystemExit(f"{path} holds results of another setup ({results['setup']}); give another --out")

    def save() -> None:
        atomic_write_text(path, json.dumps(results, indent=2) + "\n")

    supernet = Supernet.from_pretrained("default")
    if "teacher_perplexity" not in results:
        results["teacher_perplexity"] = evaluate(supernet, data="default:validation", seq_len=args.seq_len,
                                                 num_seqs=args.eval_seqs, progress=False)["perplexity"]
        save()
    if "teacher_heldout_perplexity" not in results:
        results["teacher_heldout_perplexity"] = heldout_perplexity(supernet, args.heldout, args.seq_len)
        save()
    # One sub-network for every seed: the claims are about training it, not about the search.
    best, subnet = search_subnet(supernet, out / "search", bin=args.bin, data="default", seq_len=args.seq_len,
                                 epochs=2, population=6, seed=0)
    results["subnet"], results["parameters"] = subnet.to_dict(), best["best_parameters"]
    results["teacher_parameters"] = supernet.count_parameters()
    for seed in args.seeds:
        def merge(row: dict[str, Any], seed: int = seed) -> None:
            old = next((r for r in results["runs"] if (r["seed"], r["run"]) == (seed, row["run"])), {})
            row = {**row, "seed": seed}
            # A resumed benchmark reads finished runs back: their held-out score is kept, not recomputed.
            row["heldout_perplexity"] = old.get("heldout_perplexity") if old.get("model_dir") == row["model_dir"] \
                else None
            if row["heldout_perplexity"] is None:
                row["heldout_perplexity"] = heldout_perplexity(row["model_dir"], args.heldout, args.seq_len)
            results["runs"] = [r for r in results["runs"] if (r["seed"], r["run"]) != (seed, row["run"])]
            results["runs"].append(row)
            save()
            print(f"seed {seed} {row['run']:<14} validation perplexity {row['val_perplexity']:10.2f} "
                  f"({row['tokens']:,} tokens, lr {row['lr']:g})", flush=True)

        train_three(supernet, subnet, out / f"seed{seed}", data="default", val="default:validation",
                    train_tokens=args.train_tokens, seq_len=args.seq_len, batch_size=args.batch_size,
                    eval_seqs=args.eval_seqs, seed=seed, lrs=DEFAULT_LRS, warmup_steps=args.warmup_steps,
                    on_run=merge)
    return results


def heldout_perplexity(model: Any, data: str, seq_len: int) -> float:
    """Perplexity of ``model`` (a folder or a `Supernet`) on every whole ``seq_len`` block of ``data``."""
    from subnas.evaluation._perplexity import evaluate

    return float(evaluate(model, data=data, seq_len=seq_len, num_seqs=None, progress=False)["perplexity"])


def tokens_to_reach(curve: list[list[float]], target: float) -> int | None:
    """First token count at which a validation curve is at or below ``target`` (None: never)."""
    return next((int(t) for t, ppl in curve if ppl <= target), None)


def _stats(values: list[float]) -> str:
    if not values:
        return "–"
    mean = statistics.fmean(values)
    spread = f" ± {statistics.stdev(values):.1f}" if len(values) > 1 else ""
    return f"{mean:,.1f}{spread} (n={len(values)})"


def training_claims(results: dict[str, Any]) -> dict[str, Any]:
    """Claims (a) and (d) from the training runs: per seed numbers, mean ± std, verdicts."""
    by_seed: dict[int, dict[str, dict[str, Any]]] = {}
    for row in results["runs"]:
        by_seed.setdefault(row["seed"], {})[row["run"]] = row
    complete = {s: r for s, r in sorted(by_seed.items()) if len(r) == 3}
    a_rows, d_rows = [], []
    for seed, runs in complete.items():
        kd, ce, rnd = runs["distilled"], runs["cross-entropy"], runs["random init"]
        need = tokens_to_reach(kd["curve"], rnd["val_perplexity"])
        # A curve whose first point already beats random init's end says nothing about the ratio of
        # tokens: any ratio would "hold". Such a seed cannot test the claim at this budget.
        measurable = need is None or need > kd["curve"][0][0]
        a_rows.append({"seed": seed, "random_final": rnd["val_perplexity"], "random_tokens": rnd["tokens"],
                       "distilled_tokens_needed": need, "distilled_start": kd["start_perplexity"],
                       "distilled_first_point": list(kd["curve"][0]), "measurable": measurable,
                       "holds": measurable and need is not None and 2 * need <= rnd["tokens"]})
        key = _final_key(runs.values())
        d_rows.append({"seed": seed, "distilled": kd[key], "cross_entropy": ce[key], "random_init": rnd[key],
                       "metric": key, "holds": kd[key] < ce[key]})
    seeds = len(complete)
    a_holds = seeds >= 2 and all(r["holds"] for r in a_rows)
    d_mean = (statistics.fmean(r["distilled"] for r in d_rows), statistics.fmean(r["cross_entropy"] for r in d_rows)) \
        if d_rows else None
    d_holds = seeds >= 2 and all(r["holds"] for r in d_rows)
    return {"seeds": seeds, "a": {"rows": a_rows, "holds": a_holds, "verdict": _a_verdict(a_rows, seeds)},
            "d": {"rows": d_rows, "holds": d_holds, "mean": d_mean,
                  "verdict": _verdict(d_holds, seeds)}}


def _final_key(rows: Any) -> str:
    """Which final number a claim compares: the held-out split's when every run has it."""
    return "heldout_perplexity" if all(r.get("heldout_perplexity") is not None for r in rows) else "val_perplexity"


def _verdict(holds: bool, seeds: int) -> str:
    if seeds < 2:
        return f"no verdict ({seeds} seed{'s' if seeds != 1 else ''}; at least 2 needed)"
    return f"{'holds' if holds else 'does not hold'} ({seeds} seeds)"


def _a_verdict(rows: list[dict[str, Any]], seeds: int) -> str:
    """Claim (a)'s verdict; "not measurable at this budget" when a seed's distilled curve is already
    below random init's final perplexity at its first point."""
    unmeasurable = [r for r in rows if not r["measurable"]]
    if seeds >= 2 and unmeasurable:
        worst = max(r["random_final"] for r in unmeasurable)
        start = min(r["distilled_first_point"][1] for r in unmeasurable)
        return (f"not measurable at this budget ({len(unmeasurable)} of {seeds} seeds): the distilled run starts at "
                f"{start:,.1f} after {unmeasurable[0]['distilled_first_point'][0]:,} tokens, already below random "
                f"init's final {worst:,.1f}")
    return _verdict(all(r["holds"] for r in rows), seeds)


# ---------------------------------------------------------------------------- search, (b) and (c)
def search_claims(path: Path) -> dict[str, Any]:
    """Claims (b) and (c) from search_quality.json: validation perplexity of each arm's winner per
    bin, mean ± std over seeds, at the benchmark's equal evaluation budget."""
    data = json.loads(path.read_text())
    cells: dict[str, dict[str, list[float]]] = {}
    for run in data["runs"]:
        cells.setdefault(run["bin"], {}).setdefault(run["arm"], []).append(run["val_perplexity"])
    rows = []
    for bin_, arms in cells.items():
        rows.append({"bin": bin_, **{arm: arms.get(arm, []) for arm in ("default", "random", "importance", "paper",
                                                                        "one-shot")}})
    def wins(a: str, b: str) -> list[bool]:
        return [statistics.fmean(r[a]) < statistics.fmean(r[b]) for r in rows if r[a] and r[b]]
    b, c = wins("default", "random"), wins("default", "importance")
    return {"setup": data.get("setup", {}), "rows": rows,
            "b": {"bins_won": sum(b), "bins": len(b), "holds": bool(b) and all(b)},
            "c": {"bins_won_by_perplexity": sum(c), "bins": len(c),
                  "winner": "perplexity" if c and sum(c) > len(c) / 2 else "importance" if c else None}}


# ---------------------------------------------------------------------------- report
def report(results: dict[str, Any] | None, search: dict[str, Any] | None, docs: Path) -> str:
    from subnas.demo import plot_comparison

    lines = []
    if results and results.get("runs"):
        claims = training_claims(results)
        teacher = results["teacher_perplexity"]
        setup = results["setup"]
        key = _final_key(results["runs"])
        where = (f"{setup['heldout']} (all of it)" if key == "heldout_perplexity"
                 else f"validation, {setup['eval_seqs']} x {setup['seq_len']} tokens")
        teacher_final = results.get("teacher_heldout_perplexity") if key == "heldout_perplexity" else teacher
        lines += [f"Sub-network: {results.get('parameters', 0):,} parameters; teacher perplexity on {where} "
                  f"{teacher_final:.2f}; {setup['train_tokens']:,} tokens per run; learning rates {setup['lrs']}.", "",
                  f"| run | final perplexity on {where}, mean ± std | per seed |", "|---|---|---|"]
        for name in ("distilled", "cross-entropy", "random init"):
            vals = {r["seed"]: r[key] for r in results["runs"] if r["run"] == name}
            lines.append(f"| {name} | {_stats(list(vals.values()))} | "
                         + ", ".join(f"seed {s}: {v:,.1f}" for s, v in sorted(vals.items())) + " |")
        lines += ["", "| claim | per seed | verdict |", "|---|---|---|"]
        a = claims["a"]
        per_a = "; ".join(f"seed {r['seed']}: random init ends at {r['random_final']:,.0f} after "
                          f"{r['random_tokens']:,} tokens; distilled reaches it after "
                          f"{'never' if r['distilled_tokens_needed'] is None else format(r['distilled_tokens_needed'], ',')}"
                          f" (starts at {r['distilled_start']:.1f})" for r in a["rows"])
        lines.append(f"| (a) supernet init + distillation reaches random init's final perplexity with ≥ 2× fewer "
                     f"tokens | {per_a} | {a['verdict']} |")
        d = claims["d"]
        per_d = "; ".join(f"seed {r['seed']}: {r['distilled']:.1f} vs {r['cross_entropy']:.1f}" for r in d["rows"])
        lines.append(f"| (d) distillation beats cross-entropy at equal tokens | {per_d} | {d['verdict']} |")
        summaries = []
        for seed in sorted({r["seed"] for r in results["runs"]}):
            rows = [r for r in results["runs"] if r["seed"] == seed]
            summaries.append({"runs": rows, "teacher_perplexity": teacher, "parameters": results.get("parameters"),
                              "model": "default"})
        plot = plot_comparison(summaries, docs / "paper_claims_training.png")
        lines += ["", f"plot: {plot}"]
    if search:
        lines += ["", "| bin | default (evolution, perplexity) | random search | importance fitness | paper "
                      "(natural order) | one-shot |", "|---|---|---|---|---|---|"]
        for r in search["rows"]:
            lines.append(f"| {r['bin']} | " + " | ".join(_stats(r[k]) for k in ("default", "random", "importance",
                                                                                 "paper", "one-shot")) + " |")
        b, c = search["b"], search["c"]
        lines += ["", f"(b) evolution beats random search at equal evaluations: {b['bins_won']}/{b['bins']} bins -> "
                      + ("holds" if b["holds"] else "does not hold" if b["bins"] else "no results for both arms"),
                  f"(c) perplexity fitness wins {c['bins_won_by_perplexity']}/{c['bins']} bins against importance "
                  "fitness -> " + (f"{c['winner']} fitness wins" if c["winner"] else "no results for both arms")]
        lines.append(f"plot: {plot_search(search, docs / 'paper_claims_search.png')}")
    return "\n".join(lines)


def plot_search(search: dict[str, Any], path: Path) -> str | None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    arms = [("default", "evolution, perplexity fitness"), ("random", "random search, perplexity fitness"),
            ("importance", "evolution, importance fitness")]
    fig, ax = plt.subplots(figsize=(6.5, 4))
    width = 0.8 / len(arms)
    for i, (arm, label) in enumerate(arms):
        xs, means, errs = [], [], []
        for j, row in enumerate(search["rows"]):
            if row[arm]:
                xs.append(j + (i - 1) * width)
                means.append(statistics.fmean(row[arm]))
                errs.append(statistics.stdev(row[arm]) if len(row[arm]) > 1 else 0.0)
        ax.bar(xs, means, width, yerr=errs, capsize=3, label=label)
    ax.set_xticks(range(len(search["rows"])), [r["bin"] for r in search["rows"]])
    ax.set_yscale("log")
    ax.set_ylabel("validation perplexity of the winner (untrained)")
    ax.set_xlabel("parameter bin")
    ax.set_title("equal evaluations per search (mean ± std over seeds)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return str(path)


def main(argv: list[str] | None = None) -> str:
    args = parse_args(argv)
    out = Path(args.out)
    if args.report:
        path = out / "paper_claims.json"
        results = json.loads(path.read_text()) if path.is_file() else None
    else:
        results = train(args)
    search_path = Path(args.search_results)
    search = search_claims(search_path) if search_path.is_file() else None
    text = report(results, search, Path(args.docs))
    if results is not None:
        results["claims"] = training_claims(results) if results.get("runs") else None
        results["search_claims"] = search
        atomic_write_text(out / "paper_claims.json", json.dumps(results, indent=2) + "\n")
    print(text)
    return text


if __name__ == "__main__":
    main()
