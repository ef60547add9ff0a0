"""Training throughput and memory: distillation vs plain cross-entropy, top-k vs full logits.

The student is a sub-network of the default supernet (SmolLM2-135M), extracted once; the teacher is
the full SmolLM2. Each configuration runs in a fresh process through the real entry points
(`subnas.train.pretrain` / `distill`) on the default corpus:

- ``ce``       — `pretrain`: cross-entropy only;
- ``kd-topk``  — `distill`, top-1024 teacher logits with the tail bucket (paper §4.4);
- ``kd-full``  — `distill`, full teacher logits.

Reported, per configuration:

- ``tokens_per_s``: wall-clock training tokens/s, median over the steps between the first (warm-up)
  and the last (it writes the checkpoint and the model);
- ``tokens_per_cpu_s``: the same steps' tokens per second of *process CPU time* divided by the
  thread count — what the run would reach alone on the machine; on a shared, busy machine this is
  the stable number (wall time there measures the neighbours);
- peak memory above the process's footprint just before training (CPU: RSS sampled every 5 ms;
  CUDA: ``torch.cuda.max_memory_allocated``).

    python benchmarks/train_speed.py                          # CPU, seq 256, 4 sequences/step, 5 steps
    python benchmarks/train_speed.py --device cuda --seq-len 1024 --batch-size 16 --steps 20
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

MODES = ("ce", "kd-topk", "kd-full")
DEFAULT_SUBNET = {"n_layers": 15, "intermediate_size": 1024}


class PeakRSS:
    """Peak resident memory of this process while the block runs (sampled in a thread)."""

    def __init__(self, interval: float = 0.005) -> None:
        import psutil

        self._proc, self._interval, self.peak = psutil.Process(), interval, 0
        self._stop = threading.Event()

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self._proc.memory_info().rss)
            time.sleep(self._interval)

    def __enter__(self) -> PeakRSS:
        self.base = self._proc.memory_info().rss
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join()


def child(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    from subnas import Supernet
    from subnas.train import distill, pretrain
    from subnas.training_log import read_log

    torch.set_num_threads(args.threads or torch.get_num_threads())
    device = torch.device(args.device)
    teacher = Supernet.from_pretrained(args.model, device=device) if args.mode != "ce" else None
    common = dict(seq_len=args.seq_len, batch_size=args.batch_size, micro_batch_size=args.micro_batch_size,
                  max_steps=args.steps, eval_every=0, checkpoint_every=10**9, progress=False, val_data=None,
                  device=args.device)
    out = Path(args.out) / args.mode
    marks: list[tuple[float, float]] = []

    def on_step(info: dict[str, Any]) -> None:
        if device.type == "cuda":
            torch.cuda.synchronize()
        marks.append((time.perf_counter(), time.process_time()))

    common["on_step"] = on_step
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    with PeakRSS() as rss:
        if args.mode == "ce":
            pretrain(args.student, "default", out, **common)
        else:
            distill(teacher, "default", out, student=args.student, top_k=1024 if args.mode == "kd-topk" else None,
                    **common)
    rows = [r for r in read_log(out / "log.csv") if r["loss"] is not None]
    tokens = args.batch_size * args.seq_len
    # Step k's time is marks[k] - marks[k-1]: steps 2 .. N-1 (0-based marks 1 .. N-2).
    wall = [b[0] - a[0] for a, b in zip(marks[:-2], marks[1:-1])] or [marks[-1][0] - marks[0][0]]
    cpu = [b[1] - a[1] for a, b in zip(marks[:-2], marks[1:-1])] or [marks[-1][1] - marks[0][1]]
    threads = torch.get_num_threads() if device.type == "cpu" else 1
    result = {"mode": args.mode, "tokens_per_s": tokens / statistics.median(wall),
              "tokens_per_cpu_s": tokens / (statistics.median(cpu) / threads), "threads": threads, "steps": len(rows),
              "final_loss": rows[-1]["loss"], "peak_rss_above_start_mb": (rss.peak - rss.base) / 2**20}
    if device.type == "cuda":
        result["peak_cuda_above_start_mb"] = (torch.cuda.max_memory_allocated() - base) / 2**20
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="default", help="teacher / supernet (default: offline SmolLM2-135M)")
    ap.add_argument("--subnet", default=json.dumps(DEFAULT_SUBNET), help="student sub-network as JSON")
    ap.add_argument("--seq-len", type=int, default=256)
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--micro-batch-size", type=int, default=None)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--modes", default=",".join(MODES))
    ap.add_argument("--mode", help=argparse.SUPPRESS)
    ap.add_argument("--student", help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.mode:  # a child process: one configuration
        print("RESULT " + json.dumps(child(args)), flush=True)
        return

    from subnas import Supernet, SubNetwork, extract

    with tempfile.TemporaryDirectory() as tmp:
        supernet = Supernet.from_pretrained(args.model)
        subnet = SubNetwork.from_dict(json.loads(args.subnet))
        student = extract(supernet, subnet, Path(tmp) / "student")
        del supernet
        print(f"student: {subnet.to_dict()} -> {student.num_parameters:,} parameters ({student.architecture}); "
              f"seq {args.seq_len} x batch {args.batch_size}, {args.steps} steps, device {args.device}", flush=True)
        results = []
        for mode in args.modes.split(","):
            cmd = [sys.executable, __file__, "--mode", mode, "--student", student.path, "--out", tmp,
                   "--model", args.model, "--seq-len", str(args.seq_len), "--batch-size", str(args.batch_size),
                   "--steps", str(args.steps), "--device", args.device]
            if args.micro_batch_size:
                cmd += ["--micro-batch-size", str(args.micro_batch_size)]
            if args.threads:
                cmd += ["--threads", str(args.threads)]
            proc = subprocess.run(cmd, capture_output=True, text=True, env=os.environ)
            line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")), None)
            if line is None:
                raise SystemExit(f"{mode} failed:\n{proc.stderr[-3000:]}")
            results.append(json.loads(line[len("RESULT "):]))
            r = results[-1]
            mem = r.get("peak_cuda_above_start_mb", r["peak_rss_above_start_mb"])
            print(f"{mode:8s} {r['tokens_per_s']:8.0f} tok/s wall  {r['tokens_per_cpu_s']:8.0f} tok/s cpu-time  "
                  f"peak +{mem:6.0f} MB   loss {r['final_loss']:.3f}", flush=True)
    base = next((r for r in results if r["mode"] == "ce"), None)
    if base:
        for r in results:
            r["speed_vs_ce"] = r["tokens_per_s"] / base["tokens_per_s"]
            r["cpu_speed_vs_ce"] = r["tokens_per_cpu_s"] / base["tokens_per_cpu_s"]
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
