"""``subnas search default --space SPACE --bins 85M-100M --trials 40`` in each of the four spaces,
every other option at its default, and each winner's perplexity on validation text the search
never read — what a user gets from each space out of the box.

    python benchmarks/space_defaults.py --work runs/space_defaults   # ~10 min per space on 2 CPU cores
    python benchmarks/space_defaults.py --report                      # the table from the JSON

A search folder already complete under ``--work`` resumes as it is (no new evaluation), so the
script can score searches run from the command line with the same options.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse  # noqa: E402
import json  # noqa: E402
from pathlib import Path  # noqa: E402

import torch  # noqa: E402

import subnas  # noqa: E402
from subnas._io import atomic_write_text  # noqa: E402
from subnas.evaluation._perplexity import perplexity, supernet_tokens  # noqa: E402

SPACES = ("coarse-uniform", "coarse-layerwise", "fine-uniform", "fine-layerwise")
ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--work", default=str(ROOT / "runs" / "space_defaults"), help="one search folder per space")
    p.add_argument("--bin", default="85M-100M")
    p.add_argument("--trials", type=int, default=40)
    p.add_argument("--val-seqs", type=int, default=64)
    p.add_argument("--json", default=str(ROOT / "docs" / "benchmarks" / "space_defaults.json"))
    p.add_argument("--report", action="store_true")
    args = p.parse_args()
    if not args.report:
        supernet = subnas.Supernet.from_pretrained("default")
        val = supernet_tokens(supernet, "default:validation", 256, args.val_seqs)
        rows = {}
        for space in SPACES:
            out = Path(args.work) / space  # the CLI's --out
            found = subnas.search(supernet, space=space, bins=[args.bin], trials=args.trials, out_dir=out)
            best = found["bins"][0]
            subnet = subnas.SubNetwork.from_dict(best["best_subnet"])
            with supernet.sub_network(subnet):
                ppl = perplexity(supernet.model, val, batch_size=4, progress=False)
            rows[space] = {"parameters": subnas.count_parameters(supernet.subnas_config, subnet),
                           "search_fitness": best.get("best_fitness"),
                           "confirmed_fitness": best.get("confirmed_fitness"), "validation_perplexity": ppl}
            print(space, json.dumps(rows[space]), flush=True)
        data = {"command": f"subnas search default --space SPACE --bins {args.bin} --trials {args.trials}",
                "validation": f"default:validation, {args.val_seqs} x 256 tokens", "threads": torch.get_num_threads(),
                "spaces": rows}
        atomic_write_text(Path(args.json), json.dumps(data, indent=1) + "\n")
    data = json.loads(Path(args.json).read_text())
    base = data["spaces"]["coarse-uniform"]["validation_perplexity"]
    print("| space | parameters | confirmed (search split) | validation perplexity | vs coarse-uniform |")
    print("|---|---|---|---|---|")
    for space, r in data["spaces"].items():
        print(f"| {space} | {r['parameters']:,} | {r['confirmed_fitness']:.1f} | {r['validation_perplexity']:.2f} | "
              f"{r['validation_perplexity'] / base - 1:+.1%} |")


if __name__ == "__main__":
    main()
