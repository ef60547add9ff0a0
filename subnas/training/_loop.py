"""The training loop behind `subnas.training.pretrain` and `subnas.training.distill`.

One loop serves both modes and any number of processes. Per optimizer step ``s`` (1-based):

1. torch's RNG is reseeded from ``(seed, s, rank)`` and the learning rate is set from ``s``
   (linear warmup, then cosine from ``lr`` to ``min_lr``, paper Appendix C);
2. the global batch ``BlockOrder.batch(s − 1)`` is split into this rank's shard and micro-batches;
3. per micro-batch: the teacher's top-k targets, read from the verified on-disk cache
   (`subnas.training._teacher_cache`) or computed (no grad; reduced to top-k at once) and stored; student
   forward under bf16 autocast where the hardware runs bf16 natively (`precision`), the chunked
   loss (`subnas.training._losses`), backward (DDP or FSDP, `subnas.training._fsdp`, synchronises on
   the last micro-batch only);
4. the loss is averaged over ranks and checked: NaN/inf stops the run naming the step, before
   the weights are touched; gradients are clipped and AdamW steps;
5. rank 0 logs, evaluates and checkpoints on schedule.

Everything that decides step ``s`` is a function of ``s`` and the checkpointed weights and
optimizer state, which is why a resumed run is bit-for-bit the uninterrupted one on CPU.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

import torch
from tqdm.auto import tqdm

from subnas.training import _distributed as distributed
from subnas.training import _fsdp
from subnas._io import atomic_directory, atomic_write_text, model_fingerprint, transformers_bars_off
from subnas.data import DataSourceError, cache_root, resolve_text_source
from subnas.training._checkpoints import CHECKPOINTS, latest_checkpoint, load_checkpoint, require_same_run, save_checkpoint
from subnas.data._tokens import BlockOrder, load_token_blocks, shard
from subnas.evaluation._perplexity import check_sequence_length, perplexity, requires_bos, resolve_device, tokenize_for_eval
from subnas.training._losses import LossParts, TeacherTopK, distillation_loss, teacher_topk
from subnas.training._teacher_cache import TeacherCache, teacher_identity
from subnas.training._config import TrainConfig
from subnas.training._log import LOG_FILE, PLOT_FILE, TrainingLog, plot_training_curve

logger = logging.getLogger(__name__)


# ---- the seam (supernet training, `subnas.training._supernet`, plugs in here) ----
@dataclass(frozen=True)
class Objective:
    """What a micro-batch computes, when it is not one network's distillation/cross-entropy loss.

    The one seam through which another kind of training reuses this loop unchanged (schedules,
    resume, logging, DDP): ``module(ids, target, step)`` returns ``[loss, ce, kd]`` for one
    micro-batch (``loss`` with its graph; ``target`` the teacher's targets or None). It shares the
    student's parameters, and under DDP it is what the loop wraps, so that one forward and one
    backward cover everything it runs. ``save(student, folder)`` writes the finished model (default:
    ``save_pretrained`` and the tokenizer). ``fingerprint`` joins the run's fingerprint: a resume
    with other settings is refused.
    """

    module: torch.nn.Module
    save: Callable[[Any, Path], None] | None = None
    fingerprint: dict[str, Any] | None = None
# ---- end of the seam ----


class NonFiniteLossError(FloatingPointError):
    """The loss (or gradient norm) became NaN or infinite; the message names the step."""


def lr_at(step: int, cfg: TrainConfig, total: int) -> float:
    """Learning rate of the ``step``-th update (1-based): linear warmup, then cosine to ``min_lr``.

    Example:
        >>> cfg = TrainConfig(lr=1.0, min_lr=0.1, warmup_steps=2)
        >>> [round(lr_at(s, cfg, 5), 3) for s in range(1, 6)]
        [0.5, 1.0, 1.0, 0.55, 0.1]
    """
    if step <= cfg.warmup_steps:
        return cfg.lr * step / cfg.warmup_steps
    progress = (step - cfg.warmup_steps - 1) / max(1, total - cfg.warmup_steps - 1)
    return cfg.min_lr + (cfg.lr - cfg.min_lr) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def _device(cfg: TrainConfig, info: distributed.DistInfo) -> torch.device:
    if cfg.device is not None:
        return resolve_device(cfg.device)  # a missing device fails here, naming what is available
    return torch.device(f"cuda:{info.local_rank}" if torch.cuda.is_available() else "cpu")


def precision(cfg: TrainConfig, device: torch.device) -> torch.dtype:
    """The autocast dtype of the forward passes: bf16 when ``cfg.bf16`` and the hardware has
    native bf16 matrix units (CUDA; CPUs with AVX512-BF16 or AMX), else float32.

    On an AVX512-BF16 CPU (AMD EPYC, one thread, 4×256 tokens) bf16 autocast made the 92M
    student's forward + backward 2.2 s instead of 6.5 s and the 135M teacher's forward 0.95 s
    instead of 2.9 s. Without native support
    bf16 is emulated and slower, so float32 stays. Weights, optimizer state and the loss stay
    float32 either way (the loss upcasts the logits).
    """
    if not cfg.bf16:
        return torch.float32
    if device.type == "cuda":
        return torch.bfloat16
    if device.type == "cpu":
        native = getattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)() or \
            getattr(torch.cpu, "_is_amx_tile_supported", lambda: False)()
        return torch.bfloat16 if native else torch.float32
    return torch.float32


def _teacher_cache(cfg: TrainConfig, device: torch.device, teacher: Any, sources: dict[str, Any],
                   dtype: torch.dtype) -> TeacherCache | None:
    """The on-disk top-k cache this run uses, or ``None`` (see ``TrainConfig.teacher_cache``).

    ``"auto"`` caches on CPU, where the teacher's forward and top-k are a large part of a step
    (benchmarks/train_speed.py). On a GPU they take milliseconds, and writing k·6 bytes per token
    to disk may cost more than it saves (not measured yet), so ``"auto"`` leaves it off there;
    ``"on"`` or a folder turns it on anywhere.
    """
    where = cfg.teacher_cache
    if teacher is None or not cfg.top_k or where == "off" or (where == "auto" and device.type != "cpu"):
        return None
    root = cache_root() / "teacher_topk" if where in ("auto", "on") else Path(where).expanduser()
    ident = teacher_identity(teacher, extra={"subnet": sources.get("teacher_subnet"), "precision": str(dtype)})
    return TeacherCache(root, teacher_id=ident, k=cfg.top_k, temperature=cfg.temperature)


def _model_fingerprint(model: Any) -> str:
    return model_fingerprint(model, weights=False)


def _micro_batching(cfg: TrainConfig, world: int) -> tuple[int, int]:
    if cfg.batch_size % world:
        raise ValueError(f"batch_size {cfg.batch_size} does not split evenly over {world} processes")
    per_rank = cfg.batch_size // world
    micro = min(cfg.micro_batch_size or per_rank, per_rank)
    if per_rank % micro:
        raise ValueError(f"each process's share of {per_rank} sequences is not a multiple of "
                         f"micro_batch_size {micro}")
    return micro, per_rank // micro


def run_training(mode: str, *, student: Any, tokenizer: Any, teacher: Any, sources: dict[str, Any],
                 out_dir: Path, config: TrainConfig,
                 on_step: Callable[[dict[str, Any]], None] | None = None,
                 objective: Objective | None = None) -> dict[str, Any]:
    """Train ``student`` (in place) and write the run folder; see `subnas.training._run` for the layout.

    ``objective`` replaces the one-network loss (see `Objective`)."""
    cfg = config
    info = distributed.setup(cfg.device)
    device = _device(cfg, info)
    dtype = precision(cfg, device)
    if tokenizer is None:
        raise ValueError("training needs a tokenizer: the model folder has none; pass tokenizer=")
    check_sequence_length(student, cfg.seq_len)
    if teacher is not None:
        check_sequence_length(teacher, cfg.seq_len)
    # -- parallel: single process, DDP or FSDP (subnas.training._fsdp); FSDP moves only its shards to the device
    parallel = _fsdp.choose(cfg.parallel, world_size=info.world_size, device=device, student=student, teacher=teacher)
    collective = parallel == "fsdp"  # a sharded forward needs every process: all of them validate
    if not collective:
        student.to(device)
    if teacher is not None:
        (teacher if collective else teacher.to(device)).eval().requires_grad_(False)
    # --
    total = cfg.total_steps()
    micro, accum = _micro_batching(cfg, info.world_size)

    # Rank 0 tokenizes first (it writes the cache); the others then read the cache.
    # A streamed corpus is read only as far as the token budget needs.
    cap = total * cfg.batch_size * cfg.seq_len + cfg.seq_len if cfg.streaming else None

    def blocks_() -> Any:
        return load_token_blocks(sources["data"], tokenizer, seq_len=cfg.seq_len, add_bos=requires_bos(student),
                                 streaming=cfg.streaming, max_tokens=cap)
    blocks = blocks_() if info.is_main else None
    distributed.barrier()
    if blocks is None:
        blocks = blocks_()
    if len(blocks) < cfg.batch_size:
        raise DataSourceError(f"the training data {sources['data']!r} holds {len(blocks)} sequence(s) of "
                              f"{cfg.seq_len} tokens, fewer than one batch of {cfg.batch_size}; give more text or "
                              "a smaller --batch-size / --seq-len")
    order = BlockOrder(len(blocks), batch_size=cfg.batch_size, seed=cfg.seed)
    val_tokens = None
    if sources.get("val_data") and (info.is_main or collective):
        val_tokens = tokenize_for_eval(resolve_text_source(sources["val_data"]), tokenizer, seq_len=cfg.seq_len,
                                       num_seqs=cfg.eval_seqs, add_bos=requires_bos(student))

    fingerprint = {"mode": mode, "model": _model_fingerprint(student), "init": sources.get("init"),
                   "subnet": sources.get("subnet"),
                   "teacher": _model_fingerprint(teacher) if teacher is not None else None,
                   "teacher_subnet": sources.get("teacher_subnet"), "data": blocks.key, **cfg.identity(),
                   "precision": str(dtype), **({"objective": objective.fingerprint} if objective else {})}
    # Before the optimizer: FSDP replaces the parameters by their shards. An objective (supernet
    # training) runs its own module, whose sub-networks may leave parameters without a gradient.
    model = _fsdp.wrap(parallel, student, teacher, device, bf16=dtype == torch.bfloat16,
                       objective_module=objective.module if objective is not None else None)
    # The fused kernel: one pass over each parameter instead of a dozen (~7x faster on CPU, 92M).
    optimizer = torch.optim.AdamW(student.parameters(), lr=cfg.lr, betas=(cfg.beta1, cfg.beta2),
                                  weight_decay=cfg.weight_decay, fused=device.type in ("cpu", "cuda"))
    start, tokens_seen, resumed_from = 0, 0, None
    last: dict[str, Any] = {}
    ckpt = latest_checkpoint(out_dir)
    if ckpt is not None:
        state = load_checkpoint(ckpt, model=student, optimizer=optimizer, fingerprint=fingerprint)
        start, tokens_seen, resumed_from = state["step"], state["tokens"], str(ckpt)
        last = {"step": start, "loss": state.get("loss")}
        done = _finished_summary(out_dir) if start >= total else None
        if done is not None:
            return done  # already finished: the same call is a no-op
    elif (done := _finished_summary(out_dir)) is not None:
        # Finished, its checkpoints dropped: the same call is a no-op, another run is refused.
        require_same_run(out_dir, _recorded_fingerprint(out_dir), fingerprint, what="the finished model")
        return done
    elif info.is_main:
        atomic_write_text(out_dir / "run.json", json.dumps(
            {"mode": mode, "sources": sources, "config": asdict(cfg), "fingerprint": fingerprint,
             "world_size": info.world_size}, indent=2, default=str) + "\n")
    log = TrainingLog(out_dir, enabled=info.is_main, resume_step=start if ckpt else None, tensorboard=cfg.tensorboard)

    autocast = (lambda: torch.autocast(device.type, dtype=dtype)) if dtype != torch.float32 \
        else contextlib.nullcontext
    # A cache hit skips the teacher's forward, which FSDP needs every process to run: no cache when sharded.
    cache = None if collective else _teacher_cache(cfg, device, teacher, sources, dtype)
    vocab = model_vocab_size(teacher) if teacher is not None else 0

    def teacher_targets(ids: torch.Tensor) -> torch.Tensor | TeacherTopK:
        with torch.no_grad(), autocast():
            t_logits = teacher(ids, use_cache=False).logits
        if not cfg.top_k:
            return t_logits  # type: ignore[no-any-return]
        # Only the top-k leaves this function: the full teacher logits are freed before the student runs.
        return teacher_topk(t_logits, cfg.top_k, cfg.temperature, chunk_size=cfg.loss_chunk_size)
    tokens_per_step = cfg.batch_size * cfg.seq_len
    began = time.perf_counter()

    def evaluate(step: int) -> dict[str, Any]:
        if val_tokens is None:
            return {}
        ppl = perplexity(student, val_tokens, batch_size=micro, device=device, progress=False)  # bf16 on CUDA
        return {"val_perplexity": ppl, "val_loss": math.log(ppl) if 0 < ppl < math.inf else ppl}

    if start == 0 and val_tokens is not None:
        row = {"step": 0, "tokens": 0, **evaluate(0)}
        log.write(row)
        last.update(row)

    def summary_of(steps: int, complete: bool, stopped: str | None = None) -> dict[str, Any]:
        # "complete" tells a finished run's summary from one written at a checkpoint or when the run
        # stopped, so nothing reads a half-done run as a result.
        return {"complete": complete, "stopped": stopped, "mode": mode, "out_dir": str(out_dir),
                "model_dir": str(out_dir / "model") if complete else None, "steps": steps, "total_steps": total,
                "tokens": tokens_seen, "final_loss": last.get("loss"), "val_perplexity": last.get("val_perplexity"),
                "tokens_per_s": (tokens_seen - start * tokens_per_step) / max(time.perf_counter() - began, 1e-9),
                "resumed_from": resumed_from, "world_size": info.world_size, "log": str(out_dir / LOG_FILE),
                "plot": None, "latest_checkpoint": str(latest_checkpoint(out_dir) or "") or None, "sources": sources,
                "precision": str(dtype).removeprefix("torch."),
                "teacher_cache": None if cache is None else {"folder": str(cache.folder), **cache.stats}}

    def write_summary(summary: dict[str, Any]) -> None:
        if info.is_main:
            atomic_write_text(out_dir / "summary.json", json.dumps(summary, indent=2, default=str) + "\n")

    bar = tqdm(total=total, initial=start, desc=mode, unit="step", disable=not (cfg.progress and info.is_main) or None)
    student.train()
    try:
        for step in range(start + 1, total + 1):
            t0 = time.perf_counter()
            torch.manual_seed((cfg.seed * 1_000_003 + step) * 1009 + info.rank)  # dropout etc.: a function of the step
            lr = lr_at(step, cfg, total)
            for group in optimizer.param_groups:
                group["lr"] = lr
            optimizer.zero_grad(set_to_none=True)
            mine = shard(order.batch(step - 1), info.rank, info.world_size)
            sums = torch.zeros(3, dtype=torch.float64)
            for i in range(accum):
                ids = blocks.batch(mine[i * micro:(i + 1) * micro]).to(device)
                target = None
                if cache is not None:
                    target = cache.targets(ids, teacher_targets, vocab_size=vocab)  # type: ignore[arg-type]
                elif teacher is not None:
                    target = teacher_targets(ids)
                with _fsdp.sync(parallel, model, last=i == accum - 1):
                    if objective is not None:
                        with autocast():
                            parts = LossParts(*model(ids, target, step))
                    else:
                        with autocast():
                            logits = model(ids, use_cache=False).logits
                        parts = distillation_loss(logits, ids, target, alpha=cfg.alpha, beta=cfg.beta,
                                                  temperature=cfg.temperature, kind=cfg.kl,  # type: ignore[arg-type]
                                                  chunk_size=cfg.loss_chunk_size)
                    (parts.loss / accum).backward()  # type: ignore[no-untyped-call]
                sums += torch.stack([parts.loss.detach(), parts.ce.detach(), parts.kd.detach()]).double().cpu()
            loss, ce, kd = (distributed.mean_across_ranks(sums / accum)).tolist()
            max_norm = cfg.grad_clip if cfg.grad_clip > 0 else math.inf
            grad_norm = _fsdp.clip_grad_norm(student, max_norm)
            if not (math.isfinite(loss) and math.isfinite(grad_norm)):
                what = f"loss {loss}" if not math.isfinite(loss) else f"gradient norm {grad_norm} (loss {loss:.4g})"
                raise NonFiniteLossError(
                    f"training stopped: {what} at step {step} of {total} ({tokens_seen:,} tokens seen); the "
                    f"weights were not updated. Last checkpoint: {latest_checkpoint(out_dir) or 'none'}. "
                    "Try a lower --lr, more warmup, or check the data.")
            optimizer.step()
            tokens_seen += tokens_per_step
            elapsed = time.perf_counter() - t0
            row = {"step": step, "tokens": tokens_seen, "loss": loss, "ce": ce,
                   "kd": kd if teacher is not None or objective is not None else None,
                   "lr": lr, "grad_norm": grad_norm, "tokens_per_s": tokens_per_step / max(elapsed, 1e-9),
                   "elapsed_s": time.perf_counter() - began}
            if (info.is_main or collective) and (step == total or (cfg.eval_every and step % cfg.eval_every == 0)):
                row.update(evaluate(step))
                student.train()
            log.write(row)
            last = row
            bar.update(1)
            bar.set_postfix(loss=f"{loss:.3f}", tok_s=f"{row['tokens_per_s']:.0f}")
            if step % cfg.checkpoint_every == 0 or step == total:
                if info.is_main or collective:  # sharded: every process writes its shards
                    save_checkpoint(out_dir, step=step, model=student, optimizer=optimizer, keep=cfg.keep_checkpoints,
                                    state={"tokens": tokens_seen, "loss": loss, "fingerprint": fingerprint},
                                    is_main=info.is_main)
                    if step < total and info.is_main:
                        write_summary(summary_of(step, complete=False))
                distributed.barrier()
            if on_step is not None:
                on_step({**row, "model": student, "optimizer": optimizer, "rank": info.rank})
    except BaseException as exc:
        done_steps = int(last.get("step") or start)
        stopped = "interrupted" if isinstance(exc, KeyboardInterrupt) else f"{type(exc).__name__}: {exc}"
        with contextlib.suppress(Exception):  # never hide the real error behind a failed summary write
            write_summary(summary_of(done_steps, complete=False, stopped=stopped))
        raise
    finally:
        bar.close()
        log.close()

    summary = summary_of(total, complete=True)
    gathered = _fsdp.full_state_dict(student) if collective else None  # collective: the whole model on rank 0
    if info.is_main:
        with atomic_directory(out_dir / "model", overwrite=True) as tmp, transformers_bars_off():
            if objective is not None and objective.save is not None:
                objective.save(student, tmp)
            elif gathered is not None:
                _fsdp.save_pretrained(student, tmp, gathered)
                tokenizer.save_pretrained(tmp)
            else:
                student.save_pretrained(tmp, safe_serialization=True)
                tokenizer.save_pretrained(tmp)
        png = plot_training_curve(out_dir / LOG_FILE, out_dir / PLOT_FILE, title=f"{mode}: {out_dir.name}")
        summary["plot"] = str(png) if png else None
        write_summary(summary)  # last: a complete summary means the model folder is complete too
        if not cfg.keep_final_checkpoint:
            # The finished model is what a user needs; the optimizer state in the checkpoints is
            # ~3x its size and only serves a resume that a complete run no longer needs.
            shutil.rmtree(out_dir / CHECKPOINTS, ignore_errors=True)
    distributed.barrier()
    return summary


def _recorded_fingerprint(out_dir: Path) -> dict[str, Any]:
    """The fingerprint ``out_dir/run.json`` records ({} when there is none to read)."""
    try:
        found = json.loads((out_dir / "run.json").read_text()).get("fingerprint")
    except (OSError, ValueError, AttributeError):
        return {}
    return found if isinstance(found, dict) else {}


def _finished_summary(out_dir: Path) -> dict[str, Any] | None:
    """The summary of a run that finished (complete summary and model folder), else ``None``."""
    try:
        summary: dict[str, Any] = json.loads((out_dir / "summary.json").read_text())
    except (OSError, ValueError):
        return None  # missing or unreadable: the final stage runs again
    # Summaries written before "complete" existed were written only at the very end.
    if not summary.get("complete", True) or not (out_dir / "model" / "config.json").is_file():
        return None
    return summary


def model_vocab_size(model: Any) -> int:
    """The number of tokens ``model`` predicts (a supernet's active pruned vocabulary counts)."""
    active = getattr(model, "active", None)  # a supernet whose active sub-network prunes the vocabulary
    if getattr(active, "vocab", None) is not None:
        return len(active.vocab)
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    return int(head.weight.shape[0]) if head is not None else int(model.config.vocab_size)
