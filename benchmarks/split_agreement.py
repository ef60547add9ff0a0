"""Do the text splits agree on which winner is best? Every sub-network of one bin that the four-space
benchmark scored on its report split (its winners), re-measured on every split.

    python benchmarks/split_agreement.py                     # 85M-100M -> docs/benchmarks/split_agreement.json

Reads the evaluation cache ``benchmarks/search_quality.py`` wrote for
``docs/benchmarks/search_quality_spaces.json`` (run that first): each winner's search-split value
(16 sequences), confirmation value (the next 48) and test-split perplexity (the whole split) come
from there; this script adds the *validation* split (``--val-seqs`` sequences), scored now, and
the Spearman correlation between every pair of splits. It answers whether a worse winner is a
confirmation that picked wrongly (the splits disagree) or a search that never reached a better
candidate (they agree).
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
from subnas.bins import ParameterBin  # noqa: E402
from subnas.evaluation._perplexity import perplexity, supernet_tokens  # noqa: E402

import search_quality as sq  # noqa: E402  (benchmarks/ is on sys.path: this script's own folder)

HERE = Path(__file__).resolve().parent
SPLITS = ("search16", "confirm48", "validation", "test")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--bin", default="85M-100M")
    p.add_argument("--val-seqs", type=int, default=64)
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    p.add_argument("--spaces-json", default=str(HERE.parent / "docs" / "benchmarks" / "search_quality_spaces.json"))
    p.add_argument("--json", default=str(HERE.parent / "docs" / "benchmarks" / "split_agreement.json"))
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    setup = json.loads(Path(args.spaces_json).read_text())["setup"]
    value_setup = {k: v for k, v in setup.items() if k not in ("budget", "confirm_candidates")}
    cache = sq.EvaluationCache(value_setup, Path(args.spaces_json).with_suffix(".evaluations.json"))
    supernet = subnas.Supernet.from_pretrained("default")
    val = supernet_tokens(supernet, "default:validation", setup["search"]["seq_len"], args.val_seqs)
    b = ParameterBin.parse(args.bin)
    rows = []
    for key, entry in cache.items("search"):
        test = cache.get("validation", key)  # the harness's report split (the test split)
        subnet = subnas.SubNetwork.from_dict(entry["subnet"])
        n = subnas.count_parameters(supernet.subnas_config, subnet)
        if test is None or n not in b:
            continue
        with supernet.sub_network(subnet):
            v = perplexity(supernet.model, val, batch_size=4, progress=False)
        kept = entry["subnet"]["layer_indices"]
        rows.append({"parameters": n, "n_layers": len(kept),
                     "dropped_layers": sorted(set(range(supernet.subnas_config.num_hidden_layers)) - set(kept)),
                     "search16": entry["trace"][-1][1], "confirm48": cache.get("confirm", key),
                     "validation": v, "test": float(test)})
        print(json.dumps(rows[-1]), flush=True)
    scored = [r for r in rows if r["confirm48"] is not None]
    correlations = {f"{a} vs {c}": sq._spearman([r[a] for r in scored], [r[c] for r in scored])
                    for i, a in enumerate(SPLITS) for c in SPLITS[i + 1:]}
    out = {"bin": args.bin, "validation": f"default:validation, {args.val_seqs} x {setup['search']['seq_len']} tokens",
           "test": "default:test, the whole split", "spearman": correlations, "subnetworks": rows}
    atomic_write_text(Path(args.json), json.dumps(out, indent=1) + "\n")
    for name, value in correlations.items():
        print(f"Spearman {name}: {value:.2f}")


if __name__ == "__main__":
    main()
