"""Candidates/s of each search space's operators inside parameter bins, on the SmolLM2-135M shape.

    python benchmarks/space_sampling.py                  # bins 30M, 60M, 100M (±5%), 1 s per cell
    python benchmarks/space_sampling.py --seconds 3 --bins 20M±5% 120M±5%

For each space and bin: the rate of in-bin sampling, mutation and crossover (what Algorithm 1 calls
per epoch), the share of samples rejection alone accepted (the rest needed a repair), and the
fallbacks (operations where neither worked; 0 expected). Also the unconstrained sampling rate and
the cost of one `count_parameters` call, which bounds every in-bin rate. No model weights needed.
"""

from __future__ import annotations

import argparse
import random
import time
from collections.abc import Callable
from typing import Any

from subnas import BinConstrainedSpace, ParameterBin, SubnasConfig, SubNetwork, count_parameters, get_search_space

SMOLLM2 = SubnasConfig(family="llama", vocab_size=49152, hidden_size=576, num_hidden_layers=30, num_attention_heads=9,
                       num_key_value_heads=3, head_dim=64, intermediate_size=1536, tie_word_embeddings=True)
SPACES = ("coarse-uniform", "coarse-layerwise", "fine-uniform", "fine-layerwise")


def rate(op: Callable[[], Any], seconds: float) -> float:
    """Calls per second of ``op`` over about ``seconds`` (at least 3 calls)."""
    n, start = 0, time.perf_counter()
    while n < 3 or time.perf_counter() - start < seconds:
        op()
        n += 1
    return n / (time.perf_counter() - start)


def bench(name: str, b: ParameterBin, seconds: float, seed: int) -> dict[str, Any]:
    space = get_search_space(name, SMOLLM2)
    constrained = BinConstrainedSpace(space, b, seed=seed)
    rng = random.Random(seed)
    population = [constrained.sample(rng) for _ in range(20)]
    # Layer-wise crossover needs parents of equal depth (§2.2): pair within depths.
    pairs = [(a, c) for a in population for c in population if a is not c and
             (a.n_layers == c.n_layers or not space.layerwise)] or [(population[0], population[0])]
    accepted = sum(space.count(space.sample(rng)) in b for _ in range(400)) / 400
    return {
        "space": name, "bin": str(b),
        "sample/s": rate(lambda: constrained.sample(rng), seconds),
        "mutate/s": rate(lambda: constrained.mutate(rng.choice(population), rng), seconds),
        "crossover/s": rate(lambda: constrained.crossover(*rng.choice(pairs), rng), seconds),
        "rejection hit": accepted, "fallbacks": constrained.fallbacks,
        "free sample/s": rate(lambda: space.sample(rng), seconds),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bins", nargs="+", default=["30M±5%", "60M±5%", "100M±5%"])
    parser.add_argument("--seconds", type=float, default=1.0, help="time per measurement")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    probe = SubNetwork(n_layers=20, n_embd=512, num_heads=6, query_groups=2, head_size=32, intermediate_size=1024)
    per_call = 1e3 / rate(lambda: count_parameters(SMOLLM2, probe), args.seconds)
    print(f"count_parameters (coarse, SmolLM2 shape): {per_call:.3f} ms per call\n")
    rows = [bench(name, ParameterBin.parse(b), args.seconds, args.seed) for b in args.bins for name in SPACES]
    header = ("space", "bin", "sample/s", "mutate/s", "crossover/s", "rejection hit", "fallbacks", "free sample/s")
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for row in rows:
        cells = [f"{row[h]:.1%}" if h == "rejection hit" else f"{row[h]:,.0f}" if isinstance(row[h], float)
                 else str(row[h]) for h in header]
        print("| " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
