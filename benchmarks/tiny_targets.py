"""Tiny targets (issue #13): the best 10M / 50M / 100M sub-networks of SmolLM2, with and without
vocabulary pruning, in bits per byte over the same bytes for every vocabulary.

    python benchmarks/tiny_targets.py                          # -> benchmarks/results/tiny_targets.json + plot
    python benchmarks/tiny_targets.py --bins 10M --trials 12   # one bin, a smaller search
    python benchmarks/tiny_targets.py --rescore                # only score what is recorded (no search/training)
    python benchmarks/tiny_targets.py --report                 # the tables of docs/benchmarks/tiny_targets.md

For every bin (±10% around the target) and both variants — ``full`` (the paper's spaces: the whole
49,152-token vocabulary) and ``pruned`` (the same space plus the vocabulary choice 4k/8k/16k/32k/
full, `subnas.vocab`) — it

1. searches the coarse-uniform space (importance order, evolution seeded with the one-shot prunes)
   ranking every candidate by bits per byte on the *search* split;
2. scores the winner on every document of ``--eval-data`` (default: the held-out *test* split),
   each document whole (`subnas.evaluation._perplexity.document_bits_per_byte`, windows of
   ``--val-seq-len`` predictions): every vocabulary is scored on exactly the same bytes, and the
   per-document values give the spread of a comparison;
3. distils the extracted winner from the teacher for the same number of training tokens (the
   teacher restricted to the student's kept tokens for a pruned vocabulary: same weights, the
   softmax over the kept rows), then scores the trained student the same way;
4. for the smallest pruned winner, checks that its export loads with stock ``AutoModelForCausalLM``
   + ``AutoTokenizer`` in a process that never imports subnas and round-trips validation text;
5. scores the teacher with only its vocabulary pruned (all layers, full width) at each of
   ``--teacher-vocab``'s sizes, on the same bytes.

A winner whose search folder is gone is rebuilt from its recorded sizes and layers and must give
its recorded first-protocol number again (16 x 256 validation tokens; `winner`), else the script
stops. Results are merged into the JSON after every step (atomic writes), so a stopped run resumes
where it stopped; the plot (bits per byte vs parameters) is redrawn at the end. Budgets default to
what a shared 2-core CPU does in about an hour; raise ``--trials`` and ``--distill-tokens`` on a
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
# The teacher-with-pruned-vocabulary table, in the order measured: the winners' vocabularies first.
TEACHER_VOCABS = (49_152, 16_384, 8_192, 32_768, 4_096)


def load(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text()) if path.is_file() else {"runs": {}}


def save(path: Path, data: dict[str, Any]) -> None:
    from subnas._io import atomic_write_text

    atomic_write_text(path, json.dumps(data, indent=2) + "\n")


def validation(supernet: Any, subnet: Any, args: argparse.Namespace) -> dict[str, Any]:
    """The first protocol (16 x 256 tokens of validation: a different prefix of the text for each
    vocabulary). Kept to check a rebuilt winner against its recorded number, not for verdicts."""
    from subnas.evaluation._perplexity import evaluate

    r = evaluate(supernet, data="default:validation", subnet=subnet, seq_len=args.val_seq_len,
                 num_seqs=args.val_seqs, progress=False)
    return {k: r[k] for k in ("bits_per_byte", "perplexity", "bytes", "tokens", "parameters", "vocab_size")}


def score_documents(model: Any, tokenizer: Any, texts: list[str], max_length: int) -> dict[str, Any]:
    """Bits per byte of every document whole (`document_bits_per_byte`): the same bytes whatever
    the vocabulary. Per-document values are kept, so a verdict can state its spread."""
    from subnas.evaluation._perplexity import document_bits_per_byte

    per = [document_bits_per_byte(model, tokenizer, [text], max_length=max_length) for text in texts]
    nbytes = [len(text.encode("utf-8")) for text in texts]
    return {"bits_per_byte": sum(b * n for b, n in zip(per, nbytes)) / sum(nbytes), "bytes": sum(nbytes),
            "documents": len(texts), "per_document": per, "max_length": max_length}


def equal_bytes(supernet: Any, subnet: Any, args: argparse.Namespace) -> dict[str, Any]:
    """``subnet`` (``None``: the teacher) in place, scored on every document of ``--eval-data``."""
    from subnas.data import resolve_text_source
    from subnas.evaluation._perplexity import supernet_tokenizer

    resolved = None if subnet is None else subnet.resolve(supernet.subnas_config)
    vocab = None if resolved is None else resolved.vocab
    supernet.model.eval()
    with supernet.sub_network(resolved):
        row = score_documents(supernet.model, supernet_tokenizer(supernet, vocab),
                              resolve_text_source(args.eval_data), args.val_seq_len)
        row["parameters"] = supernet.count_parameters(resolved)
    row["vocab_size"] = supernet.subnas_config.vocab_size if vocab is None else len(vocab)
    return {"data": args.eval_data, **row}


def rebuild(supernet: Any, recorded: dict[str, Any]) -> Any:
    """A winner from its recorded sizes and layers, when its search folder is gone: the coarse-uniform
    space's importance order (calibration split) and the most frequent tokens (`VocabOrder.kept`)."""
    from dataclasses import replace

    from subnas.search_driver import make_space

    space = make_space("coarse-uniform", supernet, order="importance", calibration="default:calibration",
                       choices={"vocab_size": "default"})
    order = space.order
    subnet = order.subnetwork(n_layers=recorded["n_layers"], n_embd=recorded["n_embd"],
                              num_heads=recorded["num_heads"], query_groups=recorded["query_groups"],
                              head_size=recorded["head_size"], intermediate_size=recorded["intermediate_size"],
                              ranks=[order.layers.index(layer) for layer in recorded["layers"]])
    return replace(subnet, **space.vocab.fields(recorded["vocab_size"]))


def winner(supernet: Any, row: dict[str, Any], args: argparse.Namespace) -> Any:
    """The row's searched sub-network: its file, or rebuilt from its record and checked to give the
    recorded validation bits per byte again (else it is not the same sub-network: stop)."""
    from subnas import SubNetwork

    path = Path(row["search"]["best_subnet_file"])
    if path.is_file():
        return SubNetwork.load(path)
    subnet = rebuild(supernet, row["subnet"])
    if "rebuilt_check" not in row:
        again = validation(supernet, subnet, args)["bits_per_byte"]
        row["rebuilt_check"] = {"recorded": row["validation"]["bits_per_byte"], "re_evaluated": again}
    check = row["rebuilt_check"]
    if abs(check["recorded"] - check["re_evaluated"]) > 1e-6:
        raise SystemExit(f"{path} is gone and the rebuilt winner scores {check['re_evaluated']} instead of the "
                         f"recorded {check['recorded']}: not the same sub-network")
    return subnet


def teacher_vocab(supernet: Any, sizes: list[int], data: dict[str, Any], out: Path,
                  args: argparse.Namespace) -> None:
    """The teacher with only its vocabulary pruned (all layers, full width), per size, on equal bytes."""
    from subnas import SubNetwork
    from subnas.search_driver import make_space

    space = make_space("coarse-uniform", supernet, order="importance", calibration="default:calibration",
                       choices={"vocab_size": "default"})
    rows = data.setdefault("teacher_vocab", {})
    for n in sizes:
        if str(n) not in rows:
            rows[str(n)] = equal_bytes(supernet, SubNetwork(**space.vocab.fields(n)), args)
            save(out, data)
            print("teacher vocabulary", n, round(rows[str(n)]["bits_per_byte"], 4), flush=True)


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
    from subnas.search_driver import search

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
    return {"distill_tokens": args.distill_tokens, "distill_seconds": round(time.time() - t0, 1),
            "final_loss": summary.get("final_loss"), "distilled_model": str(out_dir / "model")}


def after_distillation(model_dir: Path, args: argparse.Namespace) -> dict[str, Any]:
    """The trained student itself (a stock Llama or Mistral class) read through its own tokenizer,
    on every document of ``--eval-data``: the same bytes as every other row."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from subnas.data import resolve_text_source

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    student = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    row = score_documents(student, tokenizer, resolve_text_source(args.eval_data), args.val_seq_len)
    return {"data": args.eval_data, **row, "parameters": sum(p.numel() for p in student.parameters())}


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
        rows = sorted((r for r in data["runs"].values() if r["variant"] == variant and "equal_bytes" in r),
                      key=lambda r: r["equal_bytes"]["parameters"])
        if not rows:
            continue
        xs = [r["equal_bytes"]["parameters"] for r in rows]
        label = "full vocabulary" if variant == "full" else "vocabulary pruned"
        ax.plot(xs, [r["equal_bytes"]["bits_per_byte"] for r in rows], "o--", color=color, label=f"{label}, searched")
        after = [(r["equal_bytes"]["parameters"], r["after_equal_bytes"]["bits_per_byte"])
                 for r in rows if "after_equal_bytes" in r]
        if after:
            ax.plot(*zip(*after), "s-", color=color, label=f"{label}, distilled")
    teacher = data.get("teacher_vocab", {}).get("49152")
    if teacher:
        ax.axhline(teacher["bits_per_byte"], color="gray", lw=1, ls=":", label="teacher (134.5M)")
    ax.set_xscale("log")
    ax.set_xlabel("parameters")
    ax.set_ylabel(f"bits per byte ({data['equal_bytes_setup']['eval_data']}, every document)")
    ax.set_title("SmolLM2 sub-networks: bits per byte vs parameters (equal bytes)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def report(data: dict[str, Any]) -> str:
    """The tables of docs/benchmarks/tiny_targets.md from the JSON (``--report``): only rows scored
    on equal bytes; a full-vs-pruned gap per bin with its spread over the documents."""
    setup = data["equal_bytes_setup"]
    lines = [f"Every document of `{setup['eval_data']}`, scored whole in windows of {setup['max_length']} "
             "predictions (`document_bits_per_byte`): the same bytes for every vocabulary.", "",
             "| bin | vocabulary | parameters | layers × n_embd, heads/groups, head size, MLP | bits/byte | "
             "bits/byte after distillation |", "|---|---|---|---|---|---|"]
    for key, r in sorted(data["runs"].items(), key=lambda kv: (list(BINS).index(kv[0].split("/")[0]), kv[0])):
        if "equal_bytes" not in r:
            continue
        e, sub = r["equal_bytes"], r["subnet"]
        after = r.get("after_equal_bytes", {}).get("bits_per_byte")
        lines.append(f"| {key.split('/')[0]} | {e['vocab_size']:,}{' (full)' if r['variant'] == 'full' else ''} | "
                     f"{e['parameters']:,} | {sub['n_layers']} × {sub['n_embd']}, {sub['num_heads']}/"
                     f"{sub['query_groups']}, {sub['head_size']}, {sub['intermediate_size']} | "
                     f"{e['bits_per_byte']:.3f} | "
                     f"{'not measured on equal bytes' if after is None else f'{after:.3f}'} |")
    lines += ["", "| bin | pruned − full, bits/byte | per document: min … max | documents where full is better |",
              "|---|---|---|---|"]
    for bin_name in BINS:
        full, pruned = (data["runs"].get(f"{bin_name}/{v}", {}).get("equal_bytes") for v in VARIANTS)
        if full and pruned:
            gaps = [p - f for f, p in zip(full["per_document"], pruned["per_document"])]
            lines.append(f"| {bin_name} | {pruned['bits_per_byte'] - full['bits_per_byte']:+.3f} | "
                         f"{min(gaps):+.3f} … {max(gaps):+.3f} | {sum(g > 0 for g in gaps)} of {len(gaps)} |")
    teacher = data.get("teacher_vocab", {})
    if teacher:
        sizes = sorted(teacher, key=int)
        lines += ["", "| teacher's vocabulary | " + " | ".join(f"{int(n):,}" + (" (full)" if n == "49152" else "")
                                                         for n in sizes) + " |",
                  "|---|" + "---|" * len(sizes),
                  "| bits per byte | " + " | ".join(f"{teacher[n]['bits_per_byte']:.3f}" for n in sizes) + " |"]
    return "\n".join(lines)


def main() -> None:
    if "--report" in sys.argv:  # python benchmarks/tiny_targets.py --report [JSON]
        rest = sys.argv[sys.argv.index("--report") + 1:]
        print(report(load(Path(rest[0]) if rest else HERE / "results" / "tiny_targets.json")))
        return
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=str(HERE / "results" / "tiny_targets.json"))
    parser.add_argument("--plot", default=str(HERE.parent / "docs" / "benchmarks" / "tiny_targets.png"))
    parser.add_argument("--work", default="runs/tiny_targets", help="search studies, exports and training runs")
    parser.add_argument("--bins", nargs="+", default=list(BINS), choices=list(BINS))
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    parser.add_argument("--trials", type=int, default=24, help="search evaluations per bin and variant")
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--num-seqs", type=int, default=8, help="search fitness: sequences of the search split")
    parser.add_argument("--eval-data", default="default:test",
                        help="text every reported number is measured on, every document whole (equal bytes)")
    parser.add_argument("--val-seq-len", type=int, default=256, help="tokens per scoring window")
    parser.add_argument("--val-seqs", type=int, default=16, help="the first protocol's sequences (checks only)")
    parser.add_argument("--distill-tokens", type=int, default=65_536, help="training tokens, the same for every run")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--teacher-vocab", nargs="*", type=int, default=list(TEACHER_VOCABS),
                        help="vocabulary sizes of the teacher-with-pruned-vocabulary table")
    parser.add_argument("--rescore", action="store_true",
                        help="only score what is recorded (no search, no training): the equal-bytes numbers")
    parser.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from subnas import Supernet

    out, work = Path(args.out), Path(args.work)
    out.parent.mkdir(parents=True, exist_ok=True)
    work.mkdir(parents=True, exist_ok=True)
    data = load(out)
    setup = {k: v for k, v in vars(args).items() if k in ("trials", "seq_len", "num_seqs", "distill_tokens",
                                                          "batch_size", "seed")}
    data.setdefault("setup", setup)  # the first run's budgets; every row records its own distill_tokens
    if setup != {k: data["setup"].get(k) for k in setup}:
        print(f"note: budgets differ from the recorded run's {data['setup']}", flush=True)
    scoring = {"eval_data": args.eval_data, "max_length": args.val_seq_len}
    if data.setdefault("equal_bytes_setup", scoring) != scoring:
        raise SystemExit(f"{out} holds equal-bytes numbers for {data['equal_bytes_setup']}, not {scoring}; "
                         "give another --out")
    supernet = Supernet.from_pretrained("default")
    supernet.model.requires_grad_(False)
    teacher_vocab(supernet, args.teacher_vocab[:1], data, out, args)  # the reference first
    for bin_name in args.bins:
        for variant in args.variants:
            key = f"{bin_name}/{variant}"
            row = data["runs"].setdefault(key, {"bin": list(BINS[bin_name]), "variant": variant})
            if "search" not in row:
                if args.rescore:
                    continue
                row["search"] = run_search(supernet, bin_name, variant, args, work)
                save(out, data)
            subnet = winner(supernet, row, args)
            row.setdefault("subnet", shape(subnet, supernet))
            if "equal_bytes" not in row:
                row["equal_bytes"] = equal_bytes(supernet, subnet, args)
                save(out, data)
            print(key, "equal bytes", round(row["equal_bytes"]["bits_per_byte"], 4), flush=True)
            if "distilled_model" not in row and args.distill_tokens > 0 and not args.rescore:
                row.update(run_distill(supernet, subnet, f"{bin_name}-{variant}", args, work))
                save(out, data)
            model_dir = Path(row.get("distilled_model", work / f"distill-{bin_name}-{variant}" / "model"))
            if "after_equal_bytes" not in row and model_dir.is_dir():
                row["after_equal_bytes"] = after_distillation(model_dir, args)
                save(out, data)
                print(key, "distilled, equal bytes", round(row["after_equal_bytes"]["bits_per_byte"], 4), flush=True)
            if bin_name == "10M" and variant == "pruned" and "stock_check" not in row and not args.rescore:
                row["stock_check"] = stock_check(supernet, subnet, work)
                save(out, data)
    teacher_vocab(supernet, args.teacher_vocab[1:], data, out, args)
    plot(data, Path(args.plot))
    print(json.dumps({k: {"equal_bytes": r.get("equal_bytes", {}).get("bits_per_byte"),
                          "after_equal_bytes": r.get("after_equal_bytes", {}).get("bits_per_byte")}
                      for k, r in data["runs"].items()}, indent=1))


if __name__ == "__main__":
    main()
