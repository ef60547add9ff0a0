"""Learning-rate sweep behind `subnas demo`'s per-run learning rates (docs/training.md).

For one extracted sub-network, trains it at an equal token budget three ways — distilled from the
full model, cross-entropy from the supernet's weights, cross-entropy from random init — at each
of a few peak learning rates, and records the perplexity each ends at on the corpus's *search*
split (held out from training, and never the validation split the demo reports: the rate is
chosen on other text than the number shown to the user).

Every finished run is merged into ``--out/lr_sweep.json`` at once, and a run already there is
skipped, so an interrupted sweep resumes by the same command. Finished runs keep no model
(only their log and summary), so the sweep needs little disk.

    python benchmarks/lr_sweep.py --subnet-dir runs/demo/subnet --tokens 32768 --out runs/lr_sweep
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import subnas  # noqa: E402,F401  (sets OMP_WAIT_POLICY before torch loads)
from subnas._io import atomic_write_text  # noqa: E402

METHODS = ("distilled", "cross-entropy", "random init")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--subnet-dir", required=True, help="an extracted sub-network of the default model")
    p.add_argument("--out", default="runs/lr_sweep", help="folder for the runs and lr_sweep.json")
    p.add_argument("--tokens", type=int, default=32_768, help="training tokens per run")
    p.add_argument("--seq-len", type=int, default=128)
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--warmup-steps", type=int, default=8)
    p.add_argument("--eval-seqs", type=int, default=16)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--lrs", default="distilled=1e-4,3e-4,1e-3;cross-entropy=1e-4,3e-4,1e-3;"
                                    "random init=1e-3,3e-3,1e-2",
                   help="per method, 'METHOD=LR,LR;METHOD=LR,...'")
    return p.parse_args(argv)


def parse_lrs(spec: str) -> list[tuple[str, float]]:
    """``"distilled=1e-4,3e-4;random init=1e-3"`` -> [(method, lr), ...]; unknown methods are errors."""
    out = []
    for part in filter(None, (s.strip() for s in spec.split(";"))):
        method, _, values = part.partition("=")
        if method not in METHODS:
            raise SystemExit(f"--lrs: unknown method {method!r}; the methods are {list(METHODS)}")
        out += [(method, float(v)) for v in values.split(",") if v.strip()]
    return out


def run_one(method: str, lr: float, args: argparse.Namespace, teacher: Any, folder: Path) -> dict[str, Any]:
    from subnas.training import distill, pretrain

    options = dict(seq_len=args.seq_len, batch_size=args.batch_size, max_tokens=args.tokens, lr=lr, min_lr=lr / 10,
                   warmup_steps=args.warmup_steps, eval_seqs=args.eval_seqs, seed=args.seed, val_data="default:search",
                   eval_every=0, checkpoint_every=10_000, tensorboard=False)
    start = time.perf_counter()
    if method == "distilled":
        result = distill(teacher, "default", folder, student=args.subnet_dir, **options)
    else:
        result = pretrain(args.subnet_dir, "default", folder, init="random" if method == "random init" else "pretrained",
                          **options)
    from subnas.demo import read_curve

    curve = read_curve(Path(result["log"]))  # a point at 0 tokens is the untrained sub-network's perplexity
    return {"method": method, "lr": lr, "tokens": result["tokens"], "search_perplexity": result["val_perplexity"],
            "start_perplexity": curve[0][1] if curve and curve[0][0] == 0 else None,
            "tokens_per_s": result["tokens_per_s"], "seconds": time.perf_counter() - start}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    from subnas.supernet import Supernet

    args = parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "lr_sweep.json"
    results = json.loads(path.read_text()) if path.is_file() else {"setup": {}, "runs": []}
    setup = {k: getattr(args, k) for k in ("subnet_dir", "tokens", "seq_len", "batch_size", "warmup_steps",
                                           "eval_seqs", "seed")}
    if results["runs"] and results["setup"] != setup:
        raise SystemExit(f"{path} holds a sweep with another setup ({results['setup']}); give another --out")
    results["setup"] = setup
    teacher = None
    for method, lr in parse_lrs(args.lrs):
        if any(r["method"] == method and r["lr"] == lr for r in results["runs"]):
            continue
        if method == "distilled" and teacher is None:
            teacher = Supernet.from_pretrained("default")
        folder = out / f"{method.replace(' ', '-')}_lr{lr:g}"
        row = run_one(method, lr, args, teacher, folder)
        shutil.rmtree(folder / "model", ignore_errors=True)  # the sweep needs the number, not the weights
        results["runs"].append(row)
        atomic_write_text(path, json.dumps(results, indent=2) + "\n")
        print(f"{method:<14} lr {lr:<8g} search-split perplexity {row['search_perplexity']:10.2f} "
              f"({row['tokens']:,} tokens, {row['tokens_per_s']:.0f} tokens/s)", flush=True)
    best = {}
    for method in METHODS:
        rows = [r for r in results["runs"] if r["method"] == method]
        if rows:
            best[method] = min(rows, key=lambda r: r["search_perplexity"])["lr"]
    results["best_lr"] = best
    atomic_write_text(path, json.dumps(results, indent=2) + "\n")
    print("best learning rate per method:", best)
    return results


if __name__ == "__main__":
    main()
