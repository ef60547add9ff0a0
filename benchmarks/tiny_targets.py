"""Tiny targets (issue #13): the best 10M / 50M / 100M sub-networks of SmolLM2, with and without
vocabulary pruning, in bits per byte on validation text, before and after a short distillation.

    python benchmarks/tiny_targets.py                          # -> benchmarks/results/tiny_targets.json + plot
    python benchmarks/tiny_targets.py --bins 10M --trials 12   # one bin, a smaller search

For every bin (±10% around the target) and both variants — ``full`` (the paper's spaces: the whole
49,152-token vocabulary) and ``pruned`` (the same space plus the vocabulary choice 4k/8k/16k/32k/
full, `subnas.vocab`) — it

1. searches the coarse-uniform space (importance order, evolution seeded with the one-shot prunes)
   ranking every candidate by bits per byte on the *search* split;
2. reports the winner's bits per byte and per-token perplexity on the *validation* split;
3. distils the extracted winner from the teacher for the same number of training tokens (the
   teacher restricted to the student's kept tokens for a pruned vocabulary: same weights, the
   softmax over the kept rows), then reports validation bits per byte again;
4. for the smallest pruned winner, checks that its export loads with stock ``AutoModelForCausalLM``
   + ``AutoTokenizer`` in a process that never imports subnas and round-trips validation text.

Results are merged into the JSON after every step (atomic writes), so a stopped run resumes where
it stopped; the plot (bits per byte vs parameters) is redrawn at the end. Budgets default to what
a shared 2-core CPU does in well under an hour; raise ``--trials`` and ``--distill-tokens`` on a
bigger machine.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402

HERE = Path(__file__).resolve().parent
BINS = {"10M": (9_000_000, 11_000_000), "50M": (45_000_000, 55_000_000), "100M": (90_000_000, 110_000_000)}
VARIANTS = ("full", "pruned")


def load(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text()) if path.is_file() else {"runs": {}}


def save(path: Path, data: dict[str, Any]) -> None:
    from subnas._io import atomic_write_text

    atomic_write_text(path, json.dumps(data, indent=2) + "\n")


def validation(supernet: Any, subnet: Any, args: argparse.Namespace) -> dict[str, Any]:
    from subnas.evaluation._perplexity import evaluate

    r = evaluate(supernet, data="default:validation", subnet=subnet, seq_len=args.val_seq_len,
                 num_seqs=args.val_seqs, progress=False)
    return {k: r[k] for k in ("bits_per_byte", "perplexity", "bytes", "tokens", "parameters", "vocab_size")}


def shape(subnet: Any, supernet: Any) -> dict[str, Any]:
    """The winner's sizes (its index sets stay in its best_subnet_file)."""
    r = subnet.resolve(supernet.subnas_config)

    def one(values: list[int]) -> Any:
        return values[0] if len(set(values)) == 1 else values

    return {"n_layers": len(r.layers), "n_embd": len(r.embd), "layers": [s.layer for s in r.layers],
            "num_heads": one([s.num_heads for s in r.layers]), "query_groups": one([s.query_groups for s in r.layers]),
            "head_size": one([s.head_size for s in r.layers]),
            "intermediate_size": one([s.intermediate_size for s in r.layers]),
            "vocab_size": r.vocab_size(supernet.subnas_config)}


def run_search(supernet: Any, bin_name: str, variant: str, args: argparse.Namespace, work: Path) -> dict[str, Any]:
    from subnas.search import search

    choices = {"vocab_size": "default"} if variant == "pruned" else {}
    result = search(supernet, space="coarse-uniform", bins=[BINS[bin_name]], data="default:search",
                    seq_len=args.seq_len, num_seqs=args.num_seqs, trials=args.trials, seed=args.seed,
                    out_dir=work / f"search-{bin_name}-{variant}", space_choices=choices,
                    fitness_options={"metric": "bits_per_byte"}, progress=False)
    entry = result["bins"][0]
    return {"best_subnet_file": entry["best_subnet_file"], "search_bits_per_byte": entry["best_fitness"],
            "evaluations": entry["evaluations"], "metric": entry["metric"]}


def run_distill(supernet: Any, subnet: Any, name: str, args: argparse.Namespace, work: Path) -> dict[str, Any]:
    """Distil the extracted ``subnet`` from the teacher for ``--distill-tokens`` tokens.

    `subnas.training.distill` extracts the student into ``<run>/init`` and, for a pruned vocabulary,
    trains it on text read through its own pruned tokenizer against the teacher restricted to the
    kept tokens (`subnas.training._run.teacher_for_student`: the full model's weights, softmax over the kept
    rows).
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from subnas.data import resolve_text_source
    from subnas.evaluation._perplexity import bits_per_byte, mean_token_nll, nll_to_perplexity, target_bytes, tokenize_for_eval
    from subnas.training import distill

    out_dir = work / f"distill-{name}"
    steps = args.distill_tokens // (args.batch_size * args.seq_len)
    t0 = time.time()
    try:
        summary = distill(supernet, "default:train", out_dir, subnet=subnet, val_data=None, seq_len=args.seq_len,
                          batch_size=args.batch_size, max_tokens=args.distill_tokens, eval_every=0, eval_seqs=4,
                          checkpoint_every=max(1, steps // 2), teacher_cache="off", progress=False,
                          tensorboard=False, bf16=False)
    finally:
        supernet.model.requires_grad_(False)
    # The trained student itself (stock Llama or Mistral class), on the validation tokens of its own
    # tokenizer; read back from the run folder (a finished run returns at once without training).
    tokenizer = AutoTokenizer.from_pretrained(out_dir / "model")
    tokens = tokenize_for_eval(resolve_text_source("default:validation"), tokenizer, args.val_seq_len, args.val_seqs)
    student = AutoModelForCausalLM.from_pretrained(out_dir / "model", dtype=torch.float32).eval()
    nll = mean_token_nll(student, tokens, progress=False)
    after = {"bits_per_byte": bits_per_byte(nll, tokens, target_bytes(tokenizer, tokens)),
             "perplexity": nll_to_perplexity(nll), "bytes": target_bytes(tokenizer, tokens),
             "tokens": int(tokens.numel()), "parameters": sum(p.numel() for p in student.parameters())}
    return {"distill_tokens": args.distill_tokens, "distill_seconds": round(time.time() - t0, 1),
            "final_loss": summary.get("final_loss"), "after": after}


STOCK_CHECK = r"""
import json, sys, torch
from transformers import AutoModelForCausalLM, AutoTokenizer
path, texts = sys.argv[1], json.load(open(sys.argv[2]))
tok = AutoTokenizer.from_pretrained(path)
model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
print(json.dumps({"round_trip": all(tok.decode(tok.encode(t, add_special_tokens=False)) == t for t in texts),
                  "documents": len(texts), "subnas_imported": "subnas" in sys.modules, "vocab": len(tok),
                  "parameters": sum(p.numel() for p in model.parameters()), "class": type(model).__name__}))
"""


def stock_check(supernet: Any, subnet: Any, work: Path) -> dict[str, Any]:
    from subnas import extract
    from subnas.data import resolve_text_source

    folder = work / "export-10M-pruned"
    extract(supernet, subnet, folder, overwrite=True)
    texts = work / "validation_texts.json"
    texts.write_text(json.dumps(resolve_text_source("default:validation")))
    proc = subprocess.run([sys.executable, "-c", STOCK_CHECK, str(folder), str(texts)], capture_output=True,
                          text=True, check=True, env={**os.environ, "PYTHONPATH": ""})
    return json.loads(proc.stdout.strip().splitlines()[-1])


def plot(data: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for variant, color in (("full", "tab:blue"), ("pruned", "tab:orange")):
        rows = sorted((r for r in data["runs"].values() if r["variant"] == variant and "validation" in r),
                      key=lambda r: r["validation"]["parameters"])
        if not rows:
            continue
        xs = [r["validation"]["parameters"] for r in rows]
        label = "full vocabulary" if variant == "full" else "vocabulary pruned"
        ax.plot(xs, [r["validation"]["bits_per_byte"] for r in rows], "o--", color=color, label=f"{label}, searched")
        after = [(r["validation"]["parameters"], r["after"]["bits_per_byte"]) for r in rows if "after" in r]
        if after:
            ax.plot(*zip(*after), "s-", color=color, label=f"{label}, distilled")
    teacher = data.get("teacher")
    if teacher:
        ax.axhline(teacher["bits_per_byte"], color="gray", lw=1, ls=":", label="teacher (134.5M)")
    ax.set_xscale("log")
    ax.set_xlabel("parameters")
    ax.set_ylabel("bits per byte (validation)")
    ax.set_title("SmolLM2 sub-networks: bits per byte vs parameters")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=str(HERE / "results" / "tiny_targets.json"))
    parser.add_argument("--plot", default=str(HERE.parent / "docs" / "benchmarks" / "tiny_targets.png"))
    parser.add_argument("--work", default="runs/tiny_targets", help="search studies, exports and training runs")
    parser.add_argument("--bins", nargs="+", default=list(BINS), choices=list(BINS))
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    parser.add_argument("--trials", type=int, default=24, help="search evaluations per bin and variant")
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--num-seqs", type=int, default=8, help="search fitness: sequences of the search split")
    parser.add_argument("--val-seq-len", type=int, default=256)
    parser.add_argument("--val-seqs", type=int, default=16)
    parser.add_argument("--distill-tokens", type=int, default=65_536, help="training tokens, the same for every run")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from subnas import SubNetwork, Supernet

    out, work = Path(args.out), Path(args.work)
    out.parent.mkdir(parents=True, exist_ok=True)
    work.mkdir(parents=True, exist_ok=True)
    data = load(out)
    setup = {k: v for k, v in vars(args).items() if k not in ("out", "plot", "work", "threads", "bins", "variants")}
    data.setdefault("setup", setup)  # the first run's budgets; every row records its own distill_tokens
    if setup != data["setup"]:
        print(f"note: budgets differ from the recorded run's {data['setup']}", flush=True)
    supernet = Supernet.from_pretrained("default")
    supernet.model.requires_grad_(False)
    if "teacher" not in data:
        data["teacher"] = validation(supernet, None, args)
        save(out, data)
    for bin_name in args.bins:
        for variant in args.variants:
            key = f"{bin_name}/{variant}"
            row = data["runs"].setdefault(key, {"bin": list(BINS[bin_name]), "variant": variant})
            if "search" not in row:
                row["search"] = run_search(supernet, bin_name, variant, args, work)
                save(out, data)
            subnet = SubNetwork.load(row["search"]["best_subnet_file"])
            if "validation" not in row:
                row["validation"] = validation(supernet, subnet, args)
                row["subnet"] = shape(subnet, supernet)
                save(out, data)
            print(key, "validation", row["validation"], flush=True)
            if "after" not in row and args.distill_tokens > 0:
                row.update(run_distill(supernet, subnet, f"{bin_name}-{variant}", args, work))
                save(out, data)
                print(key, "distilled", row["after"], flush=True)
            if bin_name == "10M" and variant == "pruned" and "stock_check" not in row:
                row["stock_check"] = stock_check(supernet, subnet, work)
                save(out, data)
    plot(data, Path(args.plot))
    print(json.dumps({k: {"val_bpb": r.get("validation", {}).get("bits_per_byte"),
                          "after_bpb": r.get("after", {}).get("bits_per_byte")} for k, r in data["runs"].items()},
                     indent=1))


if __name__ == "__main__":
    main()
