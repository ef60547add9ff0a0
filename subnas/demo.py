"""The main job on the built-in default (README command 1): real SmolLM2-135M, real Wikipedia text.

search -> extract -> train -> evaluate, and the paper's comparison at equal training tokens
(Table 14 / Figure 16 in miniature):

(a) the searched sub-network, initialised from the supernet, **distilled** from the full model;
(b) the same sub-network, initialised from the supernet, trained with **cross-entropy**;
(c) the same architecture from **random init**, trained with cross-entropy (the paper's baseline).

Each run uses the peak learning rate that suits it (`DEFAULT_LRS`, chosen by
``benchmarks/lr_sweep.py`` on the corpus's search split; docs/training.md). The job ends with a
verdict in words next to the teacher's perplexity, a plot with the teacher as a line, and
``summary.json``.

Every stage writes into ``out_dir`` and resumes when the job is run again (the search from its
Optuna storage, each training run from its last checkpoint). A finished job keeps only what a user
needs: the three trained models (no optimizer state) and the searched ``subnet.json``; the
untrained extraction's weights are dropped (``subnas extract default --subnet
OUT/search/bin0_best_subnet.json`` writes them again in a second).
"""

from __future__ import annotations

import csv
import json
import sys
import time
from pathlib import Path
from typing import Any

from subnas.data._assets import shareable_name
from subnas._io import atomic_write_text

#: The three runs, in order: (name, init, loss).
RUNS = (("distilled", "supernet", "distillation"), ("cross-entropy", "supernet", "cross-entropy"),
        ("random init", "random", "cross-entropy"))
#: Peak learning rate of each run (cosine to a tenth of it after linear warmup). Chosen by
#: ``benchmarks/lr_sweep.py`` at 32,768 tokens, 4 x 128 tokens per step, on the search split:
#: the best of {1e-4, 3e-4, 1e-3} for the supernet-initialised runs and of {1e-3, 3e-3, 1e-2} for
#: random init (table in docs/training.md).
DEFAULT_LRS = {"distilled": 3e-4, "cross-entropy": 3e-4, "random init": 3e-3}
FOLDERS = {"distilled": "distill", "cross-entropy": "ce", "random init": "random"}


def _say(message: str) -> None:
    print(f"[subnas demo] {message}", file=sys.stderr, flush=True)


def demo(out_dir: str | Path = "runs/demo", *, model: str = "default", data: str = "default",
         bin: str = "85M-100M", epochs: int = 2, population: int = 6, train_tokens: int = 40_960,
         seq_len: int = 128, batch_size: int = 4, eval_seqs: int = 16, seed: int = 0,
         lrs: dict[str, float] | None = None, warmup_steps: int = 8) -> dict[str, Any]:
    """Run the main job; returns (and writes to ``out_dir/summary.json``) the comparison table.

    Args:
        out_dir: the run folder (rerun to resume).
        model: the model to search in: a model folder, hub name or ``"default"`` (offline SmolLM2-135M).
        data: training text; validation reads its held-out split.
        bin: parameter bin of the searched sub-network.
        epochs: evolution epochs.
        population: evolution population size.
        train_tokens: training tokens per run (equal for all).
        seq_len: tokens per sequence.
        batch_size: sequences per step.
        eval_seqs: validation sequences per evaluation.
        seed: search and training seed.
        lrs: peak learning rate per run, by name, replacing those of `DEFAULT_LRS` (swept, see
            docs/training.md).
        warmup_steps: linear warmup steps of every run.
    """
    from subnas.evaluation._perplexity import evaluate
    from subnas.supernet import Supernet

    lrs = check_lrs(lrs)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    supernet = Supernet.from_pretrained(model)
    val = "default:validation" if data == "default" else data

    _say(f"1/5 search: coarse-uniform space in importance order, bin {bin}, perplexity fitness, seeded evolution "
         f"for {epochs} epochs")
    best, subnet = search_subnet(supernet, out / "search", bin=bin, data=data, seq_len=seq_len, epochs=epochs,
                                 population=population, seed=seed)
    _say(f"2/5 extract the best sub-network ({best['best_parameters']:,} parameters)")
    runs = train_three(supernet, subnet, out, data=data, val=val, train_tokens=train_tokens, seq_len=seq_len,
                       batch_size=batch_size, eval_seqs=eval_seqs, seed=seed, lrs=lrs, warmup_steps=warmup_steps,
                       step=3)
    teacher = evaluate(supernet, data=val, seq_len=seq_len, num_seqs=eval_seqs, progress=False)
    drop_init_weights(out / "subnet", model)  # every run finished: the untrained extraction is no longer needed
    summary = {"model": shareable_name(supernet.source), "bin": best["bin"], "subnet": subnet.to_dict(),
               "parameters": runs[0]["parameters"], "teacher_parameters": supernet.count_parameters(),
               "export_format": runs[0]["export_format"],
               "search": {"evaluations": best["evaluations"], "best_perplexity_untrained": best["best_fitness"],
                          "split": "search", **({"warning": best["warning"]} if best.get("warning") else {})},
               "teacher_perplexity": teacher["perplexity"],
               "validation": {"data": val, "seq_len": seq_len, "num_seqs": eval_seqs},
               "train_tokens": train_tokens, "runs": runs, "seconds": time.perf_counter() - start,
               "out_dir": str(out)}
    summary["verdict"] = verdict(summary)
    summary["plot"] = plot_comparison([summary], out / "comparison.png")
    summary["disk_bytes"] = disk_usage(out, exclude=out / "summary.json")
    atomic_write_text(out / "summary.json", json.dumps(summary, indent=2) + "\n")
    return summary


def check_lrs(lrs: dict[str, float] | None) -> dict[str, float]:
    """`DEFAULT_LRS` updated with ``lrs``; unknown run names and rates <= 0 are errors."""
    merged = dict(DEFAULT_LRS)
    for name, lr in (lrs or {}).items():
        if name not in DEFAULT_LRS:
            raise ValueError(f"learning rate for unknown run {name!r}; the runs are {list(DEFAULT_LRS)}")
        if not lr > 0:
            raise ValueError(f"learning rate of {name!r} is {lr!r}; give a number > 0")
        merged[name] = float(lr)
    return merged


def search_subnet(supernet: Any, out: Path, *, bin: str, data: str, seq_len: int, epochs: int, population: int,
                  seed: int) -> tuple[dict[str, Any], Any]:
    """The default search (importance order, seeded evolution, perplexity on the search split)."""
    from subnas.search_driver import search
    from subnas.subnet import SubNetwork

    # Never select and report on the same tokens (docs/design.md#measure-the-product): the search scores candidates on
    # the corpus's search split; every reported number comes from the validation split.
    search_data, calibration = ("default:search", "default:calibration") if data == "default" else (data, data)
    found = search(supernet, space="coarse-uniform", bins=[bin], fitness="perplexity", data=search_data, seq_len=seq_len,
                   num_seqs=4, calibration=calibration, sampler="evolution", epochs=epochs, out_dir=out, seed=seed,
                   sampler_options={"population_size": population, "num_elites": max(2, population // 3)})
    best = found["bins"][0]
    return best, SubNetwork.from_dict(best["best_subnet"])


def train_three(supernet: Any, subnet: Any, out: Path, *, data: str, val: str, train_tokens: int, seq_len: int,
                batch_size: int, eval_seqs: int, seed: int, lrs: dict[str, float], warmup_steps: int,
                step: int | None = None, on_run: Any = None) -> list[dict[str, Any]]:
    """Train ``subnet`` three ways (`RUNS`) at ``train_tokens`` each, in ``out/{distill,ce,random}``.

    The sub-network is extracted into ``out/subnet`` when a run still needs it. A run whose folder
    holds a finished model is not touched again (its summary is read back), so a rerun is cheap
    and needs no extraction. Returns one row per run: learning rate, tokens, start and end
    validation perplexity, its curve, tokens/s and the model folder; ``on_run(row)`` is called as
    each run finishes (a benchmark merges it into its results at once).
    """
    from subnas.lookups import get_extractor
    from subnas.training import distill, pretrain

    steps = max(1, train_tokens // (seq_len * batch_size))
    options = dict(seq_len=seq_len, batch_size=batch_size, max_tokens=train_tokens, eval_seqs=eval_seqs,
                   eval_every=max(1, steps // 6), checkpoint_every=max(1, steps // 4), warmup_steps=warmup_steps,
                   seed=seed, val_data=val,
                   # One distillation run per text: a top-k cache (k x 6 bytes per token) would only cost disk.
                   teacher_cache="off")
    _claim_folder(out, {"subnet": subnet.to_dict(), "data": data, "val": val, "lrs": lrs,
                        **{k: v for k, v in options.items() if k in ("seq_len", "batch_size", "max_tokens",
                                                                      "warmup_steps", "seed")}})
    init = out / "subnet"
    extracted: dict[str, Any] = {}

    def student() -> str:
        if not extracted:
            if not (init / "model.safetensors").is_file() and not (init / "model.safetensors.index.json").is_file():
                # Unpadded: the random-init baseline must re-initialise the searched architecture itself.
                result = get_extractor("transformers", pad=False).extract(supernet, subnet, init, overwrite=True)
                extracted.update(parameters=result.num_parameters, format=result.format)
            else:
                extracted.update(_extract_info(init))
        return str(init)

    rows = []
    for number, (name, init_kind, loss) in enumerate(RUNS):
        folder = out / FOLDERS[name]
        run_options = {**options, "lr": lrs[name], "min_lr": lrs[name] / 10}
        result = finished_run(folder)
        if result is None:
            if step is not None:
                _say(f"{step + number}/5 ({'abc'[number]}) {name}: {init_kind} init, {loss}, lr {lrs[name]:g}, "
                     f"{train_tokens:,} tokens")
            path = student()
            if name == "distilled":
                result = distill(supernet, data, folder, student=path, **run_options)
            else:
                result = pretrain(path, data, folder, init="random" if init_kind == "random" else "pretrained",
                                  **run_options)
        curve = read_curve(Path(result["log"]))
        rows.append({"run": name, "init": init_kind, "loss": loss, "lr": lrs[name], "tokens": result["tokens"],
                     "start_perplexity": curve[0][1] if curve else None, "val_perplexity": result["val_perplexity"],
                     "tokens_per_s": result["tokens_per_s"], "model_dir": result["model_dir"], "curve": curve})
        if on_run is not None:
            on_run(rows[-1])
    info = extracted or _extract_info(init) or {}
    for row in rows:
        row["parameters"], row["export_format"] = info.get("parameters"), info.get("format")
    return rows


def _claim_folder(out: Path, identity: dict[str, Any]) -> None:
    """Record what ``out``'s runs train (``comparison.json``); refuse a folder whose runs trained
    something else, since its finished runs would otherwise be read back as this comparison's."""
    path = out / "comparison.json"
    identity = json.loads(json.dumps(identity))  # tuples -> lists, as read back
    if path.is_file():
        recorded = json.loads(path.read_text())
        changed = sorted(k for k in set(recorded) | set(identity) if recorded.get(k) != identity.get(k))
        if changed:
            raise ValueError(f"{out} holds runs of another comparison (different {', '.join(changed)}); "
                             "give another output folder, or the same settings to resume it")
        return
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(identity, indent=1) + "\n")


def _extract_info(folder: Path) -> dict[str, Any]:
    """Parameters and format of an extraction, from its ``subnas_extract.json`` (kept after the
    weights are dropped)."""
    path = folder / "subnas_extract.json"
    if not path.is_file():
        return {}
    meta = json.loads(path.read_text())
    return {"parameters": meta.get("num_parameters"), "format": meta.get("format")}


def finished_run(folder: Path) -> dict[str, Any] | None:
    """The summary of a finished training run in ``folder`` (model written), else ``None``."""
    path = folder / "summary.json"
    if not path.is_file():
        return None
    try:
        result = json.loads(path.read_text())
    except ValueError:
        return None
    if result.get("complete") and Path(result.get("model_dir") or "").joinpath("config.json").is_file():
        return dict(result)
    return None


def drop_init_weights(folder: Path, model: str = "default") -> int:
    """Delete the weight files of an extraction (config, tokenizer and subnet.json stay, and its
    README says how to write them again); bytes freed."""
    files = list(folder.glob("*.safetensors")) + list(folder.glob("model.safetensors.index.json"))
    if not files:
        return 0
    freed = sum(p.stat().st_size for p in files)
    note = (f"\nThe weights were dropped after training to save {freed / 1e6:.0f} MB; write them again with\n"
            f"`subnas extract {model} --subnet {folder / 'subnet.json'} --out FOLDER`.\n")
    readme = folder / "README.md"
    atomic_write_text(readme, (readme.read_text() if readme.is_file() else "") + note)
    for path in files:
        path.unlink()
    return freed


def disk_usage(folder: Path, exclude: Path | None = None) -> int:
    """Bytes of the files under ``folder`` (without ``exclude``)."""
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file() and not p.is_symlink() and p != exclude)


def read_curve(log: Path) -> list[tuple[int, float]]:
    """(tokens, validation perplexity) points of a training log."""
    if not log.is_file():
        return []
    with open(log, newline="") as f:
        return [(int(r["tokens"]), float(r["val_perplexity"])) for r in csv.DictReader(f) if r.get("val_perplexity")]


def _millions(n: int | None) -> str:
    return "?" if n is None else f"{n / 1e6:.0f}M"


def verdict(summary: dict[str, Any]) -> str:
    """What the numbers say, in words: only statements that the numbers in ``summary`` make true."""
    by = {r["run"]: r for r in summary["runs"]}
    kd, ce, rnd = by["distilled"], by["cross-entropy"], by["random init"]
    teacher = summary["teacher_perplexity"]
    ratio = kd["val_perplexity"] / teacher
    size = _millions(summary.get("parameters"))
    share = (f" ({100 * summary['parameters'] / summary['teacher_parameters']:.0f}% of the teacher's parameters)"
             if summary.get("parameters") and summary.get("teacher_parameters") else "")
    lines = [f"The distilled {size} model{share} reaches validation perplexity {kd['val_perplexity']:.1f}, "
             f"{ratio:.2f}x the teacher's {teacher:.1f} ({'within' if ratio <= 3 else 'not within'} 3x); "
             f"random init of the same architecture reaches {rnd['val_perplexity']:,.0f} after the same "
             f"{rnd['tokens']:,} tokens."]
    if kd["val_perplexity"] < ce["val_perplexity"]:
        lines.append(f"Distillation beats cross-entropy from the same supernet weights at equal tokens "
                     f"({kd['val_perplexity']:.1f} vs {ce['val_perplexity']:.1f}).")
    else:
        lines.append(f"At this budget distillation does NOT beat cross-entropy from the same supernet weights "
                     f"({kd['val_perplexity']:.1f} vs {ce['val_perplexity']:.1f}).")
    start = kd["start_perplexity"]
    if start is not None:
        lines.append(f"Training took the extracted sub-network from {start:.1f} to {kd['val_perplexity']:.1f} "
                     f"(distilled); supernet init starts {'below' if start < rnd['val_perplexity'] else 'above'} "
                     f"where random init ends.")
    return " ".join(lines)


def plot_comparison(summaries: list[dict[str, Any]], path: Path) -> str | None:
    """Validation perplexity vs tokens of each run (one line per run and seed), the teacher as a
    horizontal line; returns the path, or ``None`` without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    colors = {"distilled": "tab:blue", "cross-entropy": "tab:orange", "random init": "tab:red"}
    teacher = summaries[0]["teacher_perplexity"]
    # Left: every run (log scale: random init is orders of magnitude above); right: the two
    # supernet-initialised runs on a linear scale, where their difference is visible.
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for ax, keep in ((axes[0], lambda row: True), (axes[1], lambda row: row["init"] != "random")):
        labelled: set[str] = set()
        for summary in summaries:
            for row in summary["runs"]:
                if row["curve"] and keep(row):
                    xs, ys = zip(*row["curve"])
                    label = row["run"] if row["init"] == "random" else f"{row['run']} (supernet init)"
                    ax.plot(xs, ys, marker="o", ms=3, color=colors.get(row["run"]),
                            label=None if label in labelled else label)
                    labelled.add(label)
        ax.axhline(teacher, color="black", ls="--", lw=1, label=f"teacher (full model): {teacher:.1f}")
        ax.set_xlabel("training tokens")
        ax.set_ylabel("validation perplexity")
        ax.legend(fontsize=8)
    axes[0].set_yscale("log")
    axes[1].set_ylim(0, None)
    size = _millions(summaries[0].get("parameters"))
    seeds = f", {len(summaries)} seeds" if len(summaries) > 1 else ""
    axes[0].set_title(f"searched {size} sub-network, equal tokens{seeds}")
    axes[1].set_title("supernet init only (linear scale)")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return str(path)


def _describe(subnet: dict[str, Any]) -> str:
    """Sizes and kept layers of a sub-network, short enough for a terminal (index sets omitted)."""
    def first(key: str) -> Any:
        value = subnet.get(key)
        return value[0] if isinstance(value, list) and len(set(value)) == 1 else value

    sizes = {k: first(k) for k in ("n_layers", "n_embd", "num_heads", "query_groups", "head_size",
                                   "intermediate_size") if subnet.get(k) is not None}
    layers = subnet.get("layer_indices")
    return ", ".join(f"{k}={v}" for k, v in sizes.items()) + (f", layers {layers}" if layers else "")


def format_summary(summary: dict[str, Any]) -> str:
    params = summary["parameters"]
    share = f" ({100 * params / summary['teacher_parameters']:.1f}% of the teacher)" if params and summary.get(
        "teacher_parameters") else ""
    lines = [f"searched sub-network in bin {summary['bin'][0]:,}-{summary['bin'][1]:,}: "
             f"{params:,} parameters{share}, {summary['export_format']} export, "
             f"{_describe(summary['subnet'])} (full definition in summary.json)",
             f"untrained perplexity {summary['search']['best_perplexity_untrained']:.4g} (search split) after "
             f"{summary['search']['evaluations']} evaluations; teacher perplexity {summary['teacher_perplexity']:.2f} "
             f"(validation split, {summary['validation']['num_seqs']} x {summary['validation']['seq_len']} tokens)",
             *([f"warning: {summary['search']['warning']}"] if summary["search"].get("warning") else []),
             "(two texts, two untrained numbers: the search ranked candidates on the search split; 'ppl start' "
             "below is the same untrained sub-network on the validation split, which no choice was made on)",
             "", f"{'run':<15}{'init':<10}{'loss':<14}{'lr':>8}{'tokens':>9}{'ppl start':>11}{'ppl end':>10}"
                 f"{'x teacher':>11}{'tok/s':>7}"]
    for r in summary["runs"]:
        start = "" if r["start_perplexity"] is None else f"{r['start_perplexity']:.4g}"
        lines.append(f"{r['run']:<15}{r['init']:<10}{r['loss']:<14}{r['lr']:>8.0e}{r['tokens']:>9,}{start:>11}"
                     f"{r['val_perplexity']:>10.4g}{r['val_perplexity'] / summary['teacher_perplexity']:>10.1f}x"
                     f"{r['tokens_per_s']:>7.0f}")
    lines += ["", summary["verdict"], "", f"plot: {summary['plot']}",
              f"total {summary['seconds']:.0f} s; {summary['disk_bytes'] / 1e9:.2f} GB in {summary['out_dir']}"]
    return "\n".join(lines)
