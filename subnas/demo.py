"""The main job on the built-in default (README command 1): real SmolLM2-135M, real Wikipedia text.

Until search and training land (issues 4 and 5) it shows the supernet core end to end: perplexity of
the full model and of sub-networks evaluated in place, the extraction of one of them, and the check
that the exported model — loaded by stock `transformers` — scores exactly what was evaluated.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from subnas._io import atomic_write_text
from subnas.subnet import SubNetwork

#: Sub-networks of SmolLM2-135M (30 layers, 576 wide, 9 heads in 3 groups, MLP 1536).
DEMO_SUBNETS: dict[str, SubNetwork] = {
    "full model": SubNetwork(),
    "coarse: 24 layers": SubNetwork(n_layers=24),
    "coarse: 24 layers, MLP 1024": SubNetwork(n_layers=24, intermediate_size=1024),
    "coarse: 20 layers, 6 heads, MLP 1024": SubNetwork(n_layers=20, num_heads=6, intermediate_size=1024),
    "layer-wise: MLP 1536 early, 768 late": SubNetwork(n_layers=24, intermediate_size=[1536] * 12 + [768] * 12),
    "fine: drop every 5th layer": SubNetwork(layer_indices=[i for i in range(30) if i % 5 != 4]),
}


def demo(out_dir: str | Path = "runs/demo", *, seq_len: int = 256, num_seqs: int = 8, batch_size: int = 4,
         model: str = "default", data: str = "default:validation") -> dict[str, Any]:
    """Evaluate `DEMO_SUBNETS` in place, extract the best smaller one, re-check it from disk."""
    import torch
    from transformers import AutoModelForCausalLM

    from subnas.assets import resolve_text_source
    from subnas.evaluate import perplexity, requires_bos, tokenize_for_eval
    from subnas.extract import extract
    from subnas.supernet import Supernet

    out = Path(out_dir)
    start = time.perf_counter()
    supernet = Supernet.from_pretrained(model)
    tokens = tokenize_for_eval(resolve_text_source(data), supernet.tokenizer, seq_len=seq_len, num_seqs=num_seqs,
                               add_bos=requires_bos(supernet.subnas_config))
    rows = []
    for name, subnet in DEMO_SUBNETS.items():
        supernet.set_sub_network(subnet)
        t0 = time.perf_counter()
        ppl = perplexity(supernet.model, tokens, batch_size=batch_size)
        rows.append({"subnet": name, "parameters": supernet.count_parameters(subnet), "perplexity": ppl,
                     "seconds": time.perf_counter() - t0, "definition": subnet.to_dict()})
    supernet.reset()

    smaller = [r for r in rows if r["subnet"] != "full model"]
    best = min(smaller, key=lambda r: r["perplexity"])
    subnet = DEMO_SUBNETS[best["subnet"]]
    subnet.save(out / "best_subnet.json")
    result = extract(supernet, subnet, out / "model", overwrite=True)
    exported = AutoModelForCausalLM.from_pretrained(result.path, dtype=torch.float32)
    exported_ppl = perplexity(exported, tokens, batch_size=batch_size)
    summary = {"model": supernet.source, "tokens": tokens.numel(), "rows": rows, "best": best["subnet"],
               "export": {"path": result.path, "format": result.format, "architecture": result.architecture,
                          "parameters": result.num_parameters, "perplexity": exported_ppl,
                          "matches_in_place": abs(exported_ppl - best["perplexity"]) <= 1e-3 * best["perplexity"]},
               "seconds": time.perf_counter() - start}
    atomic_write_text(out / "summary.json", json.dumps(summary, indent=2) + "\n")
    return summary


def format_summary(summary: dict[str, Any]) -> str:
    lines = [f"SmolLM2 supernet, perplexity on {summary['tokens']:,} held-out Wikipedia tokens", "",
             f"{'sub-network':<40}{'parameters':>14}{'perplexity':>12}{'s':>7}"]
    for r in summary["rows"]:
        lines.append(f"{r['subnet']:<40}{r['parameters']:>14,}{r['perplexity']:>12.2f}{r['seconds']:>7.1f}")
    e = summary["export"]
    lines += ["", f"best smaller sub-network: {summary['best']}",
              f"exported to {e['path']} as {e['architecture']} ({e['format']} format, {e['parameters']:,} parameters)",
              f"perplexity of the exported model in stock transformers: {e['perplexity']:.2f} "
              f"({'matches' if e['matches_in_place'] else 'DOES NOT MATCH'} the in-place evaluation)",
              f"total {summary['seconds']:.0f} s"]
    return "\n".join(lines)
