"""Record the fitness table that ships for sampler benchmarks on the real SmolLM2-135M.

    python benchmarks/record_smollm2_table.py                      # -> benchmarks/tables/smollm2_coarse.json
    python benchmarks/record_smollm2_table.py --n 200 --chunk 50   # extend it (recorded rows are skipped)

Candidates are sampled in two parameter bins of the coarse-uniform and coarse-layerwise spaces
(default choices) and scored by perplexity on the offline Wikipedia validation split with a tiny
evaluation set (``--num-seqs`` x ``--seq-len`` tokens, ~1-5 s per candidate on a 2-core CPU). The
spaces are interleaved in chunks, so a run stopped early still covers both; the table is
rewritten atomically after every evaluation, and rerunning the command resumes where it stopped
(`subnas.benchmark.record_table` skips recorded candidates). Then replay it with
``benchmarks/sampler_benchmark.py``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import torch

from subnas.benchmark._samplers import record_table
from subnas.lookups import get_fitness
from subnas.supernet import Supernet

HERE = Path(__file__).resolve().parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=str(HERE / "tables" / "smollm2_coarse.json"))
    parser.add_argument("--spaces", nargs="+", default=["coarse-uniform", "coarse-layerwise"])
    parser.add_argument("--bins", nargs="+", default=["60M-80M", "90M-110M"])
    parser.add_argument("--n", type=int, default=150, help="candidates per space (round-robin over the bins)")
    parser.add_argument("--chunk", type=int, default=30, help="candidates per space before switching space")
    parser.add_argument("--data", default="default:validation")
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--num-seqs", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1))
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    start = time.time()
    supernet = Supernet.from_pretrained("default")
    options = {"data": args.data, "seq_len": args.seq_len, "num_seqs": args.num_seqs}
    # One fitness object for every call: the evaluation tokens are prepared once.
    fitness = get_fitness("perplexity", supernet=supernet, batch_size=args.num_seqs, **options)
    metadata = {"model": "default (SmolLM2-135M-Instruct, Q4_1 GGUF dequantized)", "fitness": "perplexity",
                "fitness_options": options, "data": args.data,
                "machine": f"{platform.machine()} {platform.processor() or ''} {os.cpu_count()} cores".strip(),
                "torch_threads": args.threads}
    for target in range(args.chunk, args.n + args.chunk, args.chunk):
        for space in args.spaces:
            table = record_table(supernet, space, fitness, n=min(target, args.n), out_path=args.out, bins=args.bins,
                                 seed=args.seed, metadata=metadata)
            print(f"[{time.time() - start:7.1f}s] {space}: {min(target, args.n)} candidates; table holds "
                  f"{len(table)} rows", flush=True)
    seconds = sum(r["seconds"] for r in table.rows)
    print(json.dumps({"rows": len(table), "evaluation_seconds": round(seconds, 1),
                      "wall_seconds": round(time.time() - start, 1), "bytes": Path(args.out).stat().st_size}))


if __name__ == "__main__":
    main()
