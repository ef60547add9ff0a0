"""Search strategies at equal budgets on the real SmolLM2-135M (DESIGN.md §2, §6): bin-constrained
evolution vs random search (perplexity fitness), and importance-guided vs perplexity-guided
evolution (the importance search's pick is re-scored by perplexity on the same held-out tokens).

    python benchmarks/search_strategies.py                                  # coarse-uniform, 110M-120M
    python benchmarks/search_strategies.py --space coarse-layerwise          # adds a space to the JSON
    python benchmarks/search_strategies.py --methods evolution random --seeds 0 1 2 --trials 32

One `subnas.Supernet` is loaded once and passed to `subnas.search` for every run; every
(method, seed) gets its own out_dir (a temporary folder, journal storage) and study name. All
perplexities are measured on the SAME tokens (validation split, ``--seq-len`` x ``--num-seqs``).
Methods:

* ``evolution``: ``sampler="evolution"``, fitness perplexity, a budget of ``--trials`` trials;
* ``random``: ``sampler="random"`` (Optuna's RandomSampler, proposals repaired into the bin);
* ``random-inbin``: ``sampler="evolution"`` with mutation_prob = crossover_prob = 0, i.e. only the
  sampler's in-bin random samples (``space.sample_in``: rejection, then repair);
* ``importance``: ``sampler="evolution"``, fitness importance (activation scores, calibrated on the
  train split), same budget; its best sub-network is then scored once by perplexity.

Per-run results (best perplexity, per-trial trajectory, wall time) are merged into
``--json`` (keyed by space, so spaces can be run by separate invocations); the markdown table is
printed and the anytime plot ``--plot`` is redrawn from everything in the JSON.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import optuna
import torch
from optuna.trial import TrialState

import subnas
from subnas.bins import ParameterBin
from subnas.evolution import ROLE
from subnas.search import open_storage
from subnas.subnet import SubNetwork

METHODS = ("evolution", "random", "random-inbin", "importance")


def study_trials(out_dir: Path, study_name: str) -> list[dict[str, Any]]:
    """Every trial of a finished search, in order: state, value, duplicate flag, evolution role."""
    study = optuna.load_study(study_name=study_name, storage=open_storage(None, out_dir))
    rows = []
    for t in sorted(study.get_trials(deepcopy=False), key=lambda t: t.number):
        rows.append({"number": t.number, "state": t.state.name, "value": t.value,
                     "duplicate": bool(t.user_attrs.get("duplicate", False)),
                     "repaired": "repaired_from" in t.user_attrs,
                     "parameters": t.user_attrs.get("parameters"), "role": t.system_attrs.get(ROLE),
                     "subnet": t.user_attrs.get("subnet")})
    return rows


def best_so_far(trials: list[dict[str, Any]], minimize: bool = True) -> list[float | None]:
    """Best value after each of ``trials`` (a pruned one changes nothing)."""
    best, out = None, []
    for t in trials:
        v = t["value"] if t["state"] == "COMPLETE" else None
        if v is not None and (best is None or (v < best if minimize else v > best)):
            best = v
        out.append(best)
    return out


def spearman(xs: list[float], ys: list[float]) -> float:
    def ranks(v: list[float]) -> list[float]:
        order = sorted(range(len(v)), key=lambda i: v[i])
        r = [0.0] * len(v)
        i = 0
        while i < len(order):
            j = i
            while j + 1 < len(order) and v[order[j + 1]] == v[order[i]]:
                j += 1
            for k in range(i, j + 1):
                r[order[k]] = (i + j) / 2
            i = j + 1
        return r

    rx, ry = ranks(xs), ranks(ys)
    mx, my = statistics.fmean(rx), statistics.fmean(ry)
    cov = sum((a - mx) * (b - my) for a, b in zip(rx, ry))
    return cov / math.sqrt(sum((a - mx) ** 2 for a in rx) * sum((b - my) ** 2 for b in ry))


def run_one(sn: Any, method: str, seed: int, args: argparse.Namespace, ppl: Any, tmp: Path) -> dict[str, Any]:
    out_dir = tmp / f"{args.space}-{method}-s{seed}"
    study_name = f"bench-{args.space}-{method}-s{seed}"
    evo_options = dict(population_size=args.population, num_elites=args.elites, num_offspring=args.offspring,
                       num_random=args.random, mutation_prob=args.mutation_prob, crossover_prob=args.crossover_prob)
    common = dict(space=args.space, bins=[args.bin], trials=args.trials, out_dir=str(out_dir), seed=seed,
                  study_name=study_name, progress=False)
    if method == "evolution":
        kw = dict(fitness="perplexity", data=args.data, seq_len=args.seq_len, num_seqs=args.num_seqs,
                  sampler="evolution", sampler_options=evo_options)
    elif method == "random":
        kw = dict(fitness="perplexity", data=args.data, seq_len=args.seq_len, num_seqs=args.num_seqs,
                  sampler="random")
    elif method == "random-inbin":  # the evolution sampler with m = c = 0: only its in-bin random samples
        kw = dict(fitness="perplexity", data=args.data, seq_len=args.seq_len, num_seqs=args.num_seqs,
                  sampler="evolution", sampler_options={**evo_options, "mutation_prob": 0.0, "crossover_prob": 0.0})
    elif method == "importance":
        kw = dict(fitness="importance", fitness_options={"method": "activation"}, sampler="evolution",
                  sampler_options=evo_options)
    else:
        raise ValueError(method)
    load0 = os.getloadavg()[0]
    t0 = time.perf_counter()
    # Equal numbers of *evaluations*: a trial whose candidate the study already evaluated reuses the
    # stored value (no fitness call) and a pruned trial makes none, yet both use up a trial; so
    # resume the same study with more trials until it has made --trials fitness calls.
    budget, calls = args.trials, 0
    while True:
        res = subnas.search(sn, **{**common, "trials": budget}, **kw)
        calls += 1
        entry = res["bins"][0]
        trials = study_trials(out_dir, entry["study"])
        evaluations = sum(t["state"] == "COMPLETE" and not t["duplicate"] for t in trials)
        if evaluations >= args.trials or budget >= 4 * args.trials:
            break
        budget += args.trials - evaluations
    wall = time.perf_counter() - t0
    complete = [t for t in trials if t["state"] == "COMPLETE"]
    row: dict[str, Any] = {
        "space": args.space, "method": method, "seed": seed, "bin": entry["bin"], "wall_s": wall,
        "loadavg_1min_start": load0, "loadavg_1min_end": os.getloadavg()[0],
        "search_calls": calls, "trials": len(trials), "complete": len(complete), "pruned": sum(t["state"] == "PRUNED" for t in trials),
        "duplicates": sum(t["duplicate"] for t in complete),
        "evaluations": sum(not t["duplicate"] for t in complete),  # fitness calls actually made
        "repaired": sum(t["repaired"] for t in complete),
        "best_fitness": entry.get("best_fitness"), "best_parameters": entry.get("best_parameters"),
        "best_subnet": entry.get("best_subnet"), "best_trial": entry.get("best_trial"),
        "fitness_direction": entry["direction"], "trial_values": [t["value"] for t in trials],
        "trial_states": [t["state"] for t in trials], "trial_roles": [t["role"] for t in trials],
        "trial_parameters": [t["parameters"] for t in trials],
    }
    subnet = SubNetwork.from_dict(entry["best_subnet"])
    if method == "importance":
        t1 = time.perf_counter()
        row["best_perplexity"] = float(ppl(subnet))
        row["rescore_s"] = time.perf_counter() - t1
        row["best_importance"] = entry.get("best_fitness")
    else:
        row["best_perplexity"] = entry.get("best_fitness")
        row["best_so_far"] = best_so_far([t for t in trials if t["state"] == "COMPLETE" and not t["duplicate"]])
        if method == "evolution" and seed == args.seeds[0]:
            # Sanity check: the benchmark's own fitness object sees the same tokens as the search's.
            row["rescored_best_perplexity"] = float(ppl(subnet))
        if method in ("evolution", "random-inbin"):
            roles = [t["role"] for t in complete]
            row["roles"] = {r: roles.count(r) for r in sorted(set(filter(None, roles)))}
            row["best_role"] = trials[entry["best_trial"]]["role"]
        row["candidates"] = [{"subnet": t["subnet"], "perplexity": t["value"]} for t in complete if not t["duplicate"]]
    return row


def fmt(x: float) -> str:
    return f"{x:,.0f}" if x >= 1000 else f"{x:.1f}"


def summarize(rows: list[dict[str, Any]]) -> str:
    """A markdown table: per (space, method) the best perplexity over seeds and the wall time."""
    lines = ["| space | method (fitness) | seeds | evals/run | trials/run (dupl.) | best PPL mean ± std | "
             "geo-mean PPL | best PPL per seed | search wall s/run |",
             "|---|---|---|---|---|---|---|---|---|"]
    label = {"evolution": "evolution (perplexity)", "random": "random sampler + repair (perplexity)",
             "random-inbin": "in-bin random, evolution m=c=0 (perplexity)",
             "importance": "evolution (importance → PPL)"}
    for space in dict.fromkeys(r["space"] for r in rows):
        for method in METHODS:
            rs = sorted((r for r in rows if r["space"] == space and r["method"] == method), key=lambda r: r["seed"])
            if not rs:
                continue
            ppls = [r["best_perplexity"] for r in rs]
            sd = statistics.stdev(ppls) if len(ppls) > 1 else 0.0
            geo = math.exp(statistics.fmean(math.log(p) for p in ppls))
            evals = sorted({r["evaluations"] for r in rs})
            trials = ", ".join(f"{r['trials']} ({r['duplicates']})" for r in rs)
            wall = statistics.fmean(r["wall_s"] for r in rs)
            per_seed = ", ".join(f"s{r['seed']}: {fmt(p)}" for r, p in zip(rs, ppls))
            lines.append(f"| {space} | {label[method]} | {len(rs)} | {'/'.join(map(str, evals))} | {trials} | {fmt(statistics.fmean(ppls))} ± {fmt(sd)} | {fmt(geo)} | "
                         f"{per_seed} | {wall:.1f} |")
    return "\n".join(lines)


def plot(rows: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    spaces = list(dict.fromkeys(r["space"] for r in rows))
    fig, axes = plt.subplots(1, len(spaces), figsize=(6 * len(spaces), 4.2), squeeze=False)
    colors = {"evolution": "C0", "random": "C1", "random-inbin": "C3", "importance": "C2"}
    for ax, space in zip(axes[0], spaces):
        for method in ("evolution", "random", "random-inbin"):
            rs = [r for r in rows if r["space"] == space and r["method"] == method]
            if not rs:
                continue
            n = min(len(r["best_so_far"]) for r in rs)
            xs, ys = [], []
            for i in range(n):
                vals = [r["best_so_far"][i] for r in rs]
                if all(v is not None for v in vals):
                    xs.append(i + 1)
                    ys.append(math.exp(statistics.fmean(math.log(v) for v in vals)))
            name = {"evolution": "evolution", "random": "random sampler + repair",
                    "random-inbin": "in-bin random (evolution, m=c=0)"}[method]
            ax.plot(xs, ys, color=colors[method], label=f"{name}, perplexity fitness: geo-mean of {len(rs)} seeds")
            for r in rs:
                ax.plot(range(1, n + 1), r["best_so_far"][:n], color=colors[method], alpha=0.2, lw=0.8)
        rs = [r for r in rows if r["space"] == space and r["method"] == "importance"]
        if rs:
            x = rs[0]["evaluations"]
            ax.scatter([x] * len(rs), [r["best_perplexity"] for r in rs], color=colors["importance"], marker="x",
                       label="importance-guided evolution: PPL of its pick (per seed)", zorder=3)
        ax.set_yscale("log")
        ax.set_xlabel("evaluations (fitness calls)")
        ax.set_ylabel("best perplexity so far (validation, same tokens)")
        b = rows[0]["bin"]
        ax.set_title(f"SmolLM2-135M, {space}, bin {b[0] / 1e6:.0f}M-{b[1] / 1e6:.0f}M")
        ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="default")
    p.add_argument("--space", default="coarse-uniform")
    p.add_argument("--bin", default="110M-120M")
    p.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2, 3])
    p.add_argument("--trials", type=int, default=32, help="trials per run (the budget)")
    p.add_argument("--data", default="default:validation")
    p.add_argument("--seq-len", type=int, default=128)
    p.add_argument("--num-seqs", type=int, default=4)
    p.add_argument("--population", type=int, default=8)
    p.add_argument("--elites", type=int, default=3)
    p.add_argument("--offspring", type=int, default=8)
    p.add_argument("--random", type=int, default=2)
    p.add_argument("--mutation-prob", type=float, default=0.2)
    p.add_argument("--crossover-prob", type=float, default=0.2)
    p.add_argument("--calibration-timing", action="store_true",
                   help="also time one uncached activation-importance calibration pass (a temporary cache)")
    p.add_argument("--json", type=Path, default=Path("docs/benchmarks/search_results.json"))
    p.add_argument("--plot", type=Path, default=Path("docs/benchmarks/search_anytime.png"))
    p.add_argument("--report", action="store_true", help="only print the table and redraw the plot from --json")
    args = p.parse_args()
    if args.report:
        runs = json.loads(args.json.read_text())["runs"]
        plot(runs, args.plot)
        print(summarize(runs))
        return
    ParameterBin.parse(args.bin)
    start = time.perf_counter()

    t0 = time.perf_counter()
    sn = subnas.Supernet.from_pretrained(args.model)
    print(f"loaded {args.model} in {time.perf_counter() - t0:.1f} s; torch threads {torch.get_num_threads()}", flush=True)
    ppl = subnas.get_fitness("perplexity", supernet=sn, data=args.data, seq_len=args.seq_len, num_seqs=args.num_seqs)
    t0 = time.perf_counter()
    full_ppl = float(ppl(SubNetwork()))
    print(f"full model: perplexity {full_ppl:.2f} on {tuple(ppl.tokens.shape)} tokens "
          f"({time.perf_counter() - t0:.2f} s)", flush=True)

    data = json.loads(args.json.read_text()) if args.json.is_file() else {}
    data.setdefault("runs", [])
    data["machine"] = {"platform": platform.platform(), "processor": platform.processor(), "cpus": os.cpu_count(),
                       "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
                       "optuna": optuna.__version__}
    data["setup"] = {"model": args.model, "bin": args.bin, "data": args.data, "seq_len": args.seq_len,
                     "num_seqs": args.num_seqs, "full_model_perplexity": full_ppl,
                     "full_model_parameters": subnas.get_search_space(args.space, sn.subnas_config).bounds()[1]}

    if args.calibration_timing:
        from subnas.importance import cached_scores
        from subnas_plugins.fitness import _tokens

        previous = sn.active
        with tempfile.TemporaryDirectory() as cache:
            t0 = time.perf_counter()  # the ImportanceFitness defaults: 16 x 256 train tokens
            cached_scores(sn.model, "activation", tokens=_tokens(sn, "default:train", 256, 16), source=str(sn.source),
                          cache_dir=Path(cache))
            data["importance_calibration_s"] = time.perf_counter() - t0
        sn.set_sub_network(previous)
        print(f"activation-importance calibration (uncached): {data['importance_calibration_s']:.1f} s", flush=True)

    imp = subnas.get_fitness("importance", supernet=sn, method="activation")
    data["runs"] = [r for r in data["runs"] if r["space"] != args.space or r["method"] not in args.methods
                    or r["seed"] not in args.seeds]
    with tempfile.TemporaryDirectory(prefix="subnas-bench-") as tmp:
        for seed in args.seeds:
            for method in args.methods:
                row = run_one(sn, method, seed, args, ppl, Path(tmp))
                if "candidates" in row:  # how well importance ranks what perplexity measured
                    cands = row.pop("candidates")
                    if len(cands) > 2:
                        row["spearman_importance_vs_perplexity"] = spearman(
                            [imp(SubNetwork.from_dict(c["subnet"])) for c in cands], [-c["perplexity"] for c in cands])
                data["runs"].append(row)
                extra = f" (importance {row['best_importance']:.4f})" if method == "importance" else ""
                print(f"{args.space} {method:10s} seed {seed}: best PPL {row['best_perplexity']:.1f}{extra} "
                      f"at {row['best_parameters']:,} params; {row['evaluations']} evals, {row['pruned']} pruned, "
                      f"{row['duplicates']} duplicates; {row['wall_s']:.1f} s "
                      f"(load {row['loadavg_1min_start']:.1f})", flush=True)
                args.json.parent.mkdir(parents=True, exist_ok=True)
                args.json.write_text(json.dumps(data, indent=1) + "\n")
    data.setdefault("invocations", []).append({"args": {k: str(v) if isinstance(v, Path) else v
                                                        for k, v in vars(args).items()},
                                               "wall_s": time.perf_counter() - start})
    args.json.write_text(json.dumps(data, indent=1) + "\n")
    plot(data["runs"], args.plot)
    print()
    print(summarize(data["runs"]))
    print(f"\ntotal wall time ({args.space}): {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
