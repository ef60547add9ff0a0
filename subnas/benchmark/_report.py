"""The outputs of `subnas.benchmark.benchmark_samplers`: trial log, final table, anytime curves.

Definitions (also written into ``summary.md``):

* *best* of a run: the best fitness among its evaluated trials at the end of its budget;
* *average rank*: methods ranked by best within each (seed, bin), 1 = best, ties share the mean
  rank; averaged over every (seed, bin);
* *normalised regret* of a run: (best_run - best_overall) / (worst_overall - best_overall), where
  best/worst_overall are the best and worst *final bests* of all runs (every method and seed) in
  that bin, signs flipped for maximised fitness; 0 = the best anyone found, 1 = the worst final
  result; a run that found nothing feasible scores 1. Averaged over (seed, bin).
* *anytime curves*: best-so-far per trial (and on a wall-time grid), mean ± standard error over
  seeds, drawn from the point where every seed has a value; for positive fitness spanning more
  than a decade (perplexities) the mean and band are geometric and the axis logarithmic.

Example:
    >>> log = [{"method": m, "seed": 0, "bin": "b", "trial": 0, "wall_time": 0.1, "fitness": v,
    ...         "best_fitness": v, "feasible": True, "duplicate": False, "lookup": None}
    ...        for m, v in (("evolution", 1.0), ("random", 3.0))]
    >>> [(r["method"], r["avg_rank"], r["norm_regret"]) for r in final_table(log, ["evolution", "random"], "minimize")]
    [('evolution', 1.0, 0.0), ('random', 2.0, 1.0)]
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from subnas._io import atomic_write_text

LOG_COLUMNS = ("method", "seed", "bin", "bin_lo", "bin_hi", "trial", "wall_time", "fitness", "best_fitness",
               "parameters", "feasible", "duplicate", "repaired", "lookup", "lookup_distance", "subnet")
RunKey = tuple[str, int, str]
DEFINITIONS = (
    "Best: the best fitness of a run at the end of its budget. Average rank: within each (seed, bin), 1 = best. "
    "Normalised regret: (best_run - best_overall) / (worst_overall - best_overall) per bin over the final bests "
    "of every run, averaged. Fitness calls: trials that evaluated the fitness (not duplicates, not infeasible). "
    "Repaired/infeasible/duplicates: share of trials whose proposal lay outside the bin and was moved into it / "
    "could not be / had been evaluated before. Exact lookups: share of replayed evaluations found in the table "
    "(the rest got the nearest recorded neighbour's fitness).")


def write_trial_log(log: Sequence[dict[str, Any]], out: Path) -> None:
    """``trials.json`` and ``trials.csv`` (the sub-network as a JSON string), atomically."""
    atomic_write_text(out / "trials.json", json.dumps(list(log), indent=1) + "\n")
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=LOG_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for row in log:
        writer.writerow({**row, "subnet": json.dumps(row.get("subnet"), separators=(",", ":"))})
    atomic_write_text(out / "trials.csv", buf.getvalue())


def runs_of(log: Sequence[dict[str, Any]]) -> dict[RunKey, list[dict[str, Any]]]:
    """Trial rows grouped by (method, seed, bin), in log order."""
    runs: dict[RunKey, list[dict[str, Any]]] = {}
    for row in log:
        runs.setdefault((row["method"], row["seed"], row["bin"]), []).append(row)
    return runs


def _final(rows: list[dict[str, Any]]) -> float | None:
    return rows[-1]["best_fitness"] if rows else None


def _ranks(values: list[float]) -> list[float]:
    """1-based ranks, lower value first, ties share their mean rank."""
    order = sorted(range(len(values)), key=lambda i: values[i])
    ranks = [0.0] * len(values)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        for k in range(i, j + 1):
            ranks[order[k]] = (i + j) / 2 + 1
        i = j + 1
    return ranks


def final_table(log: Sequence[dict[str, Any]], methods: Sequence[str], direction: str) -> list[dict[str, Any]]:
    """Per method: best per bin (mean, std over seeds), average rank, mean normalised regret, and
    what the runs spent (fitness calls, infeasible and duplicate proposals, exact replay lookups)."""
    sign = 1.0 if direction == "minimize" else -1.0
    runs = runs_of(log)
    seeds = sorted({s for _, s, _ in runs})
    bins = list(dict.fromkeys(b for _, _, b in runs))
    final = {k: _final(v) for k, v in runs.items()}
    # Missing or nothing feasible: worse than anything found.
    signed = {k: sign * v if v is not None and math.isfinite(v) else math.inf for k, v in final.items()}
    rank: dict[RunKey, float] = {}
    regret: dict[RunKey, float] = {}
    for b in bins:
        for s in seeds:
            keys = [(m, s, b) for m in methods if (m, s, b) in runs]
            for k, r in zip(keys, _ranks([signed[k] for k in keys])):
                rank[k] = r
        finite = [signed[k] for k in runs if k[2] == b and math.isfinite(signed[k])]
        lo, hi = (min(finite), max(finite)) if finite else (0.0, 0.0)
        for k in (k for k in runs if k[2] == b):
            regret[k] = 1.0 if not math.isfinite(signed[k]) else ((signed[k] - lo) / (hi - lo) if hi > lo else 0.0)
    table = []
    for m in methods:
        mine = [k for k in runs if k[0] == m]
        rows = [r for k in mine for r in runs[k]]
        best = {}
        for b in bins:
            vals = [v for k in mine if k[2] == b and (v := final[k]) is not None and math.isfinite(v)]
            best[b] = {"mean": float(np.mean(vals)) if vals else None,
                       "std": float(np.std(vals, ddof=1)) if len(vals) > 1 else 0.0, "n": len(vals)}
        calls = [r for r in rows if r["fitness"] is not None and not r["duplicate"]]
        looked = [r for r in calls if r.get("lookup") is not None]
        table.append({
            "method": m, "best": best,
            "avg_rank": float(np.mean([rank[k] for k in mine])) if mine else None,
            "norm_regret": float(np.mean([regret[k] for k in mine])) if mine else None,
            "runs": len(mine), "trials_per_run": len(rows) / max(len(mine), 1),
            "fitness_calls_per_run": len(calls) / max(len(mine), 1),
            "infeasible": sum(not r["feasible"] for r in rows) / max(len(rows), 1),
            "duplicates": sum(bool(r["duplicate"]) for r in rows) / max(len(rows), 1),
            "repaired": sum(bool(r.get("repaired")) for r in rows) / max(len(rows), 1),
            "exact_lookups": (sum(r["lookup"] == "exact" for r in looked) / len(looked)) if looked else None,
            "wall_time_per_run": float(np.mean([runs[k][-1]["wall_time"] for k in mine])) if mine else None,
        })
    return table


# ---------------------------------------------------------------------------- anytime curves
def _mean_se(matrix: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and standard error over seeds (rows); NaN until every seed has a value, since a mean
    over the seeds that happen to be done already jumps when a slow one arrives."""
    n = matrix.shape[0]
    complete = ~np.isnan(matrix).any(axis=0)
    filled = np.where(complete, matrix, 0.0)
    mean = np.where(complete, filled.mean(axis=0), np.nan)
    se = filled.std(axis=0, ddof=1) / np.sqrt(n) if n > 1 else np.zeros(matrix.shape[1])
    return mean, np.where(complete, se, np.nan)


def _best_values(rows: list[dict[str, Any]]) -> np.ndarray:
    return np.array([np.nan if r["best_fitness"] is None else r["best_fitness"] for r in rows], dtype=float)


def spans_decades(log: Sequence[dict[str, Any]]) -> bool:
    """Whether the best values are positive and span more than a factor 10 (e.g. perplexities of
    untrained sub-networks): then curves are averaged and drawn on a log scale."""
    values = [r["best_fitness"] for r in log if r["best_fitness"] is not None and math.isfinite(r["best_fitness"])]
    return bool(values) and min(values) > 0 and max(values) / min(values) > 10


def curves(log: Sequence[dict[str, Any]], methods: Sequence[str], x: str, points: int = 200,
           geometric: bool = False) -> dict[str, dict[str, tuple[np.ndarray, ...]]]:
    """Per bin, per method: (x values, mean best-so-far, lower and upper band) over seeds.

    ``x="evaluations"``: after each trial; ``x="time"``: on a grid of wall times (a run's best holds
    after it ends). The band is mean ± standard error; with ``geometric`` both are taken of the
    log values (one seed at 1e8 must not hide four at 1e4).
    """
    runs = runs_of(log)
    out: dict[str, dict[str, tuple[np.ndarray, ...]]] = {}
    for b in dict.fromkeys(k[2] for k in runs):
        out[b] = {}
        tmax = max(r[-1]["wall_time"] for k, r in runs.items() if k[2] == b)
        grid = np.linspace(0.0, tmax, points)
        for m in methods:
            mine = [r for k, r in runs.items() if k[0] == m and k[2] == b]
            if not mine:
                continue
            if x == "evaluations":
                length = max(len(r) for r in mine)
                mat = np.full((len(mine), length), np.nan)
                for i, r in enumerate(mine):
                    mat[i, : len(r)] = _best_values(r)
                xs = np.arange(1, length + 1, dtype=float)
            else:
                mat = np.full((len(mine), points), np.nan)
                for i, r in enumerate(mine):
                    idx = np.searchsorted(np.array([row["wall_time"] for row in r]), grid, side="right") - 1
                    vals = _best_values(r)
                    mat[i] = np.where(idx >= 0, vals[np.maximum(idx, 0)], np.nan)
                xs = grid
            mean, se = _mean_se(np.log(mat) if geometric else mat)
            band = (mean - se, mean + se)
            out[b][m] = (xs, *((np.exp(mean), np.exp(band[0]), np.exp(band[1])) if geometric else (mean, *band)))
    return out


def plot_curves(log: Sequence[dict[str, Any]], methods: Sequence[str], x: str, path: Path, direction: str) -> bool:
    """One panel per bin, mean ± standard error band per method; False when matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:  # plotting is optional: pip install matplotlib
        return False
    geometric = spans_decades(log)
    data = curves(log, methods, x, geometric=geometric)
    fig, axes = plt.subplots(1, len(data), figsize=(5 * len(data), 3.8), squeeze=False)
    for ax, (b, per_method) in zip(axes[0], data.items()):
        for m, (xs, mean, low, high) in per_method.items():
            line, = ax.plot(xs, mean, label=m, drawstyle="steps-post" if x == "evaluations" else "default")
            ax.fill_between(xs, low, high, color=line.get_color(), alpha=0.2, linewidth=0,
                            step="post" if x == "evaluations" else None)
        if geometric:
            ax.set_yscale("log")
        ax.set_title(f"bin {b}")
        ax.set_xlabel("evaluations (trials)" if x == "evaluations" else "wall time [s]")
        ax.set_ylabel(f"best so far, {'geometric ' if geometric else ''}mean ± SE "
                      f"({'lower' if direction == 'minimize' else 'higher'} is better)", fontsize=8)
        ax.grid(alpha=0.3)
    axes[0][0].legend()
    fig.tight_layout()
    tmp = path.with_name(f".{path.stem}.tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    os.replace(tmp, path)
    return True


# ---------------------------------------------------------------------------- report
def _fmt(v: float | None, digits: int = 4) -> str:
    return "–" if v is None else f"{v:.{digits}g}"


def markdown_table(table: Sequence[dict[str, Any]]) -> str:
    bins = list(table[0]["best"]) if table else []
    head = ["method", *[f"best in {b} (mean ± std)" for b in bins], "avg rank", "norm. regret",
            "fitness calls/run", "repaired", "infeasible", "duplicates", "exact lookups"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in table:
        cells = [r["method"], *[f"{_fmt(r['best'][b]['mean'])} ± {_fmt(r['best'][b]['std'], 3)}" for b in bins],
                 _fmt(r["avg_rank"], 3), _fmt(r["norm_regret"], 3), f"{r['fitness_calls_per_run']:.1f}",
                 f"{100 * r['repaired']:.0f}%", f"{100 * r['infeasible']:.0f}%", f"{100 * r['duplicates']:.0f}%",
                 "–" if r["exact_lookups"] is None else f"{100 * r['exact_lookups']:.0f}%"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_report(log: Sequence[dict[str, Any]], setup: dict[str, Any], out: Path) -> dict[str, Any]:
    """Write the trial log, plots, ``summary.md`` and ``summary.json``; return the summary."""
    write_trial_log(log, out)
    methods, direction = setup["methods"], setup["direction"]
    table = final_table(log, methods, direction)
    files = {"trials_csv": str(out / "trials.csv"), "trials_json": str(out / "trials.json"),
             "summary_md": str(out / "summary.md"), "summary_json": str(out / "summary.json")}
    for x in ("evaluations", "time"):
        if log and plot_curves(log, methods, x, out / f"curves_{x}.png", direction):
            files[f"curves_{x}"] = str(out / f"curves_{x}.png")
    summary = {**setup, "table": table, "files": files}
    budget = " and ".join(s for s in (f"{setup.get('budget_evals')} trials" if setup.get("budget_evals") else "",
                                      f"{setup.get('budget_seconds')} s" if setup.get("budget_seconds") else "") if s)
    md = [f"# Sampler benchmark: {setup.get('space')}, fitness {setup.get('fitness')} ({direction})", "",
          f"Seeds {setup.get('seeds')}, budget {budget} per (method, seed, bin).", "", markdown_table(table), "",
          DEFINITIONS, ""]
    md += [f"![{x}]({Path(files[f'curves_{x}']).name})" for x in ("evaluations", "time") if f"curves_{x}" in files]
    atomic_write_text(out / "summary.md", "\n".join(md) + "\n")
    atomic_write_text(out / "summary.json", json.dumps(summary, indent=2, default=str) + "\n")
    return summary
