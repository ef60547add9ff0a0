"""Where a distillation step's time goes, and how much the optimised path saves.

Teacher: the default supernet (SmolLM2-135M). Student: a sub-network of it, extracted once (default
18 layers, 92M parameters). Data: real text (``default:train``), the same batches for every mode.
All modes run in this one process, one after another, each from the same student weights:

- ``naive-kd``: what a straightforward implementation does: float32, the teacher's forward every
  step, full-logit KL and cross-entropy through autograd (``log_softmax``/``kl_div``), AdamW's
  default implementation. The baseline.
- ``kd-fp32``: the library's loss (top-k with tail bucket, chunked, closed-form gradient) and fused
  AdamW, still float32 and no cache: what the algorithms alone buy.
- ``kd-cold``: the default training path (`subnas.training._loop`): bf16 autocast where the hardware has
  native bf16, top-k targets computed and written to an empty teacher cache.
- ``kd-warm``: the same with the cache filled by ``kd-cold``: the teacher never runs. What every
  later run on the same text (other seeds, other students, resumes) gets.
- ``ce``: cross-entropy pretraining on the default path.

Per mode: tokens/s (median step, wall clock), tokens per CPU-second divided by the threads (the
stable number on a busy shared machine; with ``--threads 1`` it is exactly the work done, with
more threads it also counts OpenMP spin-waits), the time per phase, wall and CPU (teacher =
forward + top-k or cache read/write; student forward; loss; backward; optimizer = clip + step),
and the peak memory above the footprint at the mode's start (CPU: RSS sampled every 5 ms, after
``gc`` and ``malloc_trim``; CUDA: ``max_memory_allocated``). The first mode's peak includes
allocator warm-up that later modes reuse, so read memory as a rough comparison.
Then, unless ``--no-trainer``, the real entry point `subnas.training.distill` runs the default path
cold and warm on a fresh cache, so the product path's own tokens/s is on record too.

    python benchmarks/train_speed.py                        # CPU: seq 256 x 4, 1 + 3 steps a mode (~5 min on 2 cores)
    python benchmarks/train_speed.py --threads 1               # stable CPU-time numbers on a shared machine
    python benchmarks/train_speed.py --device cuda --seq-len 1024 --batch-size 16 --steps 10
    python benchmarks/train_speed.py --report docs/benchmarks/train_speed.json   # its --json as a markdown table
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import gc
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Callable

# As `import subnas` does (see subnas/__init__.py), before torch loads OpenMP; OMP_WAIT_POLICY=ACTIVE
# in the environment measures the spinning default instead.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

MODES = ("naive-kd", "kd-fp32", "kd-cold", "kd-warm", "ce")
PHASES = ("teacher", "student_fwd", "loss", "backward", "optimizer")


class PeakMemory:
    """Peak memory above the level at entry: RSS sampled in a thread (CPU) or the CUDA allocator."""

    def __init__(self, device: torch.device, interval: float = 0.005) -> None:
        import psutil

        self.device, self._proc, self._interval, self.peak_mb = device, psutil.Process(), interval, 0.0
        self._stop = threading.Event()

    def _sample(self) -> None:
        while not self._stop.is_set():
            self._peak = max(self._peak, self._proc.memory_info().rss)
            time.sleep(self._interval)

    def __enter__(self) -> PeakMemory:
        gc.collect()  # the previous mode's tensors and freed heap go back first: a clean baseline
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL("libc.so.6").malloc_trim(0)
        if self.device.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self._base = torch.cuda.memory_allocated()
        else:
            self._base = self._peak = self._proc.memory_info().rss
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.device.type == "cuda":
            self.peak_mb = (torch.cuda.max_memory_allocated() - self._base) / 2**20
        else:
            self._stop.set()
            self._thread.join()
            self.peak_mb = (self._peak - self._base) / 2**20


def naive_loss(logits: torch.Tensor, ids: torch.Tensor, teacher_logits: torch.Tensor, *, alpha: float, beta: float,
               temperature: float) -> torch.Tensor:
    """The textbook ``α·CE + β·KL(p_t ‖ p_s)`` on full logits, differentiated by autograd."""
    s, t = logits[:, :-1].float(), teacher_logits[:, :-1].float()
    V = s.shape[-1]
    ce = F.cross_entropy(s.reshape(-1, V), ids[:, 1:].reshape(-1))
    kd = F.kl_div(F.log_softmax(s / temperature, -1), F.log_softmax(t / temperature, -1), log_target=True,
                  reduction="none").sum(-1).mean()
    return alpha * ce + beta * kd


def run_mode(mode: str, *, args: argparse.Namespace, teacher: Any, student_dir: str, batches: list[torch.Tensor],
             cache_dir: Path) -> dict[str, Any]:
    from transformers import AutoModelForCausalLM

    from subnas.training._losses import distillation_loss, teacher_topk
    from subnas.training._teacher_cache import TeacherCache, teacher_identity
    from subnas.training import TrainConfig
    from subnas.training._loop import precision

    device = torch.device(args.device)
    cfg = TrainConfig()  # the paper's α, β, T and top-k, and the default bf16 setting
    default_path = mode in ("kd-cold", "kd-warm", "ce")
    dtype = precision(cfg, device) if default_path else torch.float32
    autocast: Callable[[], Any] = (lambda: torch.autocast(device.type, dtype=dtype)) if dtype != torch.float32 \
        else contextlib.nullcontext
    student = AutoModelForCausalLM.from_pretrained(student_dir, dtype=torch.float32).to(device).train()
    vocab = int(student.get_output_embeddings().weight.shape[0])
    fused = mode != "naive-kd" and device.type in ("cpu", "cuda")
    optimizer = torch.optim.AdamW(student.parameters(), lr=cfg.lr, betas=(cfg.beta1, cfg.beta2),
                                  weight_decay=cfg.weight_decay, fused=fused or None)
    cache = None
    if mode in ("kd-cold", "kd-warm"):
        ident = teacher_identity(teacher, extra={"subnet": None, "precision": str(dtype)})
        cache = TeacherCache(cache_dir, teacher_id=ident, k=cfg.top_k or 0, temperature=cfg.temperature)

    def compute(ids: torch.Tensor) -> Any:
        with torch.no_grad(), autocast():
            t_logits = teacher(ids, use_cache=False).logits
        return t_logits if mode == "naive-kd" else teacher_topk(t_logits, cfg.top_k or 0, cfg.temperature)

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize()

    steps: list[dict[str, float]] = []
    with PeakMemory(device) as mem:
        for ids in batches:
            ids = ids.to(device)
            marks = [(time.perf_counter(), time.process_time())]

            def mark() -> None:
                sync()
                marks.append((time.perf_counter(), time.process_time()))
            target = None
            if mode != "ce":
                target = cache.targets(ids, compute, vocab_size=vocab) if cache is not None else compute(ids)
            mark()
            with autocast():
                logits = student(ids, use_cache=False).logits
            mark()
            if mode == "naive-kd":
                loss = naive_loss(logits, ids, target, alpha=cfg.alpha, beta=cfg.beta, temperature=cfg.temperature)
            else:
                loss = distillation_loss(logits, ids, target, alpha=cfg.alpha, beta=cfg.beta,
                                         temperature=cfg.temperature).loss
            mark()
            loss.backward()  # type: ignore[no-untyped-call]
            mark()
            torch.nn.utils.clip_grad_norm_(student.parameters(), cfg.grad_clip)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            mark()
            del logits, target, loss
            step = {name: b[0] - a[0] for name, a, b in zip(PHASES, marks, marks[1:])}
            step.update({f"{name}_cpu": b[1] - a[1] for name, a, b in zip(PHASES, marks, marks[1:])})
            step["wall"] = marks[-1][0] - marks[0][0]
            step["cpu"] = marks[-1][1] - marks[0][1]
            steps.append(step)
    measured = steps[args.warmup:] or steps
    tokens = batches[0].numel()
    threads = torch.get_num_threads() if device.type == "cpu" else 1
    median = {k: statistics.median(s[k] for s in measured) for k in measured[0]}
    return {"mode": mode, "precision": str(dtype).removeprefix("torch."), "tokens_per_s": tokens / median["wall"],
            "tokens_per_cpu_s": tokens / (median["cpu"] / threads), "phases_s": {p: median[p] for p in PHASES},
            "phases_cpu_s": {p: median[f"{p}_cpu"] / threads for p in PHASES},
            "peak_memory_mb": mem.peak_mb, "cache": dict(cache.stats) if cache is not None else None,
            "steps_measured": len(measured)}


def trainer_runs(args: argparse.Namespace, supernet: Any, student_dir: str, tmp: Path) -> list[dict[str, Any]]:
    """The real `distill` entry point, default settings, cold then warm on a fresh cache folder."""
    from subnas.training import distill
    from subnas.training._log import read_log

    out = []
    for name in ("distill-cold", "distill-warm"):
        summary = distill(supernet, "default", tmp / name, student=student_dir, seq_len=args.seq_len,
                          batch_size=args.batch_size, max_steps=args.warmup + args.steps, eval_every=0,
                          checkpoint_every=10**9, progress=False, val_data=None, device=args.device,
                          teacher_cache=str(tmp / "trainer-cache"))
        rows = [r for r in read_log(tmp / name / "log.csv") if r.get("tokens_per_s")]
        speeds = [r["tokens_per_s"] for r in rows[args.warmup:]] or [r["tokens_per_s"] for r in rows]
        out.append({"mode": name, "tokens_per_s": statistics.median(speeds), "precision": summary["precision"],
                    "cache": summary["teacher_cache"]})
    return out


MODE_NAMES = {"naive-kd": "naive full-logit KD", "kd-fp32": "library loss + fused AdamW, no cache",
              "kd-cold": "default path, cold cache", "kd-warm": "default path, warm cache",
              "ce": "CE pretraining (default path)", "distill-cold": "`subnas.training.distill`, cold cache",
              "distill-warm": "`subnas.training.distill`, warm cache"}


def markdown(path: Path) -> str:
    """The table of docs/training.md from a ``--json`` file (``--report``)."""
    data = json.loads(path.read_text())
    head = ("| mode | precision | tokens/s | tokens/CPU-s | × naive (wall / CPU) | "
            + " | ".join(PHASES) + " | peak MB |")
    lines = [head, "|" + "---|" * (6 + len(PHASES))]
    for r in data["results"]:
        if "phases_s" not in r:  # a `distill` run: its own log's tokens/s only
            lines.append(f"| {MODE_NAMES.get(r['mode'], r['mode'])} | {r['precision']} | {r['tokens_per_s']:.0f} | | "
                         f"{r.get('speedup_vs_naive', float('nan')):.2f} |" + " |" * (len(PHASES) + 1))
            continue
        phases = " | ".join("–" if r["mode"] == "ce" and p == "teacher" else
                            f"{r['phases_s'][p]:.2f} / {r['phases_cpu_s'][p]:.2f}" for p in PHASES)
        lines.append(f"| {MODE_NAMES.get(r['mode'], r['mode'])} | {r['precision']} | {r['tokens_per_s']:.0f} | "
                     f"{r['tokens_per_cpu_s']:.0f} | {r.get('speedup_vs_naive', 1):.2f} / "
                     f"{r.get('cpu_speedup_vs_naive', 1):.2f} | {phases} | {r['peak_memory_mb']:.0f} |")
    return "\n".join(lines)


def main() -> None:
    if "--report" in sys.argv:  # python benchmarks/train_speed.py --report docs/benchmarks/train_speed.json
        print(markdown(Path(sys.argv[sys.argv.index("--report") + 1])))
        return
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="default", help="teacher / supernet (default: offline SmolLM2-135M)")
    ap.add_argument("--subnet", default='{"n_layers": 18}', help="student sub-network as JSON")
    ap.add_argument("--seq-len", type=int, default=256)
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--steps", type=int, default=3, help="measured steps per mode")
    ap.add_argument("--warmup", type=int, default=1, help="unmeasured steps first, per mode")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    ap.add_argument("--modes", default=",".join(MODES))
    ap.add_argument("--no-trainer", action="store_true", help="skip the end-to-end `distill` runs")
    ap.add_argument("--json", type=str, default=None, help="also write the results to this file")
    args = ap.parse_args()
    modes = args.modes.split(",")
    import subprocess

    # The commit the measured code is at, read before measuring (the tree may move on during a long run).
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                            cwd=Path(__file__).resolve().parent).stdout.strip() or None
    if "kd-warm" in modes and ("kd-cold" not in modes or modes.index("kd-cold") > modes.index("kd-warm")):
        ap.error("kd-warm reads the cache that kd-cold fills: list kd-cold before it")

    from subnas import Supernet, SubNetwork, extract
    from subnas.data._tokens import BlockOrder, load_token_blocks

    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    supernet = Supernet.from_pretrained(args.model, device=device)
    teacher = supernet.model.eval().requires_grad_(False)
    blocks = load_token_blocks("default", supernet.tokenizer, seq_len=args.seq_len)
    order = BlockOrder(len(blocks), batch_size=args.batch_size, seed=0)
    batches = [blocks.batch(order.batch(s)) for s in range(args.warmup + args.steps)]
    results: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        subnet = SubNetwork.from_dict(json.loads(args.subnet))
        student = extract(supernet, subnet, tmp / "student")
        print(f"teacher {args.model} ({sum(p.numel() for p in teacher.parameters()):,} parameters); student "
              f"{subnet.to_dict()} ({student.num_parameters:,}); seq {args.seq_len} x batch {args.batch_size}, "
              f"{args.warmup}+{args.steps} steps a mode; device {args.device}, {torch.get_num_threads()} threads, "
              f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY')}",
              flush=True)
        print("per phase: median seconds per step, wall clock / CPU time divided by the threads")
        print(f"{'mode':13s} {'prec':8s} {'tok/s':>7s} {'tok/cpu-s':>9s}  " + " ".join(f"{p:>13s}" for p in PHASES)
              + f" {'peak MB':>8s}", flush=True)
        for mode in modes:
            r = run_mode(mode, args=args, teacher=teacher, student_dir=student.path, batches=batches,
                         cache_dir=tmp / "cache")
            results.append(r)
            print(f"{mode:13s} {r['precision']:8s} {r['tokens_per_s']:7.0f} {r['tokens_per_cpu_s']:9.0f}  "
                  + " ".join(f"{r['phases_s'][p]:6.2f}/{r['phases_cpu_s'][p]:5.2f}s" for p in PHASES)
                  + f" {r['peak_memory_mb']:8.0f}",
                  flush=True)
        if not args.no_trainer and "naive-kd" in args.modes:
            for r in trainer_runs(args, supernet, student.path, tmp):
                results.append(r)
                print(f"{r['mode']:13s} {r['precision']:8s} {r['tokens_per_s']:7.0f}   (subnas.training.distill, "
                      f"cache {r['cache']})", flush=True)
    base = next((r for r in results if r["mode"] == "naive-kd"), None)
    if base is not None:
        print("speed-up over naive full-logit KD (wall clock / CPU time; on a shared machine trust CPU time):")
        for r in results:
            r["speedup_vs_naive"] = r["tokens_per_s"] / base["tokens_per_s"]
            if "tokens_per_cpu_s" in r:
                r["cpu_speedup_vs_naive"] = r["tokens_per_cpu_s"] / base["tokens_per_cpu_s"]
            print(f"  {r['mode']:13s} {r['speedup_vs_naive']:5.2f}x" +
                  (f" / {r['cpu_speedup_vs_naive']:5.2f}x" if "cpu_speedup_vs_naive" in r else ""))
    meta = {"argv": sys.argv[1:], "commit": commit, "device": args.device, "threads": torch.get_num_threads(),
            "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"), "load_average": os.getloadavg(),
            "torch": torch.__version__}
    if args.json:
        from subnas._io import atomic_write_text

        atomic_write_text(Path(args.json), json.dumps({"meta": meta, "results": results}, indent=2) + "\n")


if __name__ == "__main__":
    main()
