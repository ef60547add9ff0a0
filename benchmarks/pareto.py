"""Which sampler finds the best perplexity × parameters front? Real SmolLM2-135M, held-out validation.

    python benchmarks/pareto.py                                   # the committed run (see docs/benchmarks/pareto.md)
    python benchmarks/pareto.py --trials 100 --seeds 0 1 2        # the issue's full protocol (hours on 2 cores)
    python benchmarks/pareto.py --report                          # table + plot from the JSON only
    python benchmarks/pareto.py --cost latency --arms mo-evolution nsga2 tpe random one-shot \
        --json docs/benchmarks/pareto_latency.json                # perplexity x measured CPU prefill latency

Arms, per seed, each with ``--trials`` perplexity evaluations at most:

* ``mo-evolution``: ``subnas search --objectives perplexity,params`` as it runs by default
  (`subnas.samplers.ParetoEvolutionSampler`, seeded with the importance-order one-shot grid);
* ``nsga2``, ``tpe``, ``random``: the same study driven by Optuna's NSGAIISampler (population
  ``--trials / 3``: its default of 50 would make a 30-evaluation run pure random sampling),
  TPESampler (multi-objective) and RandomSampler over the same importance-ordered space;
* ``bins``: three separate single-objective bin searches (55M-65M, 85M-100M, 110M-120M), the
  default ``evolution`` sampler, ``--trials / 3`` evaluations each;
* ``one-shot``: the importance-order one-shot grid across the whole size range (the seeds of
  ``mo-evolution``), every point evaluated; deterministic.

``--cost latency`` replaces parameters by measured prefill latency (``subnas search --objectives
perplexity,latency``: batch 1 x ``--seq-len`` tokens, float32, one thread, median of 7 runs after 2
warm-up runs, cached per architecture); run it on an otherwise idle machine, since every latency
is measured once. The ``bins`` arm bounds parameters and is not run with it.

Selection uses the corpus's *search* split (``--seq-len`` x ``--num-seqs``); every reported
perplexity is on the *validation* split (``--val-seqs`` sequences), which no arm saw. Hypervolume:
objectives normalised as ln(perplexity) and parameters / the full model's, reference point
(ln 10,000, 1.0) (`subnas.pareto.reference_point`); computed on the search split (what each arm
optimised) and on validation (every front point re-measured, the front recomputed). One evaluation
cache is shared by the arms (the fitness is deterministic, so sharing changes no result, only the
wall time). Results are merged into ``--json`` after every arm (rerunning resumes).
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import torch  # noqa: E402

import subnas  # noqa: E402
from subnas._io import atomic_write_text  # noqa: E402
from subnas.metrics import measure_latency  # noqa: E402
from subnas.pareto import REFERENCE_FITNESS, hypervolume  # noqa: E402
from subnas.samplers._mo_evolution import non_dominated_ranks, one_shot_grid  # noqa: E402
from subnas.search_driver import make_space, open_storage  # noqa: E402
from subnas_plugins.fitness import PerplexityFitness  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
BINS = ("55M-65M", "85M-100M", "110M-120M")
MO_ARMS = ("mo-evolution", "nsga2", "tpe", "random")
ARMS = MO_ARMS + ("bins", "one-shot")


def memoise_perplexity(path: Path) -> dict[str, float]:
    """Share evaluations between arms (and reruns): PerplexityFitness reads a cache keyed by the
    data, sequence shape and candidate; the scores are what it would compute."""
    cache: dict[str, float] = json.loads(path.read_text()) if path.exists() else {}
    original = PerplexityFitness._running

    def running(self: PerplexityFitness, subnet: Any, *, confirm: bool) -> Any:
        key = (f"{self.data}|{self.seq_len}|{self.num_seqs}|{confirm}|"
               f"{subnet.key(self.supernet.subnas_config)}")
        if key not in cache:
            value = math.nan
            for used, value in original(self, subnet, confirm=confirm):
                pass
            cache[key] = value
            atomic_write_text(path, json.dumps(cache) + "\n")
        if not confirm:
            self.last_metrics = {"perplexity": cache[key]}
        yield 1, cache[key]

    PerplexityFitness._running = running  # type: ignore[method-assign]
    return cache


def front_of(points: list[tuple[float, int, dict[str, Any]]]) -> list[tuple[float, int, dict[str, Any]]]:
    """The non-dominated (perplexity, parameters) points, cheapest first."""
    ranks = non_dominated_ranks([(math.log(p), n) for p, n, _ in points])
    return sorted({json.dumps(s, sort_keys=True): (p, n, s) for (p, n, s), r in zip(points, ranks) if r == 0}.values(),
                  key=lambda x: x[1])


def hv(points: list[tuple[float, float, Any]], full: float) -> float:
    return hypervolume([[math.log(p), n / full] for p, n, _ in points], [math.log(REFERENCE_FITNESS), 1.0])


#: The JSON key of each cost's values, and its axis label.
COST_KEY = {"params": "parameters", "latency": "latency_ms"}
COST_LABEL = {"params": "parameters (M)", "latency": "prefill latency (ms, 1 CPU thread)"}
COST_SCALE = {"params": 1e6, "latency": 1.0}


def run_arm(arm: str, seed: int, supernet: subnas.Supernet, space: Any, args: argparse.Namespace) -> dict[str, Any]:
    """One arm's evaluated candidates: [(search perplexity, parameters, subnet)] and its bin winners."""
    out = Path(args.work) / arm / f"seed{seed}"
    common = dict(fitness="perplexity", data="default:search", seq_len=args.seq_len, num_seqs=args.num_seqs,
                  confirm=0, out_dir=out, seed=seed, progress=False, space="coarse-uniform")
    start = time.time()
    if arm == "bins":
        result = subnas.search(supernet, bins=list(BINS), sampler="evolution", trials=args.trials // 3, **common)
        import optuna

        store = open_storage(None, out)
        points = []
        for entry in result["bins"]:
            study = optuna.load_study(study_name=entry["study"], storage=store)
            points += [(t.value, t.user_attrs["parameters"], t.user_attrs["subnet"])
                       for t in study.get_trials(deepcopy=False) if t.state.name == "COMPLETE"
                       and not t.user_attrs.get("duplicate")]
        evaluations = sum(e["evaluations"] for e in result["bins"])
    else:
        trials = len(one_shot_grid(space)) if arm == "one-shot" else args.trials
        sampler = "mo-evolution" if arm == "one-shot" else arm
        # NSGA-II's default population (50) would make a 30-evaluation run pure random sampling.
        options = {"population_size": max(4, args.trials // 3)} if arm == "nsga2" else {}
        result = subnas.search(supernet, objectives=f"perplexity,{args.cost}", sampler=sampler, trials=trials,
                               sampler_options=options, **common)
        import optuna

        study = optuna.load_study(study_name="subnas-pareto", storage=open_storage(None, out))
        # Parameter counts stay integers (a bin's bounds are integers); latencies are ms.
        cost = int if args.cost == "params" else float
        points = [(t.values[0], cost(t.values[1]), t.user_attrs["subnet"]) for t in study.get_trials(deepcopy=False)
                  if t.state.name == "COMPLETE" and not t.user_attrs.get("duplicate")]
        evaluations = result["evaluations"]
    return {"arm": arm, "seed": seed, "evaluations": evaluations, "seconds": round(time.time() - start, 1),
            "points": [[p, n, s] for p, n, s in points if math.isfinite(p)]}


def sizes(subnet: dict[str, Any], config: Any) -> dict[str, Any]:
    """A sub-network's sizes (its index sets, thousands of numbers in importance order, follow from
    the order and stay out of the committed JSON)."""
    r = subnas.SubNetwork.from_dict(subnet).resolve(config)
    first = r.layers[0]
    return {"n_layers": len(r.layers), "n_embd": len(r.embd), "num_heads": first.num_heads,
            "query_groups": first.query_groups, "head_size": first.head_size,
            "intermediate_size": first.intermediate_size}


def compact(data: dict[str, Any], config: Any) -> dict[str, Any]:
    """``data`` with every ``subnet`` replaced by its `sizes`."""
    if isinstance(data, dict):
        return {("sizes" if k == "subnet" else k): (sizes(v, config) if k == "subnet" else compact(v, config))
                for k, v in data.items()}
    if isinstance(data, list):
        return [compact(v, config) for v in data]
    return data


def report_arm(run: dict[str, Any], validate: Any, full: float, cost: str) -> dict[str, Any]:
    """Front, hypervolume (search and validation) and per-bin winners (parameter cost only) of one arm's run."""
    points = [(p, n, s) for p, n, s in run["points"]]
    front = front_of(points)
    val_points = [(validate(s), n, s) for p, n, s in front if p < REFERENCE_FITNESS]
    val_front = front_of(val_points)
    winners = {}
    for b in BINS if cost == "params" else ():
        pb = subnas.ParameterBin.parse(b)
        inside = [(p, n, s) for p, n, s in points if n in pb]
        if inside:
            p, n, s = min(inside, key=lambda x: x[0])  # the arm's pick: best on the search split
            winners[b] = {"search_perplexity": p, "parameters": n, "val_perplexity": validate(s), "subnet": s}
    return {"hypervolume_search": hv(front, full), "hypervolume_val": hv(val_front, full),
            "front": [{"search_perplexity": p, COST_KEY[cost]: n, "subnet": s} for p, n, s in front],
            "val_front": [{"val_perplexity": p, COST_KEY[cost]: n} for p, n, _ in val_front], "bins": winners}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--trials", type=int, default=30)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--arms", nargs="+", default=list(ARMS), choices=ARMS)
    ap.add_argument("--seq-len", type=int, default=256)
    ap.add_argument("--num-seqs", type=int, default=8)
    ap.add_argument("--val-seqs", type=int, default=8)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--cost", choices=tuple(COST_KEY), default="params",
                    help="the second objective: parameters, or measured CPU prefill latency")
    ap.add_argument("--work", default=str(ROOT / "runs" / "pareto_benchmark"))
    ap.add_argument("--json", default=str(ROOT / "docs" / "benchmarks" / "pareto.json"))
    ap.add_argument("--report", action="store_true", help="only print the table and draw the plot from --json")
    args = ap.parse_args()
    path = Path(args.json)
    if args.cost != "params" and "bins" in args.arms:
        ap.error("the bins arm bounds parameters; leave it out with --cost latency")
    if not args.report:
        torch.set_num_threads(args.threads)
        Path(args.work).mkdir(parents=True, exist_ok=True)
        memoise_perplexity(Path(args.work) / "evaluations.json")
        supernet = subnas.Supernet.from_pretrained("default")
        space = make_space("coarse-uniform", supernet, order="importance", calibration="default:calibration",
                           choices={})
        full = subnas.count_parameters(supernet)
        full_cost: float = full if args.cost == "params" else measure_latency(
            supernet, None, seq_len=args.seq_len, threads=1).ms
        val = PerplexityFitness(supernet, data="default:validation", seq_len=args.seq_len, num_seqs=args.val_seqs,
                                confirm_seqs=0)
        val_cache: dict[str, float] = {}

        def validate(subnet: dict[str, Any]) -> float:
            key = json.dumps(subnet, sort_keys=True)
            if key not in val_cache:
                val_cache[key] = val(subnas.SubNetwork.from_dict(subnet))
            return val_cache[key]

        data: dict[str, Any] = json.loads(path.read_text()) if path.exists() else {"runs": {}}
        setup = {"model": "default (SmolLM2-135M)", "space": "coarse-uniform, importance order",
                 "trials": args.trials, "search": f"default:search, {args.num_seqs} x {args.seq_len} tokens",
                 "validation": f"default:validation, {args.val_seqs} x {args.seq_len} tokens", "bins": list(BINS),
                 "reference_point": [math.log(REFERENCE_FITNESS), 1.0], "full_parameters": full, "cost": args.cost}
        old = data.get("setup", {})
        # Seeds add up; anything else that shapes a number must match (a file written before
        # --cost existed measured parameters).
        differing = [k for k in setup if k not in ("cost", "full_parameters") and k in old and old[k] != setup[k]]
        if old and (old.get("cost", "params") != args.cost or differing):
            raise SystemExit(f"{path} holds runs of another setup ({', '.join(differing) or 'cost'} differ); "
                             f"give another --json or delete it")
        data["setup"] = {**setup, "seeds": sorted(set(old.get("seeds", [])) | set(args.seeds)),
                         "threads": args.threads, "full_cost": full_cost}
        data["full_model"] = {"val_perplexity": validate({}), "parameters": full, COST_KEY[args.cost]: full_cost}
        for seed in args.seeds:
            for arm in args.arms:
                if f"{arm}/seed{seed}" in data["runs"]:
                    continue  # done in an earlier run of this setup
                run = run_arm(arm, seed, supernet, space, args)
                data["runs"][f"{arm}/seed{seed}"] = compact({**{k: v for k, v in run.items() if k != "points"},
                                                             **report_arm(run, validate, full_cost, args.cost)},
                                                            supernet.subnas_config)
                data["runs"][f"{arm}/seed{seed}"]["candidates"] = len(run["points"])
                path.parent.mkdir(parents=True, exist_ok=True)
                atomic_write_text(path, json.dumps(data, indent=1) + "\n")
                print(f"{arm} seed {seed}: {run['evaluations']} evaluations in {run['seconds']} s, hypervolume "
                      f"{data['runs'][f'{arm}/seed{seed}']['hypervolume_val']:.4f} (validation)", flush=True)
    report(json.loads(path.read_text()), path.with_suffix(".png"))


def report(data: dict[str, Any], plot: Path) -> None:
    """The markdown table of docs/benchmarks/pareto.md and the fronts in one plot."""
    cost = data.get("setup", {}).get("cost", "params")
    key, scale = COST_KEY[cost], COST_SCALE[cost]
    bins_shown = BINS if cost == "params" else ()
    by_arm: dict[str, list[dict[str, Any]]] = {}
    for name, run in data["runs"].items():
        by_arm.setdefault(name.split("/")[0], []).append(run)
    print("| arm | evaluations | hypervolume (search) | hypervolume (validation) | "
          + "".join(f"{b} val. ppl | " for b in bins_shown))
    print("|---|---|---|---|" + "---|" * len(bins_shown))
    for arm, runs in by_arm.items():
        def ms(key: str) -> str:
            xs = [r[key] for r in runs]
            return f"{statistics.mean(xs):.4f}" + (f" ± {statistics.stdev(xs):.4f}" if len(xs) > 1 else "")
        bins = []
        for b in bins_shown:
            xs = [r["bins"][b]["val_perplexity"] for r in runs if b in r["bins"]]
            # how many seeds put a candidate in the bin, where not all did
            reached = f" ({len(xs)} of {len(runs)} seeds)" if 0 < len(xs) < len(runs) else ""
            bins.append(f"{statistics.mean(xs):,.1f}{reached}" if xs else "—")
        print(f"| {arm} | {statistics.mean(r['evaluations'] for r in runs):.0f} | {ms('hypervolume_search')} | "
              f"{ms('hypervolume_val')} | " + "".join(f"{x} | " for x in bins))
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for arm, runs in by_arm.items():
        front = runs[0]["val_front"]
        ax.step([p[key] / scale for p in front], [p["val_perplexity"] for p in front], where="post",
                marker="o", ms=3, label=arm)
    full = data["full_model"]
    ax.scatter([full[key] / scale], [full["val_perplexity"]], marker="*", s=120, c="k", label="full model")
    ax.set_xlabel(COST_LABEL[cost])
    ax.set_ylabel("validation perplexity (no training)")
    ax.set_yscale("log")
    ax.set_title(f"perplexity x {'parameters' if cost == 'params' else 'latency'} fronts, SmolLM2-135M (first seed)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(plot, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    main()
