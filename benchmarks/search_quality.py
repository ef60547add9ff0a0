"""Which search finds the best sub-network, in which space? Real SmolLM2-135M, held-out validation.

    python benchmarks/search_quality.py                          # 3 bins x 3 seeds x 7 arms, coarse-uniform
    python benchmarks/search_quality.py --spaces coarse-uniform coarse-layerwise fine-uniform fine-layerwise \
        --arms one-shot default --report-data default:test --val-seqs 0 \
        --json docs/benchmarks/search_quality_spaces.json                          # the four spaces, test split
    python benchmarks/search_quality.py --report [--plots]       # tables (+ plots) from the JSON only

Arms, per space, bin and seed, each with ``--budget`` fitness evaluations at most:

* ``one-shot``: the practitioner's baseline — the bin's depth × width grid in the literature's
  importance order (`SearchSpace.one_shot` with ``order="block-influence"``: the n layers of
  highest block influence (ShortGPT), the most active neurons / channels (Minitron)), every point
  evaluated; deterministic, so the same for every seed;
* ``removal-grid``: the same grid in ``subnas search``'s importance order (layers ranked by the
  calibration loss of skipping each one): the default search's seeds alone, to show what the
  order gives and what the search adds;
* ``paper``: the paper's protocol — natural ("first n") order, bin-constrained evolution with the
  paper's N = 20, k = 5, λ = N = 20, m = c = 0.2, r = 5 and a random initial population;
* ``default``: what ``subnas search`` runs by default — importance order, evolution seeded with the
  one-shot grid (`subnas_plugins.evolution.EVOLUTION_DEFAULTS`);
* ``random``: importance order, Optuna's RandomSampler, proposals repaired into the bin;
* ``importance``: the default search with the importance fitness instead of perplexity (its
  candidates cost microseconds; only its winner is run, and it has no confirmation);
* ``default+median``: the default search with Optuna's MedianPruner over chunks of evaluation
  tokens (multi-fidelity).

Every arm but ``importance`` ends alike: the last ``--confirm`` evaluations of its budget re-measure
its best candidates on the search split's next ``--confirm-seqs`` sequences (``subnas search
--confirm``), and the best confirmed one wins — so no arm's winner rests on noisier numbers than
another's. Every result row holds the arm's ``tokens`` (search and confirmation tokens it would
spend alone), its ``evaluations`` and its ``distinct_evaluations`` (a random sampler's repeats
cost nothing and count once).

Selection uses the corpus's *search* split (``--seq-len`` x ``--num-seqs``); every reported
perplexity is on ``--report-data`` (default the *validation* split; ``default:test`` with
``--val-seqs 0`` is the whole *test* split, the text no design decision ever read, for headline
numbers), which no arm ever saw; the importance order comes from the *calibration* split. One evaluation
cache is shared by the arms and spaces (the fitness is deterministic, so sharing changes no
result, only the wall time); it is keyed by everything that determines a value (`value_setup`:
text, split, sequence length, number of sequences, batch size, confirmation sequences, validation
text, `FITNESS_VERSION`), and a rerun with another setup is refused instead of mixing values in —
for the results file too. A pruned arm replays cached per-chunk values, so its token count is what
it would have spent alone. Results are merged into ``--json`` after every run (rerunning resumes).
It also reports the Spearman correlation between the importance fitness and perplexity over every
perplexity-evaluated in-bin candidate of the importance-ordered coarse-uniform space.
"""

from __future__ import annotations

import os

# Before torch loads OpenMP: idle OpenMP threads that spin make a busy 2-core machine several
# times slower (`import subnas` sets the same, but torch is imported first here).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse  # noqa: E402
import hashlib  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import re  # noqa: E402
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
from subnas.lookups import get_sampler  # noqa: E402
from subnas.search_driver import BinSearch, _optimize, make_pruner, make_space  # noqa: E402

ARMS = ("one-shot", "removal-grid", "default", "default+median", "importance", "paper", "random")
ARM_SPACE = {"one-shot": "block-influence", "paper": "natural"}  # every other arm: the importance order
# Every arm but ``importance`` (whose scores are not perplexities) confirms its best candidates the
# same way, so that no arm's winner rests on noisier numbers than another's.
CONFIRMED_ARMS = ("one-shot", "removal-grid", "default", "default+median", "paper", "random")
# The paper's Algorithm 1 exactly: N = 20, k = 5, λ = N = 20 mutation and crossover slots with
# m = c = 0.2, r = 5, a random initial population.
PAPER_EVOLUTION = {"population_size": 20, "num_elites": 5, "num_offspring": 20, "mutation_prob": 0.2,
                   "crossover_prob": 0.2, "num_random": 5, "seed_one_shot": False}
#: Bump whenever the way a cached value is computed changes (perplexity code, chunking): a cache
#: written by another version is refused rather than mixed in.
FITNESS_VERSION = 2
HERE = Path(__file__).resolve().parent
DOCS = HERE.parent / "docs" / "benchmarks"


class EvaluationCache:
    """Evaluations keyed by everything that determines them.

    ``setup`` holds every input of a cached value (model, text, split, sequence length, number of
    sequences, batch size, confirmation sequences, validation text, `FITNESS_VERSION`); every key
    carries its digest, and a file written under another setup is refused rather than mixed in.
    """

    def __init__(self, setup: dict[str, Any], path: Path | None = None) -> None:
        self.setup, self.path = setup, path
        self.digest = hashlib.sha1(json.dumps(setup, sort_keys=True).encode()).hexdigest()[:12]
        self.entries: dict[str, Any] = {}
        if path is not None and path.is_file():
            saved = json.loads(path.read_text())
            if saved.get("setup") != setup:
                raise SystemExit(f"{path} holds evaluations of another setup ({saved.get('setup')}), not {setup}; "
                                 f"give another --json (its cache is --json with .evaluations.json) or delete it")
            self.entries = saved["entries"]

    def key(self, kind: str, subnet_key: str) -> str:
        return f"{self.digest}:{kind}:{subnet_key}"

    def get(self, kind: str, subnet_key: str) -> Any:
        return self.entries.get(self.key(kind, subnet_key))

    def put(self, kind: str, subnet_key: str, value: Any) -> None:
        self.entries[self.key(kind, subnet_key)] = value

    def items(self, kind: str) -> Iterator[tuple[str, Any]]:
        prefix = f"{self.digest}:{kind}:"
        return ((k[len(prefix):], v) for k, v in self.entries.items() if k.startswith(prefix))

    def save(self) -> None:
        if self.path is not None:
            atomic_write_text(self.path, json.dumps({"setup": self.setup, "entries": self.entries}) + "\n")


class CachedPerplexity(Fitness):
    """Perplexity on fixed tokens, chunk by chunk, memoised in an `EvaluationCache`."""

    direction = "minimize"

    def __init__(self, supernet: Any, tokens: torch.Tensor, space: Any, cache: EvaluationCache,
                 batch_size: int, confirm_tokens: torch.Tensor | None = None) -> None:
        self.supernet, self.tokens, self.space, self.cache = supernet, tokens, space, cache
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
        hit = self.cache.get("search", key)
        if hit is None:
            trace = []
            with self.supernet.sub_network(subnet):
                for used, nll in running_nll(self.supernet.model, self.tokens, batch_size=self.batch_size):
                    trace.append((used, nll_to_perplexity(nll)))
            hit = {"subnet": subnet.to_dict(), "trace": trace}
            self.cache.put("search", key, hit)
            self.spent += trace[-1][0]
        yield from (tuple(x) for x in hit["trace"])

    def confirm(self, subnet: subnas.SubNetwork) -> float | None:
        """Perplexity on the confirmation sequences (the search split's next ones), memoised."""
        if self.confirm_tokens is None:
            return None
        key = subnet.key(self.space.config)
        if self.cache.get("confirm", key) is None:
            with self.supernet.sub_network(subnet):
                nll = mean_token_nll(self.supernet.model, self.confirm_tokens, batch_size=self.batch_size)
            self.cache.put("confirm", key, nll_to_perplexity(nll))
            self.spent += self.confirm_used
        return float(self.cache.get("confirm", key))

    @property
    def confirm_used(self) -> int:
        """Tokens one confirmation scores."""
        return 0 if self.confirm_tokens is None else self.confirm_tokens.shape[0] * (self.confirm_tokens.shape[1] - 1)


def _search(arm: str, space: Any, b: ParameterBin, seed: int, budget: int, fitness: CachedPerplexity,
            importance: Fitness | None, confirm: int) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
    """One arm's search; returns its trials in order (sub-network, value, tokens used, pruned; a
    last entry for the confirmations) and its confirmed winner (None: the best trial by value)."""
    confirm = confirm if arm in CONFIRMED_ARMS else 0
    if arm in ("one-shot", "removal-grid"):
        out = []
        for subnet in space.one_shot(b)[: budget - confirm]:
            value, used = math.nan, 0
            for used, value in fitness.steps(subnet):
                pass
            out.append({"subnet": subnet.to_dict(), "value": value, "tokens": used, "pruned": False})
        # The same confirmation as the searches: the best `confirm` points on the next sequences.
        top = sorted(out, key=lambda t: t["value"])[:confirm]
        if not top:
            return out, None
        scores = [(fitness.confirm(subnas.SubNetwork.from_dict(t["subnet"])), i) for i, t in enumerate(top)]
        out.append({"subnet": None, "value": None, "tokens": fitness.confirm_used * len(top), "pruned": False,
                    "confirmations": len(top)})
        return out, top[min(scores)[1]]["subnet"]
    sampler_name = "random" if arm == "random" else "evolution"
    options = PAPER_EVOLUTION if arm == "paper" else {}
    smp = get_sampler(sampler_name, space, b, seed=seed, **options)
    pruner = "median" if arm == "default+median" else "none"
    score = importance if arm == "importance" else fitness
    # What `subnas search` does: the budget's last `confirm` evaluations re-measure the best few
    # candidates on the search split's next sequences (never the validation split); importance
    # scores have no second measurement.
    study = optuna.create_study(sampler=smp, direction=score.direction, pruner=make_pruner(pruner))
    run = BinSearch(b, study, space, score, sampler_name, seed=seed, pruning=pruner != "none",
                    trials=budget - confirm, confirm=confirm)
    _optimize(run, epochs=None, trials=budget - confirm, progress=False, label=arm, on_trial=lambda: None)
    run.confirm_best()
    winner, _ = run.winner()
    confirmations = len(run.study.user_attrs.get("confirmed", {})) if confirm else 0
    out = []
    for t in sorted(study.trials, key=lambda t: t.number):
        if t.user_attrs.get("infeasible") or "subnet" not in t.user_attrs:
            continue
        out.append({"subnet": t.user_attrs["subnet"], "value": t.value,
                    "tokens": 0 if t.user_attrs.get("duplicate") else int(t.user_attrs.get("budget_used", 0)),
                    "pruned": t.state == optuna.trial.TrialState.PRUNED})
    if confirmations:  # the confirmations count as evaluations (and tokens) of the arm's budget
        out.append({"subnet": None, "value": None, "tokens": confirmations * fitness.confirm_used,
                    "pruned": False, "confirmations": confirmations})
    return out, (winner.user_attrs["subnet"] if confirm else None)


def value_setup(args: argparse.Namespace) -> dict[str, Any]:
    """Everything a cached value depends on (`EvaluationCache`)."""
    return {"model": "default", "fitness_version": FITNESS_VERSION, "batch_size": args.batch_size,
            "search": {"data": "default:search", "seq_len": args.seq_len, "num_seqs": args.num_seqs},
            "confirm": {"data": "default:search", "first": args.num_seqs, "num_seqs": args.confirm_seqs},
            "validation": {"data": args.report_data, "seq_len": args.seq_len, "num_seqs": _val_seqs(args)},
            "calibration": "default:calibration"}


def _val_seqs(args: argparse.Namespace) -> int | None:
    """``--val-seqs 0``: every whole block of the reported split (`supernet_tokens`)."""
    return args.val_seqs or None


def run(args: argparse.Namespace) -> None:
    torch.set_num_threads(args.threads)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    path = Path(args.json)
    setup = {**value_setup(args), "budget": args.budget, "confirm_candidates": args.confirm}
    results = json.loads(path.read_text()) if path.is_file() else {"setup": setup, "runs": []}
    if results.get("setup") != setup:
        raise SystemExit(f"{path} holds results of another setup ({results.get('setup')}), not {setup}; "
                         f"give another --json or delete it")
    cache = EvaluationCache(value_setup(args), path.with_suffix(".evaluations.json"))
    done = {(r.get("space", "coarse-uniform"), r["bin"], r["seed"], r["arm"]) for r in results["runs"]}
    supernet = subnas.Supernet.from_pretrained("default")
    stream = supernet_tokens(supernet, "default:search", args.seq_len, args.num_seqs + args.confirm_seqs)
    search_tokens, confirm_tokens = stream[:args.num_seqs], stream[args.num_seqs:]
    val_tokens = supernet_tokens(supernet, args.report_data, args.seq_len, _val_seqs(args))
    spaces: dict[tuple[str, str], Any] = {}

    def space_of(name: str, arm: str) -> Any:
        order = ARM_SPACE.get(arm, "importance")
        if (name, order) not in spaces:
            spaces[name, order] = make_space(name, supernet, order=order, calibration="default:calibration",
                                             choices={})
        return spaces[name, order]

    results["full_model_validation_perplexity"] = _validate(supernet, None, val_tokens, cache)
    results["validation_tokens"] = int(val_tokens.shape[0] * (val_tokens.shape[1] - 1))
    for seed in args.seeds:  # every bin with one seed before the next seed: partial runs stay balanced
        for bin_text in args.bins:
            b = ParameterBin.parse(bin_text)
            for name in args.spaces:
                for arm in args.arms:
                    if (name, bin_text, seed, arm) in done:
                        continue
                    row = _run_arm(arm, name, space_of(name, arm), supernet, b, bin_text, seed, args, cache,
                                   search_tokens, confirm_tokens, val_tokens)
                    results["runs"].append(row)
                    atomic_write_text(path, json.dumps(results, indent=1) + "\n")
                    cache.save()
                    print(f"{bin_text} seed {seed} {name} {arm:>15}: val ppl {row['val_perplexity']:.1f} "
                          f"({row['parameters'] / 1e6:.1f}M, {row['distinct_evaluations']} distinct evals, "
                          f"{row['tokens']:,} tokens, {row['seconds']:.0f} s)", flush=True)
    if "coarse-uniform" in args.spaces:
        results["importance_correlation"] = _correlation(supernet, space_of("coarse-uniform", "default"), cache, args)
    atomic_write_text(path, json.dumps(results, indent=1) + "\n")


def _run_arm(arm: str, name: str, space: Any, supernet: Any, b: ParameterBin, bin_text: str, seed: int,
             args: argparse.Namespace, cache: EvaluationCache, search_tokens: torch.Tensor,
             confirm_tokens: torch.Tensor, val_tokens: torch.Tensor) -> dict[str, Any]:
    """One result row: the arm's winner, its validation perplexity, its evaluations and tokens."""
    fitness = CachedPerplexity(supernet, search_tokens, space, cache, args.batch_size, confirm_tokens)
    importance = subnas.get_fitness("importance", supernet=supernet) if arm == "importance" else None
    start = time.perf_counter()
    trials, confirmed = _search(arm, space, b, seed, args.budget, fitness, importance, args.confirm)
    seconds = time.perf_counter() - start
    scored = [t for t in trials if t["value"] is not None and not t["pruned"]]
    best = (max if arm == "importance" else min)(scored, key=lambda t: t["value"])
    if confirmed is not None:
        best = next(t for t in scored if t["subnet"] == confirmed)
    winner = subnas.SubNetwork.from_dict(best["subnet"])
    confirmations = sum(t.get("confirmations", 0) for t in trials)
    evaluated = [t for t in trials if t["subnet"] is not None]
    return {"space": name, "bin": bin_text, "seed": seed, "arm": arm,
            "evaluations": len(evaluated) + confirmations, "confirmations": confirmations,
            # Duplicates (a random sampler proposing a candidate again) cost nothing and count once.
            "distinct_evaluations": len({json.dumps(t["subnet"], sort_keys=True) for t in evaluated}),
            "tokens": sum(t["tokens"] for t in trials), "seconds": round(seconds, 1),
            "best_search_value": best["value"], "parameters": space.count(winner),
            "val_perplexity": _validate(supernet, winner, val_tokens, cache),
            "winner": _compact(best["subnet"]), "values": [t["value"] for t in trials],
            "pruned": [t["pruned"] for t in trials]}


def _compact(subnet: dict[str, Any]) -> dict[str, Any]:
    """Sizes and kept layers: the per-unit index sets (~100 KB a winner) follow from the order."""
    return {k: v for k, v in subnet.items() if not k.endswith("_indices") or k == "layer_indices"}


def _validate(supernet: Any, subnet: Any, tokens: torch.Tensor, cache: EvaluationCache) -> float:
    key = "full" if subnet is None else subnet.key(supernet.subnas_config)
    if cache.get("validation", key) is None:
        from subnas.evaluation._perplexity import perplexity

        with supernet.sub_network(subnet):
            cache.put("validation", key, perplexity(supernet.model, tokens, batch_size=4, progress=False))
    return float(cache.get("validation", key))


def _spearman(x: list[float], y: list[float]) -> float:
    rx, ry = np.argsort(np.argsort(x)), np.argsort(np.argsort(y))
    return float(np.corrcoef(rx, ry)[0, 1])


def _correlation(supernet: Any, space: Any, cache: EvaluationCache, args: argparse.Namespace) -> dict[str, Any]:
    """Spearman(importance fitness, perplexity) over the perplexity-evaluated in-bin candidates."""
    scorer = subnas.get_fitness("importance", supernet=supernet)
    out: dict[str, Any] = {}
    for bin_text in args.bins:
        b = ParameterBin.parse(bin_text)
        pairs = []
        for _, entry in cache.items("search"):
            subnet = subnas.SubNetwork.from_dict(entry["subnet"])
            if space.contains(subnet) and space.count(subnet) in b:
                pairs.append((scorer(subnet), entry["trace"][-1][1]))
        if len(pairs) >= 10:
            # Higher importance should mean lower perplexity: report the correlation with -perplexity.
            out[bin_text] = {"candidates": len(pairs),
                             "spearman": _spearman([p[0] for p in pairs], [-p[1] for p in pairs])}
    return out


# ---------------------------------------------------------------------------- report
def _cell(rows: list[dict[str, Any]]) -> str:
    """Validation perplexity mean ± std (n seeds), and the arm's mean tokens."""
    if not rows:
        return "—"
    vals = [r["val_perplexity"] for r in rows]
    spread = f" ± {statistics.stdev(vals):,.1f}" if len(vals) > 1 else ""
    tokens = statistics.mean(r["tokens"] for r in rows) if all("tokens" in r for r in rows) else None
    return f"{statistics.mean(vals):,.1f}{spread} (n={len(vals)}" + (f"; {tokens / 1000:,.0f}k tok)" if tokens else ")")


def _reported_split(setup: dict[str, Any]) -> str:
    """The name of the text every reported number is on (``test`` for ``default:test``)."""
    data = setup.get("validation", {}).get("data", "default:validation")
    return data.split(":", 1)[1] if data.startswith("default:") else data


def report(args: argparse.Namespace) -> str:
    results = json.loads(Path(args.json).read_text())
    runs, setup = results["runs"], results["setup"]
    for r in runs:
        r.setdefault("space", "coarse-uniform")
    bins = list(dict.fromkeys(r["bin"] for r in runs))
    spaces = list(dict.fromkeys(r["space"] for r in runs))
    arms = [a for a in ARMS if any(r["arm"] == a for r in runs)]
    split = _reported_split(setup)
    full = results.get("full_model_validation_perplexity", setup.get("full_model_validation_perplexity"))
    val_tokens = results.get("validation_tokens") or next((r.get("validation_tokens") for r in runs), None)
    lines = [(f"Full model: {split} perplexity {full:.1f}. " if full is not None and full == full else "")
             + (f"Reported tokens per winner ({split} split): {val_tokens:,}. " if val_tokens else "")
             + f"Setup: {json.dumps(setup, sort_keys=True)}.", ""]
    for space in spaces:
        lines += [f"**{space}** — winner's {split} perplexity, mean ± std over seeds (n), and tokens per run:", "",
                  "| bin | " + " | ".join(arms) + " |", "|---|" + "---|" * len(arms)]
        for b in bins:
            cells = [_cell([r for r in runs if r["space"] == space and r["bin"] == b and r["arm"] == a]) for a in arms]
            lines.append(f"| {b} | " + " | ".join(cells) + " |")
        lines.append("")
    if len(spaces) > 1:
        lines += _spaces_tables(runs, bins, spaces, split)
    lines += [f"| space | bin | arm | seed | parameters | evaluations (distinct) | tokens | {split} ppl |",
              "|---|---|---|---|---|---|---|---|"]
    for r in runs:
        lines.append(f"| {r['space']} | {r['bin']} | {r['arm']} | {r['seed']} | {r['parameters']:,} | "
                     f"{r['evaluations']} ({r.get('distinct_evaluations', '?')}) | {r.get('tokens', 0):,} | "
                     f"{r['val_perplexity']:,.1f} |")
    corr = results.get("importance_correlation", {})
    if corr:
        lines += ["", "| bin | candidates | Spearman(importance, −perplexity) |", "|---|---|---|"]
        lines += [f"| {b} | {c['candidates']} | {c['spearman']:.2f} |" for b, c in corr.items()]
    if args.plots:
        if len(spaces) > 1:
            _plot_spaces(runs, bins, spaces, full, split)
        else:
            _plot([r for r in runs if r["space"] == spaces[0]], bins, arms, full)
    return "\n".join(lines)


def _spaces_tables(runs: list[dict[str, Any]], bins: list[str], spaces: list[str], split: str) -> list[str]:
    """The four spaces side by side (arm ``default``), and each space against coarse-uniform and the
    one-shot prune seed by seed: the issue's targets (no worse than one-shot; within 5% of its own
    subset, coarse-uniform)."""
    def rows(space: str, b: str, arm: str = "default") -> list[dict[str, Any]]:
        return [r for r in runs if r["space"] == space and r["bin"] == b and r["arm"] == arm]

    lines = [f"The four spaces (arm `default`; one-shot: the block-influence grid of coarse-uniform), {split} "
             "perplexity of the winner, mean ± std over seeds:", "",
             "| bin | one-shot | " + " | ".join(spaces) + " |", "|---|---|" + "---|" * len(spaces)]
    for b in bins:
        one = rows(spaces[0], b, "one-shot")
        lines.append(f"| {b} | {_cell(one)} | " + " | ".join(_cell(rows(sp, b)) for sp in spaces) + " |")
    base = "coarse-uniform"
    if base in spaces:
        lines += ["", f"Each space's winner against coarse-uniform's of the same bin and seed ({split} perplexity, "
                  "ratio − 1; mean, worst seed) and against the one-shot prune (seeds at or below it):", "",
                  "| bin | space | vs coarse-uniform, mean | worst seed | no worse than one-shot |", "|---|---|---|---|---|"]
        for b in bins:
            one = rows(base, b, "one-shot")
            for sp in spaces:
                pairs = [(r["val_perplexity"], c["val_perplexity"]) for r in rows(sp, b)
                         for c in rows(base, b) if c["seed"] == r["seed"]]
                if not pairs:
                    continue
                ratios = [v / c - 1 for v, c in pairs]
                beat = sum(v <= one[0]["val_perplexity"] * (1 + 1e-9) for v, _ in pairs) if one else None
                lines.append(f"| {b} | {sp} | {statistics.mean(ratios):+.1%} | {max(ratios):+.1%} | "
                             + (f"{beat} of {len(pairs)}" if beat is not None else "—") + " |")
    return lines + [""]


def _plot_spaces(runs: list[dict[str, Any]], bins: list[str], spaces: list[str], full: float, split: str) -> None:
    """Bars: each space's winner per bin (mean over seeds, the seeds as dots), the one-shot prune beside."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(bins), figsize=(4.2 * len(bins), 4), squeeze=False)
    for ax, b in zip(axes[0], bins):
        labels = ["one-shot", *spaces]
        for i, name in enumerate(labels):
            arm, space = ("one-shot", spaces[0]) if name == "one-shot" else ("default", name)
            vals = [r["val_perplexity"] for r in runs if r["bin"] == b and r["arm"] == arm and r["space"] == space]
            if not vals:
                continue
            ax.bar(i, statistics.mean(vals), color="0.7" if name == "one-shot" else f"C{i}")
            ax.plot([i] * len(vals), vals, "k.", ms=5)
        ax.axhline(full, color="k", ls="--", lw=1, label="full model")
        ax.set_xticks(range(len(labels)), labels, rotation=30, ha="right", fontsize=8)
        ax.set_yscale("log")
        ax.set_title(f"bin {b}")
        ax.set_ylabel(f"winner's {split} perplexity")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(DOCS / "search_spaces.png", dpi=110)
    plt.close(fig)


def _plot(runs: list[dict[str, Any]], bins: list[str], arms: list[str], full: float) -> None:
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
    ax.axhline(full, color="k", ls="--", label="full model")
    ax.set_xticks(np.arange(len(bins)) + 0.4 - width / 2, bins)
    ax.set_yscale("log")
    ax.set_ylabel("winner's validation perplexity (mean over seeds)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(DOCS / "search_quality_validation.png", dpi=110)
    plt.close(fig)


def collect(dirs: list[str], path: Path, val_name: str = "val64.json") -> None:
    """Rows from finished ``subnas search`` runs (their ``--out`` folders, named after the space, e.g.
    ``fine-uniform`` or ``fine-uniform-55M-65M``, each with the winner's ``subnas evaluate --json``
    output as ``val_name``), in this benchmark's format, into ``path``.

    For searches run with the CLI exactly as a user runs them, rather than by `run`'s arms."""
    runs = []
    for folder in map(Path, dirs):
        results = json.loads((folder / "results.json").read_text())
        val = json.loads((folder / val_name).read_text())
        study = results["bins"][0]
        lo, hi = study["bin"]
        # "default:search sequences 16-63 (256 tokens each)": tokens one confirmation scores.
        m = re.search(r"sequences (\d+)-(\d+) \((\d+) tokens", study.get("confirm_data", ""))
        per_confirm = (int(m[2]) - int(m[1]) + 1) * (int(m[3]) - 1) if m else 0
        used = int(study.get("budget_used", 0)) + per_confirm * len(study.get("confirmed", []))
        runs.append({"space": "-".join(folder.name.split("-")[:2]), "bin": f"{lo / 1e6:g}M-{hi / 1e6:g}M",
                     "seed": 0, "arm": "default", "evaluations": study["evaluations"],
                     "confirmations": len(study.get("confirmed", [])), "distinct_evaluations": study["evaluations"],
                     "tokens": used, "best_search_value": study["best_fitness"],
                     "confirmed_fitness": study.get("confirmed_fitness"), "parameters": study["best_parameters"],
                     "val_perplexity": val["perplexity"], "validation_tokens": val.get("tokens"),
                     "winner": _compact(study["best_subnet"])})
    setup = {"source": "subnas search default --space SPACE --bins ... --trials 40 --out SPACE (seed 0, every "
                         "other option at its default), winner scored by subnas evaluate --json", "runs": dirs,
             "validation": val_name}
    atomic_write_text(path, json.dumps({"setup": setup, "runs": runs,
                                        "full_model_validation_perplexity": math.nan}, indent=1) + "\n")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--bins", nargs="+", default=["85M-100M", "55M-65M", "110M-120M"])
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--arms", nargs="+", default=list(ARMS), choices=ARMS)
    p.add_argument("--budget", type=int, default=40, help="fitness evaluations per arm")
    p.add_argument("--spaces", nargs="+", default=["coarse-uniform"],
                   help="search spaces (every arm runs in each; the evaluation cache is shared)")
    p.add_argument("--seq-len", type=int, default=256)
    p.add_argument("--num-seqs", type=int, default=16, help="search-split sequences (subnas search's default)")
    p.add_argument("--val-seqs", type=int, default=64,
                   help="sequences of --report-data for the reported numbers (0: the whole split)")
    p.add_argument("--report-data", default="default:validation",
                   help="the held-out text every reported number is measured on (default:test: the split no "
                        "design decision read, for headline numbers)")
    p.add_argument("--batch-size", type=int, default=4, help="sequences per chunk the pruner sees")
    p.add_argument("--confirm", type=int, default=4,
                   help="evaluations of the budget that re-measure the best candidates (subnas search --confirm)")
    p.add_argument("--confirm-seqs", type=int, default=48,
                   help="search-split sequences after the first --num-seqs on which candidates are confirmed")
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    p.add_argument("--json", default=str(DOCS / "search_quality.json"))
    p.add_argument("--report", action="store_true", help="only print the tables (from the JSON)")
    p.add_argument("--collect", nargs="+", metavar="OUT",
                   help="rows from finished `subnas search --out OUT` runs (with OUT/val64.json) into --json")
    p.add_argument("--plots", action="store_true", help="with --report: redraw docs/benchmarks' two plots")
    args = p.parse_args()
    if args.collect:
        collect(args.collect, Path(args.json))
    elif not args.report:
        run(args)
    print(report(args))


if __name__ == "__main__":
    main()
