"""GPU speed: a sub-network run in place vs its extracted stock model, and distillation vs naive KD.

Needs a CUDA GPU and a CUDA build of torch (on a machine without one it says so and exits with
status 2). What it measures, all on the same device, in bf16:

1. **Inference** (the search's fitness path): tokens/s of the sub-network evaluated *in place*
   (`subnas.Supernet` with the sub-network active: views and cached gathers of the full weights)
   and of the *extracted* model (``subnas extract`` → stock `transformers` class, loaded with
   ``AutoModelForCausalLM``), for batch sizes 1–64 of ``--seq-len`` tokens, with ``torch.compile``
   off and on. Reported as tokens/s and the ratio in-place / extracted.
2. **Distillation** (a training step: teacher forward, student forward, loss, backward, AdamW):
   ``naive-kd`` (float32, full-logit KL through autograd, default AdamW; the textbook baseline of
   benchmarks/train_speed.py), ``kd-fp32`` (subnas' top-k loss and fused AdamW, float32) and
   ``kd-bf16`` (the same under bf16 autocast: what ``subnas distill`` runs on a GPU, whose teacher
   cache is off there), as tokens/s and the ratio to ``naive-kd``.

    python benchmarks/gpu_speed.py                                   # SmolLM2-135M, its 85M-100M one-shot prune
    python benchmarks/gpu_speed.py --model meta-llama/Llama-3.2-1B --subnet '{"n_layers": 12}'
    python benchmarks/gpu_speed.py --report                          # the markdown tables from --json

``--device cpu`` runs the same code on the CPU with whatever sizes are given, only to check the
script; its numbers are not what this benchmark is for. Results go to ``--json``
(benchmarks/results/gpu_speed.json); docs/benchmarks/gpu_speed.md shows them with the card's name.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import torch

HERE = Path(__file__).resolve().parent
DEFAULT_JSON = HERE / "results" / "gpu_speed.json"
DEFAULT_SUBNET = '{"n_layers": 20, "n_embd": 448, "num_heads": 6, "query_groups": 2}'


def parse(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="default", help="supernet / teacher (default: the offline SmolLM2-135M)")
    p.add_argument("--subnet", default=DEFAULT_SUBNET, help="the sub-network, as JSON")
    p.add_argument("--seq-len", type=int, default=512)
    p.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 2, 4, 8, 16, 32, 64])
    p.add_argument("--compile", choices=("off", "on", "both"), default="both", help="torch.compile the models")
    p.add_argument("--steps", type=int, default=10, help="timed forwards (or training steps) per measurement")
    p.add_argument("--warmup", type=int, default=3, help="untimed ones first (compilation happens here)")
    p.add_argument("--kd-batch-size", type=int, default=8, help="sequences per distillation step")
    p.add_argument("--device", default="cuda", help="cuda (default), cuda:N; cpu only checks the script")
    p.add_argument("--json", type=Path, default=DEFAULT_JSON)
    p.add_argument("--report", action="store_true", help="print the tables from --json and exit")
    return p.parse_args(argv)


def timed(fn: Callable[[], Any], device: torch.device, steps: int, warmup: int) -> float:
    """Median seconds of ``fn`` over ``steps`` calls after ``warmup`` calls, synchronised."""
    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)
    for _ in range(warmup):
        fn()
    sync()
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def inference(args: argparse.Namespace, device: torch.device) -> list[dict[str, Any]]:
    from transformers import AutoModelForCausalLM

    from subnas import SubNetwork, Supernet, extract

    supernet = Supernet.from_pretrained(args.model, dtype=torch.bfloat16, device=device)
    subnet = SubNetwork.from_dict(json.loads(args.subnet))
    with tempfile.TemporaryDirectory() as tmp:
        extract(supernet, subnet, Path(tmp) / "sub")
        stock = AutoModelForCausalLM.from_pretrained(Path(tmp) / "sub", dtype=torch.bfloat16).to(device).eval()
    supernet.set_sub_network(subnet)
    models: dict[str, Any] = {"in-place": supernet.model.eval(), "extracted": stock}
    vocab = stock.config.vocab_size
    rows = []
    for compiled in ([False, True] if args.compile == "both" else [args.compile == "on"]):
        runs = {name: torch.compile(m) if compiled else m for name, m in models.items()}
        for bs in args.batch_sizes:
            ids = torch.randint(0, vocab, (bs, args.seq_len), device=device)
            row: dict[str, Any] = {"compile": compiled, "batch_size": bs}
            for name, model in runs.items():
                def forward(model: Any = model, stock: bool = name == "extracted", ids: torch.Tensor = ids) -> None:
                    with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16):
                        model(ids, use_cache=False) if stock else model(ids)
                try:
                    seconds = timed(forward, device, args.steps, args.warmup)
                    row[name] = ids.numel() / seconds
                except torch.OutOfMemoryError:
                    row[name] = None
                    torch.cuda.empty_cache()
            if row["in-place"] and row["extracted"]:
                row["ratio"] = row["in-place"] / row["extracted"]
            rows.append(row)
            print(json.dumps(row), flush=True)
    supernet.reset()
    return rows


def distillation(args: argparse.Namespace, device: torch.device) -> list[dict[str, Any]]:
    """One training step per call for each mode, from the same extracted student."""
    sys.path.insert(0, str(HERE))
    from train_speed import naive_loss  # the textbook baseline, shared with the CPU benchmark

    from transformers import AutoModelForCausalLM

    from subnas import SubNetwork, Supernet, extract
    from subnas.training import TrainConfig
    from subnas.training._losses import distillation_loss, teacher_topk

    cfg = TrainConfig()
    supernet = Supernet.from_pretrained(args.model, device=device)
    teacher = supernet.model.eval().requires_grad_(False)
    vocab = supernet.subnas_config.vocab_size
    ids = torch.randint(0, vocab, (args.kd_batch_size, args.seq_len), device=device)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        extract(supernet, SubNetwork.from_dict(json.loads(args.subnet)), Path(tmp) / "student", pad=False)
        for mode in ("naive-kd", "kd-fp32", "kd-bf16"):
            student = AutoModelForCausalLM.from_pretrained(Path(tmp) / "student", dtype=torch.float32).to(device).train()
            optimizer = torch.optim.AdamW(student.parameters(), lr=cfg.lr, fused=mode != "naive-kd" or None)
            bf16 = mode == "kd-bf16"

            def step(student: Any = student, optimizer: Any = optimizer, mode: str = mode, bf16: bool = bf16) -> None:
                autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16)
                with torch.no_grad(), autocast:
                    t_logits = teacher(ids).logits
                target = t_logits if mode == "naive-kd" else teacher_topk(t_logits, cfg.top_k or 0, cfg.temperature)
                with autocast:
                    logits = student(ids, use_cache=False).logits
                if mode == "naive-kd":
                    loss = naive_loss(logits, ids, target, alpha=cfg.alpha, beta=cfg.beta, temperature=cfg.temperature)
                else:
                    loss = distillation_loss(logits, ids, target, alpha=cfg.alpha, beta=cfg.beta,
                                             temperature=cfg.temperature).loss
                loss.backward()
                torch.nn.utils.clip_grad_norm_(student.parameters(), cfg.grad_clip)
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
            try:
                seconds = timed(step, device, args.steps, args.warmup)
                rows.append({"mode": mode, "tokens_per_s": ids.numel() / seconds})
            except torch.OutOfMemoryError:
                rows.append({"mode": mode, "tokens_per_s": None})
            print(json.dumps(rows[-1]), flush=True)
            del student, optimizer
            if device.type == "cuda":
                torch.cuda.empty_cache()
    base = rows[0]["tokens_per_s"]
    for row in rows:
        row["vs_naive"] = row["tokens_per_s"] / base if base and row["tokens_per_s"] else None
    return rows


def report(data: dict[str, Any]) -> str:
    def num(x: Any, fmt: str = "{:,.0f}") -> str:
        return "OOM" if x is None else fmt.format(x)
    lines = [f"Device: {data['device']} (torch {data['torch']}); model {data['model']}, sub-network "
             f"`{data['subnet']}`, {data['seq_len']} tokens per sequence, bf16.", "",
             "| torch.compile | batch | in place, tokens/s | extracted, tokens/s | in place / extracted |",
             "|---|---|---|---|---|"]
    for r in data["inference"]:
        lines.append(f"| {'on' if r['compile'] else 'off'} | {r['batch_size']} | {num(r['in-place'])} | "
                     f"{num(r['extracted'])} | {num(r.get('ratio'), '{:.2f}')} |")
    lines += ["", "| distillation step | tokens/s | vs naive KD |", "|---|---|---|"]
    for r in data["distillation"]:
        lines.append(f"| {r['mode']} | {num(r['tokens_per_s'])} | {num(r['vs_naive'], '{:.2f}x')} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse(sys.argv[1:] if argv is None else argv)
    if args.report:
        print(report(json.loads(args.json.read_text())))
        return 0
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        why = "this torch is a CPU build" if torch.version.cuda is None else "no CUDA GPU is visible"
        print(f"benchmarks/gpu_speed.py needs a CUDA GPU: {why} (torch.cuda.is_available() is False). Run it on a "
              "machine with an NVIDIA GPU and a CUDA build of torch; --help says what it measures.", file=sys.stderr)
        return 2
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu (script check only)"
    data = {"device": name, "torch": torch.__version__, "model": args.model, "subnet": args.subnet,
            "seq_len": args.seq_len, "command": "python benchmarks/gpu_speed.py " + " ".join(sys.argv[1:])}
    data["inference"] = inference(args, device)
    data["distillation"] = distillation(args, device)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(data, indent=1) + "\n")
    print(report(data))
    return 0


if __name__ == "__main__":
    sys.exit(main())
