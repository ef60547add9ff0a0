"""Train once, extract many? Supernet training vs per-bin distillation at equal tokens (docs/benchmarks/supernet_training.md).

On the real SmolLM2-135M, every arm gets the same budget of T training tokens:

- ``per-bin``: search each bin on the original model, distil each winner for T/3 tokens;
- ``sandwich``: `subnas.train_supernet` with the sandwich strategy for T tokens, then search each
  bin on the trained supernet and extract the winners; no further training;
- ``random``: the same with the random strategy;
- ``sandwich-largest``: the sandwich with in-place distillation from the largest sub-network
  instead of the frozen original (the measurement behind ``--distill-from``'s default).

Every model is scored on the validation split (text no arm trained or searched on), next to the
teacher and the untrained search winners (the one-shot prunes, "search only"). Searches are cheap
on purpose: the evolution sampler's first trials are the one-shot depth x width grid in importance
order, and ``--trials`` stops there. ``resume`` kills a 3-step sandwich run on the real model after
step 2 and checks that the resumed run ends with the uninterrupted run's weights, bit for bit.

Each finished arm is merged into ``--out/supernet_training.json`` at once; running the same command
again resumes (finished arms are read back; a training run continues from its checkpoint).

    python benchmarks/supernet_training.py --out runs/supernet_training
    python benchmarks/supernet_training.py --out runs/supernet_training --report   # table + plot only
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path
from typing import Any, Callable

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import subnas  # noqa: E402  (sets OMP_WAIT_POLICY before torch loads)
from subnas._io import atomic_write_text  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
ARMS = ("teacher", "resume", "sandwich", "per-bin", "random", "sandwich-largest")
LABELS = {"per-bin": "per-bin distillation", "sandwich": "supernet: sandwich", "random": "supernet: random",
          "sandwich-largest": "supernet: sandwich, in-place KD", "search-only": "search only (untrained)"}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="runs/supernet_training", help="folder for the runs and supernet_training.json")
    p.add_argument("--model", default="default", help="the model (a folder, for a dry run on a tiny one)")
    p.add_argument("--arms", nargs="+", default=list(ARMS), choices=ARMS)
    p.add_argument("--tokens", type=int, default=61_440, help="T: training tokens of every arm (per-bin: T/3 per bin)")
    p.add_argument("--bins", nargs="+", default=["55M-65M", "85M-100M", "110M-120M"])
    p.add_argument("--sizes", default="55M-135M", help="the supernet arms' size range")
    p.add_argument("--space", default="coarse-uniform")
    p.add_argument("--calibration", default="default:calibration", help="text of the importance order (or 'weights')")
    p.add_argument("--seq-len", type=int, default=256)
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--micro-batch-size", type=int, default=2)
    p.add_argument("--lr", type=float, default=3e-4, help="peak learning rate (distillation's, docs/training.md)")
    p.add_argument("--warmup-steps", type=int, default=4)
    p.add_argument("--random-samples", type=int, default=2, help="random sub-networks per sandwich step")
    p.add_argument("--trials", type=int, default=10, help="search evaluations per bin")
    p.add_argument("--search-seqs", type=int, default=4, help="search fitness: sequences of --seq-len tokens")
    p.add_argument("--eval-seqs", type=int, default=32, help="validation sequences of --seq-len tokens")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--docs", default=str(ROOT / "docs/benchmarks"), help="where the JSON copy and the plot go")
    p.add_argument("--report", action="store_true", help="only the table and plot, from the JSON")
    p.add_argument("--subnets-from", default=None,
                   help="supernet arms: score these bin*_best_subnet.json (another arm's search) instead of searching")
    p.add_argument("--merge", nargs="*", default=[], help="also report the arms of these results files")
    return p.parse_args(argv)


# ---------------------------------------------------------------------------- helpers
def load(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text()) if path.is_file() else {"arms": {}}


def save(path: Path, results: dict[str, Any]) -> None:
    atomic_write_text(path, json.dumps(results, indent=2) + "\n")


def timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def train_options(args: argparse.Namespace, tokens: int) -> dict[str, Any]:
    return dict(max_tokens=tokens, seq_len=args.seq_len, batch_size=args.batch_size,
                micro_batch_size=args.micro_batch_size, lr=args.lr, min_lr=args.lr / 10,
                warmup_steps=args.warmup_steps, seed=args.seed, eval_every=0, eval_seqs=args.eval_seqs,
                checkpoint_every=8, progress=False, tensorboard=False)


def validation(model: Any, args: argparse.Namespace, subnet: Any = None) -> float:
    from subnas.evaluation import evaluate

    return float(evaluate(model, data="default:validation", subnet=subnet, seq_len=args.seq_len,
                          num_seqs=args.eval_seqs, progress=False)["perplexity"])


def search_bins(model: Any, args: argparse.Namespace, out: Path) -> list[dict[str, Any]]:
    result = subnas.search(model, space=args.space, bins=args.bins, data="default:search", seq_len=args.seq_len,
                           num_seqs=args.search_seqs, confirm=0, trials=args.trials, out_dir=out, seed=args.seed,
                           calibration=args.calibration, progress=False)
    return [{"bin": b["bin"], "subnet": b["best_subnet"], "parameters": b["best_parameters"],
             "search_perplexity": b["best_fitness"]} for b in result["bins"]]


# ---------------------------------------------------------------------------- arms
def arm_teacher(args: argparse.Namespace, out: Path) -> dict[str, Any]:
    full = subnas.Supernet.from_pretrained(args.model)
    return {"parameters": full.count_parameters(), "val_perplexity": validation(full, args)}


def arm_per_bin(args: argparse.Namespace, out: Path) -> dict[str, Any]:
    from subnas.training import distill

    supernet = subnas.Supernet.from_pretrained(args.model)
    winners, search_s = timed(lambda: search_bins(supernet, args, out / "search"))
    train_s, tokens = 0.0, 0
    for w in winners:
        w["search_only_val_perplexity"] = validation(supernet, args, subnas.SubNetwork.from_dict(w["subnet"]))
        run = out / f"distill-{w['bin'][0]}"
        summary, seconds = timed(lambda: distill(supernet, "default", run, subnet=w["subnet"], val_data=None,
                                                 **train_options(args, args.tokens // len(winners))))
        train_s += seconds
        tokens += summary["tokens"]
        w["val_perplexity"] = validation(summary["model_dir"], args)
        w["train_seconds"] = seconds
    return {"bins": winners, "tokens": tokens, "search_seconds": search_s, "train_seconds": train_s,
            "wall_seconds": search_s + train_s}


def arm_supernet(strategy: str, distill_from: str) -> Callable[[argparse.Namespace, Path], dict[str, Any]]:
    def run(args: argparse.Namespace, out: Path) -> dict[str, Any]:
        options = {"random_samples": args.random_samples} if strategy == "sandwich" else {}
        summary, train_s = timed(lambda: subnas.train_supernet(
            args.model, "default", out / "train", space=args.space, strategy=strategy, sizes=args.sizes,
            distill_from=distill_from, strategy_options=options, val_data=None, calibration=args.calibration, **train_options(args, args.tokens)))
        model_dir = summary["model_dir"]
        trained = subnas.Supernet.from_pretrained(model_dir)
        if args.subnets_from:  # the same sub-networks as another arm: a comparison of the training alone
            winners, search_s, extract_s = [], 0.0, 0.0
            for i, b in enumerate(args.bins):
                subnet = subnas.SubNetwork.load(Path(args.subnets_from) / f"bin{i}_best_subnet.json")
                bin = subnas.ParameterBin.parse(b)
                winners.append({"bin": [bin.lo, bin.hi], "subnet": subnet.to_dict(),
                                "parameters": trained.count_parameters(subnet),
                                "val_perplexity": validation(trained, args, subnet)})  # in place == exported
            return {"bins": winners, "tokens": summary["tokens"], "steps": summary["steps"], "train_seconds": train_s,
                    "search_seconds": 0.0, "extract_seconds": 0.0, "wall_seconds": train_s,
                    "subnets_from": args.subnets_from, "full_val_perplexity": validation(trained, args),
                    "strategy": strategy, "distill_from": distill_from, "sizes": summary["supernet"]["sizes"],
                    "final_loss": summary["final_loss"]}
        winners, search_s = timed(lambda: search_bins(trained, args, out / "search"))
        extract_s = 0.0
        for w in winners:
            folder = out / f"extract-{w['bin'][0]}"
            _, seconds = timed(lambda: subnas.extract(trained, w["subnet"], folder, overwrite=True))
            extract_s += seconds
            w["val_perplexity"] = validation(str(folder), args)  # the extracted model, as a user gets it
        return {"bins": winners, "tokens": summary["tokens"], "steps": summary["steps"], "train_seconds": train_s,
                "search_seconds": search_s, "extract_seconds": extract_s, "wall_seconds": train_s + search_s + extract_s,
                "full_val_perplexity": validation(trained, args), "strategy": strategy, "distill_from": distill_from,
                "sizes": summary["supernet"]["sizes"], "final_loss": summary["final_loss"]}
    return run


def arm_resume(args: argparse.Namespace, out: Path) -> dict[str, Any]:
    """Kill a 3-step sandwich run on the real model after step 2 (checkpointed every step), resume
    it, and compare its final weights with an uninterrupted run's."""
    import torch
    from safetensors.torch import load_file

    kw = dict(space=args.space, strategy="sandwich", sizes=args.sizes, calibration=args.calibration, strategy_options={"random_samples": 1},
              val_data=None, max_steps=3, checkpoint_every=1, seq_len=64, batch_size=2, lr=args.lr, seed=args.seed,
              eval_every=0, progress=False, tensorboard=False)
    for name in ("straight", "killed"):
        shutil.rmtree(out / name, ignore_errors=True)
    (_, straight_s) = timed(lambda: subnas.train_supernet(args.model, "default", out / "straight", **kw))

    def kill(info: dict[str, Any]) -> None:
        if info["step"] == 2:
            raise KeyboardInterrupt

    t0 = time.perf_counter()
    try:
        subnas.train_supernet(args.model, "default", out / "killed", on_step=kill, **kw)
    except KeyboardInterrupt:
        pass
    resumed = subnas.train_supernet(args.model, "default", out / "killed", **kw)
    killed_s = time.perf_counter() - t0
    a = load_file(out / "straight" / "model" / "model.safetensors")
    b = load_file(out / "killed" / "model" / "model.safetensors")
    identical = a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    return {"steps": 3, "killed_after_step": 2, "resumed_from": resumed["resumed_from"],
            "bit_identical": identical, "tensors": len(a), "straight_seconds": straight_s,
            "killed_and_resumed_seconds": killed_s}


RUNNERS: dict[str, Callable[[argparse.Namespace, Path], dict[str, Any]]] = {
    "teacher": arm_teacher, "per-bin": arm_per_bin, "sandwich": arm_supernet("sandwich", "teacher"),
    "random": arm_supernet("random", "teacher"), "resume": arm_resume,
    "sandwich-largest": arm_supernet("sandwich", "largest")}


# ---------------------------------------------------------------------------- report
SIZES = ("n_layers", "n_embd", "num_heads", "query_groups", "head_size", "intermediate_size")


def compact(results: dict[str, Any]) -> dict[str, Any]:
    """The results with each sub-network's sizes only: the index sets (megabytes) stay in the run
    folders' bin*_best_subnet.json files."""
    out = json.loads(json.dumps(results))
    for arm in out["arms"].values():
        for w in arm.get("bins", []):
            w["subnet"] = {k: w["subnet"][k] for k in SIZES if k in w["subnet"]}
    return out


def table(results: dict[str, Any]) -> str:
    arms = results["arms"]
    teacher = arms.get("teacher", {})
    lines = ["| arm | tokens | wall time (train + search + extract) | "
             + " | ".join(f"bin {b}" for b in results["config"]["bins"]) + " | full model |",
             "|---|---|---|" + "---|" * (len(results["config"]["bins"]) + 1)]
    if "per-bin" in arms:
        cells = [f"{w['search_only_val_perplexity']:.1f} ({w['parameters'] / 1e6:.1f}M)" for w in arms["per-bin"]["bins"]]
        lines.append(f"| {LABELS['search-only']} | 0 | – | " + " | ".join(cells) + " | – |")
    for name in ("per-bin", "sandwich", "random", "sandwich-largest"):
        if name not in arms:
            continue
        arm = arms[name]
        cells = [f"{w['val_perplexity']:.1f} ({w['parameters'] / 1e6:.1f}M)" for w in arm["bins"]]
        full = f"{arm['full_val_perplexity']:.2f}" if "full_val_perplexity" in arm else "–"
        lines.append(f"| {LABELS[name]} | {arm['tokens']:,} | {arm['wall_seconds'] / 60:.1f} min | "
                     + " | ".join(cells) + f" | {full} |")
    if teacher:
        lines.append(f"| teacher (SmolLM2-135M) | – | – | " + " | ".join("" for _ in results["config"]["bins"])
                     + f" | {teacher['val_perplexity']:.2f} |")
    return "\n".join(lines)


def plot(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    arms = results["arms"]
    fig, ax = plt.subplots(figsize=(7, 4.5))
    if "per-bin" in arms:
        pts = [(w["parameters"] / 1e6, w["search_only_val_perplexity"]) for w in arms["per-bin"]["bins"]]
        ax.plot(*zip(*pts), "x:", color="gray", label=LABELS["search-only"])
    for name, style in (("per-bin", "o-"), ("sandwich", "s-"), ("random", "^-"), ("sandwich-largest", "d--")):
        if name in arms:
            pts = [(w["parameters"] / 1e6, w["val_perplexity"]) for w in arms[name]["bins"]]
            ax.plot(*zip(*pts), style, label=LABELS[name])
    if "teacher" in arms:
        ax.axhline(arms["teacher"]["val_perplexity"], color="black", lw=0.8, label="teacher (135M)")
    ax.set_yscale("log")
    ax.set_xlabel("parameters (M)")
    ax.set_ylabel("validation perplexity")
    ax.set_title(f"equal budget: {results['config']['tokens']:,} training tokens per arm")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> str:
    args = parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "supernet_training.json"
    results = load(path)
    config = {k: v for k, v in vars(args).items() if k not in ("out", "docs", "report", "arms", "merge", "subnets_from")}
    if results.get("config") not in (None, config):
        raise SystemExit(f"{path} holds results of other settings ({results['config']}); give a new --out")
    results["config"] = config
    if not args.report:
        import torch

        results.setdefault("machine", {"torch": torch.__version__, "threads": torch.get_num_threads()})
        for name in args.arms:
            if name in results["arms"]:
                continue
            print(f"[{time.strftime('%H:%M:%S')}] {name} ...", flush=True)
            t0 = time.perf_counter()
            results["arms"][name] = {**RUNNERS[name](args, out / name), "arm_seconds": time.perf_counter() - t0}
            save(path, results)
            print(f"[{time.strftime('%H:%M:%S')}] {name}: {json.dumps(results['arms'][name])[:400]}", flush=True)
    for other in args.merge:  # arms run into another folder (e.g. alongside, with --subnets-from)
        found = load(Path(other))
        if found.get("config") != config:
            raise SystemExit(f"{other} holds results of other settings; cannot merge")
        results["arms"].update({k: v for k, v in found["arms"].items() if k not in results["arms"]})
    for name, arm in results["arms"].items():  # gradient norms per step, from the runs' logs (the verdict cites them)
        logs = sorted((out / name).glob("*/log.csv")) if name != "resume" else []
        if logs and "grad_norms" not in arm:
            arm["grad_norms"] = {log.parent.name: [float(r.split(",")[6]) for r in log.read_text().splitlines()[1:]
                                                   if r.split(",")[6]] for log in logs}
    docs = Path(args.docs)
    save(docs / "supernet_training.json", compact(results))
    plot(results, docs / "supernet_training.png")
    text = table(results)
    print(text)
    return text


if __name__ == "__main__":
    main()
