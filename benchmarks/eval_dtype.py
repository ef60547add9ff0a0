"""Does bf16 evaluation rank the search's candidates as float32 does? Real SmolLM2-135M, CPU.

    python benchmarks/eval_dtype.py                  # 30 candidates of 85M-100M, 8 x 256 tokens (~10 min, 1 thread)
    python benchmarks/eval_dtype.py --report         # the markdown table of docs/benchmarks/eval_dtype.md

Candidates: the bin's one-shot prunes (the evolution's seeded initial population, `SearchSpace.one_shot`
in the importance order `subnas search` uses) and random in-bin samples of the coarse-uniform space,
up to ``--candidates``. Each is scored by the perplexity fitness's code path (`running_nll`) on the
first ``--num-seqs`` x ``--seq-len`` tokens of the search split, in float32 and under bf16 autocast,
alternately (so machine load drifts hit both alike), after one warm-up forward of each. Reported:
Spearman's rank correlation of the two perplexities, the winner each picks, the speed ratio, and a
batch-size sweep of one candidate's forward (what fills this CPU best). Writes ``--json``.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads OpenMP (see benchmarks/search_quality.py)

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import random  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import torch  # noqa: E402

HERE = Path(__file__).resolve().parent
DEFAULT_JSON = HERE / "results" / "eval_dtype.json"


def spearman(a: list[float], b: list[float]) -> float:
    """Spearman's rho (average ranks for ties) — scipy's ``spearmanr`` without scipy."""
    def ranks(x: list[float]) -> list[float]:
        order = sorted(range(len(x)), key=lambda i: x[i])
        out = [0.0] * len(x)
        i = 0
        while i < len(order):
            j = i
            while j + 1 < len(order) and x[order[j + 1]] == x[order[i]]:
                j += 1
            for k in range(i, j + 1):
                out[order[k]] = (i + j) / 2
            i = j + 1
        return out
    ra, rb = ranks(a), ranks(b)
    ma, mb = sum(ra) / len(ra), sum(rb) / len(rb)
    cov = sum((x - ma) * (y - mb) for x, y in zip(ra, rb))
    var = (sum((x - ma) ** 2 for x in ra) * sum((y - mb) ** 2 for y in rb)) ** 0.5
    return cov / var


def candidates(supernet: Any, bin_spec: str, n: int, seed: int) -> list[tuple[str, Any]]:
    from subnas.bins import ParameterBin
    from subnas.search_driver import make_space

    space = make_space("coarse-uniform", supernet, order="importance", calibration="default:calibration", choices={})
    b = ParameterBin.parse(bin_spec)
    out = [("one-shot", s) for s in space.one_shot(b)][:n]
    rng, seen, tries = random.Random(seed), {json.dumps(s.to_dict(), sort_keys=True) for _, s in out}, 0
    while len(out) < n and tries < 50 * n:
        tries += 1
        s = space.sample_in(b, rng)
        key = json.dumps(s.to_dict(), sort_keys=True) if s is not None else None
        if key is not None and key not in seen:
            seen.add(key)
            out.append(("random", s))
    return out


def score(supernet: Any, subnet: Any, tokens: torch.Tensor, dtype: str, batch_size: int) -> tuple[float, float, float]:
    """Perplexity, wall seconds and this process's CPU seconds (the stable number on a shared machine:
    with one thread it is the work done, whatever else runs)."""
    from subnas.evaluation._perplexity import nll_to_perplexity, running_nll

    t0, c0 = time.perf_counter(), time.process_time()
    with supernet.sub_network(subnet):
        nll = float("nan")
        for _, nll in running_nll(supernet.model, tokens, batch_size=batch_size, dtype=dtype):
            pass
    return nll_to_perplexity(nll), time.perf_counter() - t0, time.process_time() - c0


def run(args: argparse.Namespace) -> dict[str, Any]:
    from subnas import Supernet
    from subnas.evaluation._perplexity import supernet_tokens

    torch.set_num_threads(args.threads)
    supernet = Supernet.from_pretrained("default")
    tokens = supernet_tokens(supernet, "default:search", args.seq_len, args.num_seqs)
    cands = candidates(supernet, args.bin, args.candidates, args.seed)
    score(supernet, cands[0][1], tokens[:1], "float32", 1)  # warm-up of both paths
    score(supernet, cands[0][1], tokens[:1], "bfloat16", 1)
    sweep = []
    for bs in args.sweep:
        for dtype in ("float32", "bfloat16"):
            _, seconds, cpu = score(supernet, cands[0][1], tokens, dtype, bs)
            sweep.append({"batch_size": bs, "dtype": dtype, "seconds": seconds, "cpu_seconds": cpu,
                          "tokens_per_cpu_s": tokens.numel() / cpu})
            print(f"sweep batch {bs} {dtype}: {seconds:.2f} s wall, {cpu:.2f} s CPU", flush=True)
    rows = []
    for i, (origin, subnet) in enumerate(cands):
        row: dict[str, Any] = {"origin": origin, "subnet": compact(subnet.to_dict()),
                               "parameters": supernet.count_parameters(subnet)}
        for dtype in (("float32", "bfloat16") if i % 2 == 0 else ("bfloat16", "float32")):
            ppl, seconds, cpu = score(supernet, subnet, tokens, dtype, args.batch_size)
            row[dtype] = {"perplexity": ppl, "seconds": seconds, "cpu_seconds": cpu}
        rows.append(row)
        print(f"{i:2d} {origin:8s} fp32 {row['float32']['perplexity']:8.3f} ({row['float32']['cpu_seconds']:.1f} s CPU)  "
              f"bf16 {row['bfloat16']['perplexity']:8.3f} ({row['bfloat16']['cpu_seconds']:.1f} s CPU)", flush=True)
    fp32 = [r["float32"]["perplexity"] for r in rows]
    bf16 = [r["bfloat16"]["perplexity"] for r in rows]
    best32, best16 = min(range(len(rows)), key=fp32.__getitem__), min(range(len(rows)), key=bf16.__getitem__)
    rank16 = sorted(range(len(rows)), key=bf16.__getitem__)
    return {
        "command": "python benchmarks/eval_dtype.py " + " ".join(args.argv),
        "machine": {"cpu": platform.processor() or platform.machine(), "threads": args.threads,
                    "avx512_bf16": bool(getattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)()),
                    "torch": torch.__version__},
        "setup": {"bin": args.bin, "candidates": len(rows), "seq_len": args.seq_len, "num_seqs": args.num_seqs,
                  "batch_size": args.batch_size, "data": "default:search", "space": "coarse-uniform",
                  "order": "importance"},
        "spearman": spearman(fp32, bf16),
        "winner": {"float32": best32, "bfloat16": best16, "same": best32 == best16,
                   "float32_winner_rank_under_bfloat16": rank16.index(best32) + 1,
                   "float32_perplexity_of_bfloat16_winner": fp32[best16], "float32_best_perplexity": fp32[best32]},
        "max_relative_difference": max(abs(a - b) / a for a, b in zip(fp32, bf16)),
        "speed_ratio_bf16_over_fp32": sum(r["float32"]["cpu_seconds"] for r in rows)
        / sum(r["bfloat16"]["cpu_seconds"] for r in rows),
        "wall_speed_ratio_bf16_over_fp32": sum(r["float32"]["seconds"] for r in rows)
        / sum(r["bfloat16"]["seconds"] for r in rows),
        "batch_sweep": sweep,
        "rows": rows,
    }


def recorded_near_ties(bin_spec: str, tolerance: float) -> str:
    """How many candidates of the recorded default-arm searches of ``bin_spec`` sit within ``tolerance``
    (relative) of the next better candidate of their search: pairs bf16 may order either way."""
    path = HERE.parent / "docs" / "benchmarks" / "search_quality.json"
    if not path.is_file():
        return "n/a"
    runs = [r for r in json.loads(path.read_text())["runs"] if r["arm"] == "default" and r["bin"] == bin_spec]
    near, total = 0, 0
    for run in runs:
        values = sorted(v for v in run["values"] if v is not None)
        total += len(values) - 1
        near += sum((b - a) / a < tolerance for a, b in zip(values, values[1:]))
    return f"{near} of {total} ({len(runs)} searches)"


def compact(subnet: dict[str, Any]) -> dict[str, Any]:
    """A candidate's shape without its index sets (the importance order's thousands of kept units, which
    the order recomputes from the calibration split): widths, depth and the kept layers."""
    return {k: v for k, v in subnet.items() if not k.endswith("_indices") or k == "layer_indices"}


def dump(data: dict[str, Any]) -> str:
    """The results as JSON with one line per candidate (their index sets hold thousands of numbers)."""
    head = json.dumps({k: v for k, v in data.items() if k != "rows"}, indent=1)
    rows = ",\n".join("  " + json.dumps(r) for r in data["rows"])
    return head[:-2] + ',\n "rows": [\n' + rows + "\n ]\n}\n"


def report(data: dict[str, Any]) -> str:
    w, s = data["winner"], data["setup"]
    shot = [(r["float32"]["perplexity"], r["bfloat16"]["perplexity"]) for r in data["rows"] if r["origin"] == "one-shot"]
    errors = [abs(a - b) / a for a, b in shot]
    ranked = sorted(a for a, _ in shot)
    gaps = [(b - a) / a for a, b in zip(ranked, ranked[1:])]
    close = recorded_near_ties(s["bin"], statistics.median(errors))
    lines = [f"Setup: {s['candidates']} candidates of the {s['bin']} bin ({s['space']}, {s['order']} order), "
             f"{s['num_seqs']} x {s['seq_len']} tokens of `{s['data']}`, batch {s['batch_size']}, "
             f"{data['machine']['threads']} thread(s), AVX512-BF16: {data['machine']['avx512_bf16']}.", "",
             "| measure | value |", "|---|---|",
             f"| Spearman rho, bf16 vs fp32 perplexity | {data['spearman']:.4f} |",
             f"| the same among the {len(shot)} one-shot prunes (the search's seeds, the close ones) | "
             f"{spearman(*zip(*shot)):.4f} |",
             f"| same winner | {'yes' if w['same'] else 'no'} |",
             f"| fp32 winner's rank under bf16 | {w['float32_winner_rank_under_bfloat16']} |",
             f"| fp32 perplexity: fp32 winner / bf16 winner | {w['float32_best_perplexity']:.3f} / "
             f"{w['float32_perplexity_of_bfloat16_winner']:.3f} |",
             f"| largest relative perplexity difference | {100 * data['max_relative_difference']:.2f}% |",
             f"| median relative difference among the one-shot prunes | {100 * statistics.median(errors):.3f}% |",
             f"| smallest relative gap between two fp32-ranked one-shot prunes | {100 * min(gaps):.3f}% |",
             f"| candidates of the recorded default searches of this bin (docs/benchmarks/search_quality.json) whose "
             f"fp32 perplexity is within that median difference of the next better one | {close} |",
             f"| speed, bf16 / fp32, per CPU-second (same candidates) | {data['speed_ratio_bf16_over_fp32']:.2f}x |",
             f"| speed, bf16 / fp32, wall clock (shared machine) | {data['wall_speed_ratio_bf16_over_fp32']:.2f}x |", "",
             "Batch-size sweep (one candidate, all tokens):", "", "| batch | fp32 tokens per CPU-s | bf16 tokens per CPU-s |",
             "|---|---|---|"]
    by = {(r["batch_size"], r["dtype"]): r["tokens_per_cpu_s"] for r in data["batch_sweep"]}
    first, n = data["rows"][0], s["seq_len"] * s["num_seqs"]  # the swept candidate, at --batch-size
    by.update({(s["batch_size"], d): n / first[d]["cpu_seconds"] for d in ("float32", "bfloat16")})
    for bs in sorted({b for b, _ in by}):
        lines.append(f"| {bs} | {by[(bs, 'float32')]:.0f} | {by[(bs, 'bfloat16')]:.0f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    import sys

    argv = sys.argv[1:] if argv is None else argv
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--bin", default="85M-100M")
    p.add_argument("--candidates", type=int, default=30)
    p.add_argument("--seq-len", type=int, default=256)
    p.add_argument("--num-seqs", type=int, default=8)
    p.add_argument("--batch-size", type=int, default=4, help="the perplexity fitness's default")
    p.add_argument("--sweep", type=int, nargs="*", default=[1, 8], help="batch sizes timed on one candidate "
                   "(--batch-size is timed on every candidate)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", type=Path, default=DEFAULT_JSON)
    p.add_argument("--report", action="store_true", help="print the table from --json only")
    args = p.parse_args(argv)
    args.argv = argv
    if args.report:
        print(report(json.loads(args.json.read_text())))
        return
    data = run(args)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(dump(data))
    print(report(data))


if __name__ == "__main__":
    main()
