"""Tokens/s of a sub-network run inside the supernet vs the same sub-network exported and run by
stock `transformers`, measured in one process on the same tokens.

    python benchmarks/supernet_speed.py                       # real SmolLM2-135M, CPU
    python benchmarks/supernet_speed.py --model pythia-410m   # full-size random-weight Pythia (GPU)

Ratio = supernet tok/s / stock tok/s; >= 1.0 means evaluating in place costs nothing extra.
Runs alternate (supernet, stock, supernet, ...) so drift in machine load hits both alike.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from typing import Any

import torch
from transformers import AutoModelForCausalLM, GPTNeoXConfig

from subnas import Supernet, SubNetwork, count_parameters, extract

SMOLLM2_SUBNETS = {
    "full": SubNetwork(),
    "coarse 50% layers": SubNetwork(n_layers=15),
    "coarse narrow": SubNetwork(n_layers=20, n_embd=384, num_heads=6, intermediate_size=1024),
    "coarse head size 32": SubNetwork(n_layers=20, n_embd=384, num_heads=6, head_size=32, intermediate_size=1024),
    "layer-wise": SubNetwork(n_layers=12, num_heads=[9, 6, 3] * 4, intermediate_size=[1536, 1024, 512] * 4),
    "fine indices": SubNetwork(layer_indices=list(range(0, 30, 2)), embd_indices=list(range(0, 576, 2)),
                               intermediate_indices=list(range(0, 1536, 2))),
}
PYTHIA_SUBNETS = {
    "full": SubNetwork(),
    "coarse half": SubNetwork(n_layers=12, n_embd=512, num_heads=8, intermediate_size=2048),
    "layer-wise": SubNetwork(n_layers=16, intermediate_size=[4096, 2048] * 8),
}


def pythia_410m() -> Any:
    config = GPTNeoXConfig(vocab_size=50304, hidden_size=1024, num_hidden_layers=24, num_attention_heads=16,
                           intermediate_size=4096, max_position_embeddings=2048,
                           rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "partial_rotary_factor": 0.25})
    return AutoModelForCausalLM.from_config(config, dtype=torch.float32)


def timed(fn: Any, device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="default", help="'default' (SmolLM2), 'pythia-410m' (random), or a folder")
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--seq-len", type=int, default=256)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    device = torch.device(args.device)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32

    if args.model == "pythia-410m":
        supernet, subnets = Supernet.from_model(pythia_410m()), PYTHIA_SUBNETS
    else:
        supernet, subnets = Supernet.from_pretrained(args.model), SMOLLM2_SUBNETS
    supernet.model.to(device=device, dtype=dtype)
    vocab = supernet.subnas_config.vocab_size
    ids = torch.randint(0, vocab, (args.batch, args.seq_len), generator=torch.Generator().manual_seed(0)).to(device)
    tokens = ids.numel()

    rows = []
    for name, subnet in subnets.items():
        with tempfile.TemporaryDirectory() as out:
            result = extract(supernet, subnet, out, pad=False)  # the sub-network itself, not a padded stock shape
            stock = AutoModelForCausalLM.from_pretrained(out, dtype=dtype).to(device).eval()
        supernet.set_sub_network(subnet)
        with torch.inference_mode():
            supernet(ids), stock(ids)  # warm-up (and the gather cache for index sets)
            s_times, t_times = [], []
            for _ in range(args.repeats):
                s_times.append(timed(lambda: supernet(ids), device))
                t_times.append(timed(lambda: stock(ids), device))
        s, t = statistics.median(s_times), statistics.median(t_times)
        rows.append({"subnet": name, "parameters": count_parameters(supernet, subnet), "export": result.format,
                     "supernet_tok_s": tokens / s, "stock_tok_s": tokens / t, "ratio": t / s})
        del stock
    supernet.reset()

    if args.json:
        print(json.dumps({"device": str(device), "dtype": str(dtype), "batch": args.batch,
                          "seq_len": args.seq_len, "rows": rows}))
        return
    print(f"device {device}, {dtype}, batch {args.batch} x {args.seq_len} tokens, median of {args.repeats}")
    print(f"{'sub-network':<22}{'params':>13}{'export':>8}{'supernet tok/s':>16}{'stock tok/s':>13}{'ratio':>7}")
    for r in rows:
        print(f"{r['subnet']:<22}{r['parameters']:>13,}{r['export']:>8}{r['supernet_tok_s']:>16,.0f}"
              f"{r['stock_tok_s']:>13,.0f}{r['ratio']:>7.2f}")


if __name__ == "__main__":
    main()
