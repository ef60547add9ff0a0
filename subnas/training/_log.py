"""Training logs: a CSV row per step, TensorBoard when installed, and a training-curve PNG.

The CSV is the record (``<run>/log.csv``); TensorBoard (``pip install tensorboard``) and the plot
(``pip install matplotlib``, or ``subnas[plot]``) are optional views of it. On resume the CSV is cut
back to the checkpoint's step, so rows of steps that were redone after a kill appear once.

Example:
    >>> import tempfile, pathlib
    >>> run = pathlib.Path(tempfile.mkdtemp())
    >>> log = TrainingLog(run)
    >>> log.write({"step": 1, "tokens": 64, "loss": 2.5})
    >>> log.close()
    >>> (run / "log.csv").read_text().splitlines()[1].split(",")[:3]
    ['1', '64', '2.5']
"""

from __future__ import annotations

import csv
import io
import logging
from pathlib import Path
from typing import Any

from subnas._io import atomic_write_text

logger = logging.getLogger(__name__)

FIELDS = ("step", "tokens", "loss", "ce", "kd", "lr", "grad_norm", "tokens_per_s", "val_loss", "val_perplexity",
          "elapsed_s")
LOG_FILE = "log.csv"
PLOT_FILE = "training_curve.png"


class TrainingLog:
    """Append-only CSV (+ TensorBoard) of training rows; a no-op when ``enabled`` is false (rank > 0)."""

    def __init__(self, run_dir: Path, *, enabled: bool = True, resume_step: int | None = None,
                 tensorboard: bool = True) -> None:
        self.path = Path(run_dir) / LOG_FILE
        self.enabled = enabled
        self._fh: Any = None
        self._tb: Any = None
        if not enabled:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        kept = _rows_up_to(self.path, resume_step) if resume_step is not None else []
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=FIELDS, extrasaction="ignore", lineterminator="\n")
        writer.writeheader()
        writer.writerows(kept)
        atomic_write_text(self.path, buf.getvalue())
        self._fh = open(self.path, "a", newline="")
        self._writer = csv.DictWriter(self._fh, fieldnames=FIELDS, extrasaction="ignore", lineterminator="\n")
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self._tb = SummaryWriter(str(Path(run_dir) / "tensorboard"))
            except ImportError:
                logger.debug("tensorboard is not installed; logging to %s only", self.path)

    def write(self, row: dict[str, Any]) -> None:
        if not self.enabled:
            return
        self._writer.writerow({k: _fmt(v) for k, v in row.items()})
        self._fh.flush()
        if self._tb is not None:
            for key, value in row.items():
                if key not in ("step", "elapsed_s") and isinstance(value, (int, float)):
                    self._tb.add_scalar(f"train/{key}" if not key.startswith("val") else f"val/{key}", value,
                                        global_step=int(row["step"]))

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None
        if self._tb is not None:
            self._tb.close()
            self._tb = None


def _fmt(value: Any) -> Any:
    return "" if value is None else (f"{value:.6g}" if isinstance(value, float) else value)


def _rows_up_to(path: Path, step: int) -> list[dict[str, str]]:
    try:
        with open(path, newline="") as fh:
            return [r for r in csv.DictReader(fh) if r.get("step", "").isdigit() and int(r["step"]) <= step]
    except OSError:
        return []


def read_log(path: Path) -> list[dict[str, float | None]]:
    """The CSV's rows with numbers parsed (empty cells as ``None``)."""
    with open(path, newline="") as fh:
        return [{k: (float(v) if v not in ("", None) else None) for k, v in r.items()} for r in csv.DictReader(fh)]


def plot_training_curve(csv_path: Path, png_path: Path, *, title: str = "training") -> Path | None:
    """Loss over tokens (and validation perplexity, when logged) as a PNG; ``None`` without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        logger.warning("matplotlib is not installed, so no training-curve plot was written; "
                       "pip install matplotlib (or subnas[plot])")
        return None
    rows = read_log(csv_path)
    train = [(r["tokens"], r["loss"]) for r in rows if r.get("loss") is not None]
    val = [(r["tokens"], r["val_perplexity"]) for r in rows if r.get("val_perplexity") is not None]
    fig, ax = plt.subplots(figsize=(7, 4))
    if train:
        ax.plot(*zip(*train), label="training loss", color="tab:blue")
    ax.set_xlabel("tokens")
    ax.set_ylabel("training loss (nats)")
    if val:
        ax2 = ax.twinx()
        ax2.plot(*zip(*val), "o-", label="validation perplexity", color="tab:orange")
        ax2.set_ylabel("validation perplexity")
        values = [v for _, v in val if v and v > 0]
        if values and max(values) / min(values) > 100:  # a supernet-initialised start can be 1e10
            ax2.set_yscale("log")
        ax2.legend(loc="upper center")
    ax.legend(loc="upper right")
    ax.set_title(title)
    fig.tight_layout()
    png_path = Path(png_path)
    tmp = png_path.with_name(f".{png_path.name}.tmp.png")
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    tmp.replace(png_path)
    return png_path
