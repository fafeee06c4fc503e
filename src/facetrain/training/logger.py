"""Training logs in the run folder: metrics.csv (every logged value, one row per log call),
TensorBoard events when tensorboard is installed, Weights & Biases when asked (`--use_wandb`), and
curves.png (loss, learning rate, validation)."""
from __future__ import annotations

import contextlib
import csv
import io
import math
import os
from pathlib import Path
from typing import Any

from facetrain.errors import ConfigError
from facetrain.io_utils import atomic_path
from facetrain.training.wandb_run import start_wandb

CSV_NAME = "metrics.csv"
CURVES_NAME = "curves.png"


def _tensorboard_writer(log_dir: Path):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # tensorboard is optional
        return None
    return SummaryWriter(log_dir=str(log_dir))


class MetricLogger:
    """`log(values, step, epoch)` appends a row (long format: step, epoch, name, value), so new metric
    names never rewrite the header and a resumed run appends to the same file."""

    def __init__(self, output_dir: str | os.PathLike, enabled: bool = True, wandb_project: str | None = None,
                 config: dict[str, Any] | None = None):
        self.enabled = enabled
        self.output_dir = Path(output_dir)
        self.csv_path = self.output_dir / CSV_NAME
        self._file = None
        self._writer = None
        self._tb = None
        self._wandb = None
        if enabled:
            created = not self.output_dir.exists()
            self.output_dir.mkdir(parents=True, exist_ok=True)
            if wandb_project:  # first: a W&B run that does not start leaves no metrics.csv behind
                try:
                    self._wandb = start_wandb(self.output_dir, wandb_project, config)
                except ConfigError:
                    if created:
                        with contextlib.suppress(OSError):
                            self.output_dir.rmdir()  # only when nothing else is in it
                    raise
            new = not self.csv_path.exists() or self.csv_path.stat().st_size == 0
            self._file = open(self.csv_path, "a", newline="")
            self._writer = csv.writer(self._file)
            if new:
                self._writer.writerow(["step", "epoch", "name", "value"])
            self._tb = _tensorboard_writer(self.output_dir / "tensorboard")

    def log(self, values: dict[str, Any], step: int, epoch: int) -> None:
        if not self.enabled:
            return
        for name, value in values.items():
            self._writer.writerow([step, epoch, name, repr(float(value))])
            if self._tb is not None:
                self._tb.add_scalar(name, float(value), step)
        if self._wandb is not None:
            self._wandb.log({name: float(value) for name, value in values.items()}, step=step)
        self._file.flush()

    def truncate_after(self, step: int) -> int:
        """Drop rows logged after `step` (a resumed run logs them again) and a row cut short by a kill;
        returns how many rows were dropped."""
        if not self.enabled:
            return 0
        self._file.close()
        text = self.csv_path.read_text()
        complete = text[: text.rfind("\n") + 1]  # a row without its newline was cut short
        rows = list(csv.DictReader(io.StringIO(complete)))
        kept = [r for r in rows if int(r["step"]) <= step]
        with atomic_path(self.csv_path) as tmp, open(tmp, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["step", "epoch", "name", "value"])
            w.writerows([r["step"], r["epoch"], r["name"], r["value"]] for r in kept)
        self._file = open(self.csv_path, "a", newline="")
        self._writer = csv.writer(self._file)
        return len(rows) - len(kept) + (complete != text)

    def plot(self) -> Path | None:
        if not self.enabled:
            return None
        self._file.flush()
        return plot_curves(self.csv_path, self.output_dir / CURVES_NAME)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        if self._tb is not None:
            self._tb.close()
            self._tb = None
        if self._wandb is not None:
            self._wandb.finish()
            self._wandb = None


def read_metrics(csv_path: str | os.PathLike) -> list[dict[str, Any]]:
    with open(csv_path, newline="") as f:
        return [{"step": int(r["step"]), "epoch": int(r["epoch"]), "name": r["name"], "value": float(r["value"])}
                for r in csv.DictReader(f)]


def _series(rows: list[dict[str, Any]], name: str) -> tuple[list[int], list[float]]:
    pts = [(r["step"], r["value"]) for r in rows if r["name"] == name and math.isfinite(r["value"])]
    return [p[0] for p in pts], [p[1] for p in pts]


def plot_curves(csv_path: str | os.PathLike, png_path: str | os.PathLike) -> Path:
    """Three panels by optimizer step: training loss, learning rate, validation accuracies."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = read_metrics(csv_path)
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    axes[0].plot(*_series(rows, "train_loss"), lw=0.8)
    axes[0].set_title("training loss")
    axes[1].plot(*_series(rows, "lr"))
    axes[1].set_title("learning rate")
    val_names = sorted({r["name"] for r in rows if r["name"].endswith("_val_acc")})
    for name in val_names:
        axes[2].plot(*_series(rows, name), marker="o", label=name.removesuffix("_val_acc"),
                     lw=2.0 if name == "val_acc" else 1.0)
    axes[2].set_title("validation accuracy")
    if val_names:
        axes[2].legend(fontsize=8)
    for ax in axes:
        ax.set_xlabel("optimizer step")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    png_path = Path(png_path)
    with atomic_path(png_path) as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)
    return png_path
