"""Which search finds the best sub-network? Real SmolLM2-135M, equal budgets, held-out validation.

    python benchmarks/search_quality.py                          # 3 bins x 3 seeds x 40 evaluations (~1 h)
    python benchmarks/search_quality.py --bins 85M-100M --seeds 0 # one bin, one seed (~15 min on 2 cores)
    python benchmarks/search_quality.py --report                  # table + plots from the JSON only

Arms, per bin and seed, each with ``--budget`` fitness evaluations at most (DESIGN.md §12):

* ``one-shot``: the practitioner's baseline — the bin's depth × width grid in the literature's
  importance order (`SearchSpace.one_shot` with ``order="block-influence"``: the n layers of
  highest block influence (ShortGPT), the most active neurons / channels (Minitron)), every point
  evaluated, the best kept; deterministic, so the same for every seed;
* ``removal-grid``: the same grid in ``subnas search``'s importance order (layers ranked by the
  calibration loss of skipping each one): the default search's seeds alone, to show what the
  order gives and what the search adds;
* ``paper``: the paper's protocol — natural ("first n") order, coarse-uniform, bin-constrained
  evolution with the paper's N=20, k=5, m=c=0.2, r=5 and a random initial population;
* ``default``: what ``subnas search`` runs by default — importance order, coarse-uniform, evolution
  seeded with the one-shot grid (`subnas_plugins.evolution.EVOLUTION_DEFAULTS`), and the last ``--confirm``
  evaluations of the budget re-measure the best few candidates on the search split's next
  ``--confirm-seqs`` sequences (``subnas search --confirm``): the best confirmed one wins;
* ``random``: importance order, Optuna's RandomSampler, proposals repaired into the bin, the same
  confirmation as ``default``;
* ``importance``: the default search with the importance fitness instead of perplexity (its
  candidates cost microseconds; only its winner is run);
* ``default+median``: the default search with Optuna's MedianPruner over chunks of evaluation
  tokens (multi-fidelity): the tokens it spent against ``default``'s, and its winner.

Selection uses the corpus's *search* split (``--seq-len`` x ``--num-seqs``); every reported
perplexity is on the *validation* split (``--val-seqs`` sequences), which no arm ever saw; the
importance order comes from the *calibration* split. One evaluation cache is shared by the arms
(the fitness is deterministic, so sharing changes no result, only the wall time); a pruned arm
replays cached per-chunk values, so its token count is what it would have spent alone. Results
are merged into ``--json`` after every run (rerunning resumes), and ``--report`` draws the
anytime curves and the validation bars and prints the markdown table of docs/benchmarks/search.md.
It also reports the Spearman correlation between the importance fitness and perplexity over every
perplexity-evaluated in-bin candidate of the importance-ordered coarse-uniform space.
"""

from __future__ import annotations

import os

# Before torch loads OpenMP: idle OpenMP threads that spin make a busy 2-core machine several
# times slower (`import subnas` sets the same, but torch is imported first here).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any, Iterator  # noqa: E402

import numpy as np  # noqa: E402
import optuna  # noqa: E402
import torch  # noqa: E402

import subnas  # noqa: E402
from subnas._io import atomic_write_text  # noqa: E402
from subnas.bins import ParameterBin  # noqa: E402
from subnas.evaluation._perplexity import mean_token_nll, nll_to_perplexity, running_nll, supernet_tokens  # noqa: E402
from subnas.interfaces import Fitness  # noqa: E402
from subnas.interfaces import get_sampler  # noqa: E402
from subnas.search import BinSearch, _optimize, make_pruner, make_space  # noqa: E402

ARMS = ("one-shot", "removal-grid", "default", "default+median", "importance", "paper", "random")
ARM_SPACE = {"one-shot": "block-influence", "paper": "natural"}  # every other arm: the importance order
CONFIRMED_ARMS = ("default", "default+median", "random")  # arms that run `subnas search`'s confirmation
PAPER_EVOLUTION = {"population_size": 20, "num_elites": 5, "mutation_prob": 0.2, "crossover_prob": 0.2,
                   "num_random": 5, "seed_one_shot": False}
HERE = Path(__file__).resolve().parent
DOCS = HERE.parent / "docs" / "benchmarks"


class CachedPerplexity(Fitness):
    """Perplexity on fixed tokens, chunk by chunk, memoised by the sub-network's canonical key."""

    direction = "minimize"

    def __init__(self, supernet: Any, tokens: torch.Tensor, space: Any, cache: dict[str, Any],
                 data: str, batch_size: int, confirm_tokens: torch.Tensor | None = None) -> None:
        self.supernet, self.tokens, self.space, self.cache, self.data = supernet, tokens, space, cache, data
        self.confirm_tokens = confirm_tokens
        self.batch_size = batch_size
        self.spent = 0  # tokens actually run (cache misses), for the wall-time story only

    def __call__(self, subnet: subnas.SubNetwork) -> float:
        value = math.nan
        for _, value in self.steps(subnet):
            pass
        return value

    def steps(self, subnet: subnas.SubNetwork) -> Iterator[tuple[int, float]]:
        key = subnet.key(self.space.config)
        if key not in self.cache:
            trace = []
            with self.supernet.sub_network(subnet):
                for used, nll in running_nll(self.supernet.model, self.tokens, batch_size=self.batch_size):
                    trace.append((used, nll_to_perplexity(nll)))
            self.cache[key] = (subnet, trace)
            self.spent += trace[-1][0]
        yield from self.cache[key][1]

    def confirm(self, subnet: subnas.SubNetwork) -> float | None:
        """Perplexity on the confirmation sequences (the search split's next ones), memoised."""
        if self.confirm_tokens is None:
            return None
        key = "confirm:" + subnet.key(self.space.config)
        if key not in self.cache:
            with self.supernet.sub_network(subnet):
                nll = mean_token_nll(self.supernet.model, self.confirm_tokens, batch_size=self.batch_size)
            used = self.confirm_tokens.shape[0] * (self.confirm_tokens.shape[1] - 1)
            self.cache[key] = (subnet, [(used, nll_to_perplexity(nll))])
            self.spent += used
        return self.cache[key][1][-1][1]


def _search(arm: str, supernet: Any, spaces: dict[str, Any], b: ParameterBin, seed: int, budget: int,
            fitness: Fitness, importance: Fitness | None, confirm: int) -> tuple[list[dict[str, Any]], Any]:
    """One arm's search; returns its trials in order (sub-network, value, tokens used, pruned) and
    its winner (None: the best trial by value)."""
    space = spaces[ARM_SPACE.get(arm, "importance")]
    if arm in ("one-shot", "removal-grid"):
        out = []
        for subnet in space.one_shot(b)[:budget]:
            value, used = math.nan, 0
            for used, value in fitness.steps(subnet):
                pass
            out.append({"subnet": subnet.to_dict(), "value": value, "tokens": used, "pruned": False})
        return out, None
    sampler_name = "random" if arm == "random" else "evolution"
    options = PAPER_EVOLUTION if arm == "paper" else {}
    smp = get_sampler(sampler_name, space, b, seed=seed, **options)
    pruner = "median" if arm == "default+median" else "none"
    score = importance if arm == "importance" else fitness
    # What `subnas search` does: the budget's last `confirm` evaluations re-measure the best few
    # candidates on the search split's next sequences (never the validation split); the paper's
    # protocol has no such step, and importance scores have no second measurement.
    confirm = confirm if arm in CONFIRMED_ARMS else 0
    study = optuna.create_study(sampler=smp, direction=score.direction, pruner=make_pruner(pruner))
    run = BinSearch(b, study, space, score, sampler_name, seed=seed, pruning=pruner != "none",
                    trials=budget - confirm, confirm=confirm)
    _optimize(run, epochs=None, trials=budget - confirm, progress=False, label=arm, on_trial=lambda: None)
    run.confirm_best()
    winner, _ = run.winner()
    confirm_tokens = (len(run.study.user_attrs.get("confirmed", {})) * fitness.confirm_tokens.numel()
                      if confirm and isinstance(fitness, CachedPerplexity) else 0)
    out = []
    for t in sorted(study.trials, key=lambda t: t.number):
        if t.user_attrs.get("infeasible") or "subnet" not in t.user_attrs:
            continue
        out.append({"subnet": t.user_attrs["subnet"], "value": t.value,
                    "tokens": 0 if t.user_attrs.get("duplicate") else int(t.user_attrs.get("budget_used", 0)),
                    "pruned": t.state == optuna.trial.TrialState.PRUNED})
    if confirm_tokens:  # the confirmations count as evaluations (and tokens) of the arm's budget
        out.append({"subnet": winner.user_attrs["subnet"], "value": None, "tokens": confirm_tokens,
                    "pruned": False, "confirmations": len(run.study.user_attrs["confirmed"])})
    return out, (winner.user_attrs["subnet"] if confirm else None)


def run(args: argparse.Namespace) -> None:
    torch.set_num_threads(args.threads)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    path = Path(args.json)
    results = json.loads(path.read_text()) if path.is_file() else {"runs": []}
    done = {(r["bin"], r["seed"], r["arm"]) for r in results["runs"]}
    supernet = subnas.Supernet.from_pretrained("default")
    stream = supernet_tokens(supernet, "default:search", args.seq_len, args.num_seqs + args.confirm_seqs)
    search_tokens, confirm_tokens = stream[:args.num_seqs], stream[args.num_seqs:]
    val_tokens = supernet_tokens(supernet, "default:validation", args.seq_len, args.val_seqs)
    spaces = {order: make_space(args.space, supernet, order=order, calibration="default:calibration", choices={})
              for order in ("importance", "block-influence", "natural")}
    cache: dict[str, Any] = {}  # key -> (sub-network, [(tokens, perplexity so far), ...])
    val_cache: dict[str, float] = {}
    results["setup"] = {"model": "SmolLM2-135M-Instruct (Q4_1 GGUF, dequantized)", "space": args.space,
                        "budget": args.budget, "search_tokens": f"default:search {args.num_seqs}x{args.seq_len}",
                        "validation_tokens": f"default:validation {args.val_seqs}x{args.seq_len}",
                        "calibration": "default:calibration 16x256 (layer removal: its first 8)", "threads": args.threads,
                        "confirm": (f"{args.confirm} of the budget re-measure the best candidates on default:search "
                                    f"sequences {args.num_seqs}-{args.num_seqs + args.confirm_seqs - 1} "
                                    f"(arms {', '.join(CONFIRMED_ARMS)})") if args.confirm else "none",
                        "full_model_validation_perplexity": _validate(supernet, None, val_tokens, val_cache, spaces)}
    cache_path = path.with_suffix(".evaluations.json")
    if cache_path.is_file():  # evaluations survive a restart (the fitness is deterministic)
        saved = json.loads(cache_path.read_text())
        cache.update({k: (subnas.SubNetwork.from_dict(v["subnet"]), [tuple(x) for x in v["trace"]])
                      for k, v in saved.items()})
    for seed in args.seeds:  # every bin with one seed before the next seed: partial runs stay balanced
        for bin_text in args.bins:
            b = ParameterBin.parse(bin_text)
            for arm in args.arms:
                if (bin_text, seed, arm) in done:
                    continue
                space = spaces[ARM_SPACE.get(arm, "importance")]
                fitness = CachedPerplexity(supernet, search_tokens, space, cache, "default:search", args.batch_size,
                                           confirm_tokens)
                importance = subnas.get_fitness("importance", supernet=supernet) if arm == "importance" else None
                start = time.perf_counter()
                trials, confirmed = _search(arm, supernet, spaces, b, seed, args.budget, fitness, importance,
                                            args.confirm)
                seconds = time.perf_counter() - start
                scored = [t for t in trials if t["value"] is not None and not t["pruned"]]
                best = (max if arm == "importance" else min)(scored, key=lambda t: t["value"])
                if confirmed is not None:
                    best = next(t for t in scored if t["subnet"] == confirmed)
                winner = subnas.SubNetwork.from_dict(best["subnet"])
                confirmations = sum(t.get("confirmations", 0) for t in trials)
                row = {"bin": bin_text, "seed": seed, "arm": arm,
                       "evaluations": len(scored) + sum(t["pruned"] for t in trials) + confirmations,
                       "confirmations": confirmations,
                       "tokens": sum(t["tokens"] for t in trials), "seconds": round(seconds, 1),
                       "best_search_value": best["value"], "parameters": space.count(winner),
                       "val_perplexity": _validate(supernet, winner, val_tokens, val_cache, spaces),
                       "winner": _compact(best["subnet"]), "values": [t["value"] for t in trials],
                       "pruned": [t["pruned"] for t in trials]}
                results["runs"].append(row)
                atomic_write_text(path, json.dumps(results, indent=1) + "\n")
                atomic_write_text(cache_path, json.dumps({k: {"subnet": v[0].to_dict(), "trace": v[1]}
                                                          for k, v in cache.items()}) + "\n")
                print(f"{bin_text} seed {seed} {arm:>15}: val ppl {row['val_perplexity']:.1f} "
                      f"({row['parameters'] / 1e6:.1f}M, {row['evaluations']} evals, {seconds:.0f} s)", flush=True)
    results["importance_correlation"] = _correlation(supernet, spaces["importance"], cache, args)
    atomic_write_text(path, json.dumps(results, indent=1) + "\n")


def _compact(subnet: dict[str, Any]) -> dict[str, Any]:
    """Sizes and kept layers: the per-unit index sets (~100 KB a winner) follow from the order."""
    return {k: v for k, v in subnet.items() if not k.endswith("_indices") or k == "layer_indices"}


def _validate(supernet: Any, subnet: Any, tokens: torch.Tensor, cache: dict[str, float], spaces: dict[str, Any]) -> float:
    key = "full" if subnet is None else subnet.key(spaces["importance"].config)
    if key not in cache:
        from subnas.evaluation._perplexity import perplexity

        with supernet.sub_network(subnet):
            cache[key] = perplexity(supernet.model, tokens, batch_size=4, progress=False)
    return cache[key]


def _spearman(x: list[float], y: list[float]) -> float:
    rx, ry = np.argsort(np.argsort(x)), np.argsort(np.argsort(y))
    return float(np.corrcoef(rx, ry)[0, 1])


def _correlation(supernet: Any, space: Any, cache: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    """Spearman(importance fitness, perplexity) over the perplexity-evaluated in-bin candidates."""
    scorer = subnas.get_fitness("importance", supernet=supernet)
    out: dict[str, Any] = {}
    for bin_text in args.bins:
        b = ParameterBin.parse(bin_text)
        pairs = []
        for key, (subnet, trace) in cache.items():
            if key.startswith("confirm:"):
                continue  # confirmation perplexities are on other tokens
            if space.contains(subnet) and space.count(subnet) in b:
                pairs.append((scorer(subnet), trace[-1][1]))
        if len(pairs) >= 10:
            # Higher importance should mean lower perplexity: report the correlation with -perplexity.
            out[bin_text] = {"candidates": len(pairs),
                             "spearman": _spearman([p[0] for p in pairs], [-p[1] for p in pairs])}
    return out


# ---------------------------------------------------------------------------- report
def report(args: argparse.Namespace) -> str:
    results = json.loads(Path(args.json).read_text())
    runs, setup = results["runs"], results["setup"]
    bins = list(dict.fromkeys(r["bin"] for r in runs))
    arms = [a for a in ARMS if any(r["arm"] == a for r in runs)]
    lines = [f"Full model: validation perplexity {setup['full_model_validation_perplexity']:.1f}. "
             f"Budget {setup['budget']} evaluations per arm; search fitness on {setup['search_tokens']}, "
             f"reported on {setup['validation_tokens']}.", "",
             "| bin | " + " | ".join(arms) + " |", "|---|" + "---|" * len(arms)]
    for b in bins:
        cells = []
        for a in arms:
            vals = [r["val_perplexity"] for r in runs if r["bin"] == b and r["arm"] == a]
            if not vals:
                cells.append("—")
                continue
            spread = f" ± {statistics.stdev(vals):.1f}" if len(vals) > 1 else ""
            cells.append(f"{statistics.mean(vals):.1f}{spread} (n={len(vals)})")
        lines.append(f"| {b} | " + " | ".join(cells) + " |")
    lines += ["", "| bin | tokens, default | tokens, default+median | saved | winner val ppl, default | "
                  "winner val ppl, default+median |", "|---|---|---|---|---|---|"]
    for b in bins:
        d = [r for r in runs if r["bin"] == b and r["arm"] == "default"]
        m = [r for r in runs if r["bin"] == b and r["arm"] == "default+median"]
        if d and m:
            td, tm = statistics.mean(r["tokens"] for r in d), statistics.mean(r["tokens"] for r in m)
            lines.append(f"| {b} | {td:,.0f} | {tm:,.0f} | {1 - tm / td:.0%} | "
                         f"{statistics.mean(r['val_perplexity'] for r in d):.1f} | "
                         f"{statistics.mean(r['val_perplexity'] for r in m):.1f} |")
    corr = results.get("importance_correlation", {})
    if corr:
        lines += ["", "| bin | candidates | Spearman(importance, −perplexity) |", "|---|---|---|"]
        lines += [f"| {b} | {c['candidates']} | {c['spearman']:.2f} |" for b, c in corr.items()]
    _plot(runs, bins, arms, setup)
    return "\n".join(lines)


def _plot(runs: list[dict[str, Any]], bins: list[str], arms: list[str], setup: dict[str, Any]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(bins), figsize=(5 * len(bins), 4), squeeze=False)
    for ax, b in zip(axes[0], bins):
        for a in arms:
            if a == "importance":
                continue  # its values are importance scores, not perplexities
            curves = []
            for r in (r for r in runs if r["bin"] == b and r["arm"] == a):
                best, ys = math.inf, []
                for v, pruned in zip(r["values"], r["pruned"]):
                    if v is not None and not pruned:
                        best = min(best, v)
                    ys.append(best)
                curves.append(ys)
            if curves:
                n = min(len(c) for c in curves)
                ax.plot(range(1, n + 1), np.exp(np.mean(np.log([c[:n] for c in curves]), axis=0)), label=a)
        ax.set_yscale("log")
        ax.set_title(f"bin {b}")
        ax.set_xlabel("evaluations")
        ax.set_ylabel("best search-split perplexity so far")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(DOCS / "search_quality_anytime.png", dpi=110)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(max(6, 2.2 * len(bins)), 4))
    width = 0.8 / len(arms)
    for i, a in enumerate(arms):
        means = [statistics.mean([r["val_perplexity"] for r in runs if r["bin"] == b and r["arm"] == a] or [math.nan])
                 for b in bins]
        ax.bar(np.arange(len(bins)) + i * width, means, width, label=a)
    ax.axhline(setup["full_model_validation_perplexity"], color="k", ls="--", label="full model")
    ax.set_xticks(np.arange(len(bins)) + 0.4 - width / 2, bins)
    ax.set_yscale("log")
    ax.set_ylabel("winner's validation perplexity (mean over seeds)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(DOCS / "search_quality_validation.png", dpi=110)
    plt.close(fig)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--bins", nargs="+", default=["85M-100M", "55M-65M", "110M-120M"])
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--arms", nargs="+", default=list(ARMS), choices=ARMS)
    p.add_argument("--budget", type=int, default=40, help="fitness evaluations per arm")
    p.add_argument("--space", default="coarse-uniform")
    p.add_argument("--seq-len", type=int, default=256)
    p.add_argument("--num-seqs", type=int, default=16, help="search-split sequences (subnas search's default)")
    p.add_argument("--val-seqs", type=int, default=64, help="validation-split sequences for the reported numbers")
    p.add_argument("--batch-size", type=int, default=4, help="sequences per chunk the pruner sees")
    p.add_argument("--confirm", type=int, default=4,
                   help="evaluations of the budget that re-measure the best candidates (subnas search --confirm)")
    p.add_argument("--confirm-seqs", type=int, default=48,
                   help="search-split sequences after the first --num-seqs on which candidates are confirmed")
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    p.add_argument("--json", default=str(DOCS / "search_quality.json"))
    p.add_argument("--report", action="store_true", help="only print the table and redraw the plots")
    args = p.parse_args()
    if not args.report:
        run(args)
    print(report(args))


if __name__ == "__main__":
    main()
