"""Everything a run logs, in one place: metrics.csv (every logged value, one row per log call),
TensorBoard events when tensorboard is installed, Weights & Biases when asked (`--use_wandb`),
curves.png (loss, learning rate, validation), the progress bar, and the run's own text log: what
training prints goes to the console (through tqdm, so progress bars stay intact) and, with its
warnings, to train.log in the run folder. Rank 0 logs; the other ranks' loggers do nothing."""
from __future__ import annotations

import contextlib
import csv
import io
import logging
import math
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from tqdm import tqdm

from facetrain.errors import ConfigError
from facetrain.io_utils import atomic_path
from facetrain.training.wandb_run import start_wandb

CSV_NAME = "metrics.csv"
CURVES_NAME = "curves.png"
LOG_NAME = "train.log"
log = logging.getLogger("facetrain.training")


def warn(message: str) -> None:
    """A training warning: raised as a Python warning (tests and callers can catch it) and kept in train.log."""
    warnings.warn(message, stacklevel=3)
    log.warning(message)


@dataclass
class WindowSummary:
    """What the host learns at a logging step about the optimizer steps since the last one."""
    loss: float  # mean over the interval's steps taken, over all ranks (nan when none was taken)
    loss_sum: float  # this interval's sum over steps taken of the all-rank mean loss
    steps: int
    skipped: int
    longest_skip_run: int  # longest run of consecutive non-finite losses so far (continues across intervals)
    skipped_total: int  # steps skipped since the run began (continues across intervals and resumes)
    data_time: float = 0.0  # mean seconds per batch waiting for the loader (this rank)
    step_time: float = 0.0  # mean seconds per batch for everything else


class _TqdmConsole(logging.Handler):
    """INFO lines to stdout without breaking a progress bar (warnings reach the console as warnings)."""

    def emit(self, record: logging.LogRecord) -> None:
        if record.levelno < logging.WARNING:
            tqdm.write(self.format(record))


def _tensorboard_writer(log_dir: Path):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # tensorboard is optional
        return None
    return SummaryWriter(log_dir=str(log_dir))


class MetricLogger:
    """`log(values, step, epoch)` appends a row (long format: step, epoch, name, value), so new metric
    names never rewrite the header and a resumed run appends to the same file; `console()` attaches
    the console and train.log to the training logger while a run trains; `progress(...)` is the
    epoch's progress bar."""

    def __init__(self, output_dir: str | os.PathLike, enabled: bool = True, wandb_project: str | None = None,
                 config: dict[str, Any] | None = None, progress: bool = True):
        self.enabled = enabled
        self.show_progress = progress and enabled
        self.batches, self.data_time, self.step_time = 0, 0.0, 0.0  # since the last logging step
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

    @contextlib.contextmanager
    def console(self) -> Iterator[None]:
        """While training: INFO lines to the console and, with warnings, to `output_dir/train.log`."""
        if not self.enabled:
            yield
            return
        # a file name that is not UTF-8 is logged as its own bytes (see io_utils.encode_text)
        file = logging.FileHandler(self.output_dir / LOG_NAME, encoding="utf-8", errors="surrogateescape")
        file.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
        handlers = [_TqdmConsole(), file]
        for handler in handlers:
            log.addHandler(handler)
        log.setLevel(logging.INFO)
        log.propagate = False
        try:
            yield
        finally:
            for handler in handlers:
                log.removeHandler(handler)
                handler.close()

    def progress(self, epoch: int, total: int, initial: int) -> tqdm:
        """The epoch's progress bar (rank 0, with --progress, on a terminal)."""
        return tqdm(total=total, initial=initial, desc=f"epoch {epoch}", leave=False, dynamic_ncols=True,
                    disable=None if self.show_progress else True)

    def add_times(self, data_time: float, step_time: float) -> None:
        """One batch's seconds waiting for the loader and for everything else (this rank)."""
        self.batches += 1
        self.data_time += data_time
        self.step_time += step_time

    def take_times(self) -> tuple[float, float]:
        """(data_time, step_time): mean seconds per batch since the last call; resets them."""
        batches = max(self.batches, 1)
        times = self.data_time / batches, self.step_time / batches
        self.batches, self.data_time, self.step_time = 0, 0.0, 0.0
        return times

    def log_steps(self, summary: WindowSummary, lr: float, speed: float, step: int, epoch: int, bar: tqdm) -> None:
        """A logging step's values (`StepGuard.collect`'s summary): loss, learning rate, speed, and the
        mean times per batch since the last logging step."""
        summary.data_time, summary.step_time = self.take_times()
        values = {"lr": lr, "img_per_sec": speed, "data_time": summary.data_time, "step_time": summary.step_time}
        if summary.steps:
            values["train_loss"] = summary.loss
        self.log(values, step, epoch)
        bar.set_postfix(loss=f"{summary.loss:.3f}", img_s=f"{speed:.0f}", lr=f"{lr:.2g}",
                        data=f"{summary.data_time:.3f}s", step=f"{summary.step_time:.3f}s")

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
