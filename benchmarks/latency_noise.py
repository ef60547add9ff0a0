"""How reproducible is a measured CPU latency? The same sub-networks timed again and again.

    python benchmarks/latency_noise.py --json docs/benchmarks/latency_noise.json   # ~10 min on 2 cores
    python benchmarks/latency_noise.py --report --json docs/benchmarks/latency_noise.json

A latency objective or a latency bin trusts one measurement per architecture (the median of 7
timed prefills after 2 warm-up runs, cached). This script measures how far a second measurement
of the same architecture can land from the first on this machine: the architectures are the
importance-order one-shot grid of SmolLM2-135M across its whole size range (the seeds of every
multi-objective search) and the full model; each is measured ``--rounds`` times with the cache
off, round-robin in a shuffled order per round, so slow drift and short bursts of interference
reach every architecture alike. Reported per architecture: the median over rounds of the
measurement's median (``ms``) and of its fastest run (``min_ms``), each one's spread across
rounds (largest over smallest, minus one), the same for the latency relative to the full model
timed in the same round, and the analytic forward FLOPs per token (`subnas.metrics.flops_per_token`)
with the throughput they imply, to tell whether FLOPs predict latency well enough to search on.

Measurement as `subnas search --objectives perplexity,latency` takes it: batch 1 x ``--seq-len``
tokens, float32, ``--threads`` torch threads, stock ``transformers`` class where one expresses the
sub-network. Run it on an otherwise idle machine; the JSON is rewritten after every round.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import time
from pathlib import Path
from typing import Any

import subnas
from subnas._io import atomic_write_text
from subnas.metrics import flops_per_token, measure_latency
from subnas.samplers._mo_evolution import one_shot_grid
from subnas.search_driver import make_space


def spread(values: list[float]) -> float:
    """Largest over smallest, minus one: 0.10 means the slowest measurement was 10% above the fastest."""
    return max(values) / min(values) - 1.0


def architectures(supernet: subnas.Supernet, seq_len: int) -> list[dict[str, Any]]:
    """The full model and the one-shot grid, each with its name, parameters and FLOPs per token."""
    space = make_space("coarse-uniform", supernet, order="importance", calibration="default:calibration", choices={})
    grid = []
    for subnet in [subnas.SubNetwork(), *one_shot_grid(space)]:
        n = subnas.count_parameters(supernet, subnet)
        grid.append({"name": "full model" if not subnet.to_dict() else f"{n / 1e6:.1f}M", "subnet": subnet,
                     "parameters": n, "flops_per_token": flops_per_token(supernet, subnet, seq_len=seq_len)})
    return grid


def summarise(data: dict[str, Any]) -> dict[str, Any]:
    rounds = data["rounds"]
    full = {r["round"]: r for r in rounds if r["name"] == "full model"}
    rows = []
    for name in data["names"]:
        mine = [r for r in rounds if r["name"] == name]
        if not mine:
            continue
        ms = [r["ms"] for r in mine]
        mins = [r["min_ms"] for r in mine]
        rel = [r["ms"] / full[r["round"]]["ms"] for r in mine if r["round"] in full]
        flops = mine[0]["flops_per_token"]
        rows.append({"name": name, "parameters": mine[0]["parameters"], "model_class": mine[0]["model_class"],
                     "flops_per_token": flops, "measurements": len(mine),
                     "ms": statistics.median(ms), "ms_spread": spread(ms),
                     "min_ms": statistics.median(mins), "min_ms_spread": spread(mins),
                     "relative_to_full_spread": spread(rel) if len(rel) > 1 else 0.0,
                     "within_measurement_iqr": statistics.median(r["iqr_ms"] / r["ms"] for r in mine),
                     "gflops_per_s": flops * data["setup"]["seq_len"] / (statistics.median(mins) / 1000) / 1e9})
    return {"rows": rows,
            "median_ms_spread": statistics.median(r["ms_spread"] for r in rows) if rows else None,
            "median_min_ms_spread": statistics.median(r["min_ms_spread"] for r in rows) if rows else None,
            "median_relative_spread": statistics.median(r["relative_to_full_spread"] for r in rows) if rows else None}


def report(data: dict[str, Any]) -> None:
    s = data["summary"]
    print(f"{data['setup']['rounds_done']} rounds; spread across rounds, median over architectures: "
          f"median-of-repeats {s['median_ms_spread']:.1%}, fastest run {s['median_min_ms_spread']:.1%}, "
          f"relative to the full model in the same round {s['median_relative_spread']:.1%}")
    print("| sub-network | parameters | class | FLOPs/token | ms (median) | spread | fastest run ms | spread | "
          "relative to full, spread | within one measurement (IQR) | GFLOP/s |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in s["rows"]:
        print(f"| {r['name']} | {r['parameters']:,} | {r['model_class']} | {r['flops_per_token'] / 1e6:.0f}M | "
              f"{r['ms']:.0f} | {r['ms_spread']:.1%} | {r['min_ms']:.0f} | {r['min_ms_spread']:.1%} | "
              f"{r['relative_to_full_spread']:.1%} | {r['within_measurement_iqr']:.1%} | {r['gflops_per_s']:.0f} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--seq-len", type=int, default=256)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0, help="shuffles the order within each round")
    ap.add_argument("--json", default="docs/benchmarks/latency_noise.json")
    ap.add_argument("--report", action="store_true", help="print the table from --json only")
    args = ap.parse_args()
    path = Path(args.json)
    if args.report:
        report(json.loads(path.read_text()))
        return
    if args.rounds < 2:
        ap.error("--rounds must be at least 2: a spread needs two measurements")
    supernet = subnas.Supernet.from_pretrained("default")
    grid = architectures(supernet, args.seq_len)
    setup = {"model": "default (SmolLM2-135M)", "architectures": "full model + coarse-uniform importance-order "
             "one-shot grid (6 strata x 2)", "seq_len": args.seq_len, "batch": 1, "dtype": "float32",
             "threads": args.threads, "warmup": 2, "repeats": 7, "rounds": args.rounds, "seed": args.seed}
    data: dict[str, Any] = {"setup": setup, "names": [a["name"] for a in grid], "rounds": []}
    rng = random.Random(args.seed)
    start = time.time()
    for round_ in range(args.rounds):
        order = list(grid)
        rng.shuffle(order)
        for a in order:
            r = measure_latency(supernet, a["subnet"], seq_len=args.seq_len, threads=args.threads, cache=False)
            data["rounds"].append({"round": round_, "name": a["name"], "ms": r.ms, "min_ms": r.min_ms,
                                   "max_ms": r.max_ms, "iqr_ms": r.iqr_ms, "model_class": r.model_class,
                                   "parameters": a["parameters"], "flops_per_token": a["flops_per_token"],
                                   "at_s": round(time.time() - start, 1)})
        data["setup"]["rounds_done"] = round_ + 1
        data["summary"] = summarise(data)
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, json.dumps(data, indent=1) + "\n")
        print(f"round {round_ + 1}/{args.rounds} done at {time.time() - start:.0f} s", flush=True)
    report(data)


if __name__ == "__main__":
    main()
