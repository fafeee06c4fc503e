"""The run folder: the files a training run writes, and when a folder may be (re)used.

A folder that already holds anything is refused, so a new run never truncates `metrics.csv` or
leaves another run's `best.ckpt` beside its own results, unless
- `--resume_from_checkpoint` points into it (the run continues there), or
- `--overwrite` is given: the previous run's files (the names below, the Partial FC shard folders of
  its checkpoints, and their temporaries) are deleted, `results.json` first so a half-cleared folder
  never looks like a finished run, shard folders after the checkpoints that name them. Other files are
  left alone. A temporary of a live process means another run writes there: refused.
"""
from __future__ import annotations

import contextlib
import os
import re
import shutil
from pathlib import Path

from facetrain.errors import ConfigError
from facetrain.heads.partial_fc_checkpoint import SHARD_DIR_SUFFIX
from facetrain.io_utils import process_alive
from facetrain.train.logger import CSV_NAME, CURVES_NAME
from facetrain.train.run_log import LOG_NAME

LAST, BEST, RESULTS, CONFIG = "last.ckpt", "best.ckpt", "results.json", "config.json"
EVALUATION = "evaluation.json"
SAMPLES = "training_samples.jpg"  # augmented inputs as the model sees them (BGR): a wrong colour order shows at once
TENSORBOARD, WANDB = "tensorboard", "wandb"
# deletion order of --overwrite: what says "finished" first, what a resume needs last
RUN_FILES = (RESULTS, EVALUATION, BEST, LAST, CONFIG, CSV_NAME, CURVES_NAME, LOG_NAME, SAMPLES, TENSORBOARD, WANDB)
_EPOCH_CHECKPOINT = re.compile(r"epoch=\d+\.ckpt")
_TEMPORARY = re.compile(r"(?P<name>.+)\.(?:tmp|old)-(?P<pid>\d+)")


def epoch_checkpoint(epoch: int) -> str:
    """`--save_all_models`: AdaFace's (Lightning's) name for the checkpoint of an epoch."""
    return f"epoch={epoch:02d}.ckpt"


def _is_checkpoint(name: str) -> bool:
    return name in (BEST, LAST) or bool(_EPOCH_CHECKPOINT.fullmatch(name))


def _is_shard_dir(name: str) -> bool:
    return name.endswith(SHARD_DIR_SUFFIX) and _is_checkpoint(name[: -len(SHARD_DIR_SUFFIX)])


def _is_run_file(name: str) -> bool:
    return name in RUN_FILES or _is_checkpoint(name) or _is_shard_dir(name)


def _inside(path: Path, folder: Path) -> bool:
    return folder.resolve() in path.resolve().parents


def check_output_dir(output_dir: Path, resume_from: str, overwrite: bool) -> None:
    """ConfigError when `output_dir` may not be used (see the module doc); nothing is written."""
    if not output_dir.exists():
        return
    if not output_dir.is_dir():
        raise ConfigError(f"{output_dir}: --output_dir is a file, not a folder")
    entries = sorted(os.listdir(output_dir))
    if not entries or (resume_from and _inside(Path(resume_from), output_dir)):
        return
    if overwrite:
        for name in entries:
            match = _TEMPORARY.fullmatch(name)
            if match and _is_run_file(match["name"]) and int(match["pid"]) != os.getpid() \
                    and process_alive(int(match["pid"])):
                raise ConfigError(f"{output_dir / name}: process {match['pid']} is writing this run folder; "
                                  "--overwrite would delete its files")
        return
    shown = ", ".join(entries[:4]) + (f" and {len(entries) - 4} more" if len(entries) > 4 else "")
    hint = (f"continue it with --resume_from_checkpoint {output_dir / LAST}, " if (output_dir / LAST).is_file()
            else "")
    raise ConfigError(f"{output_dir}: --output_dir is not empty ({shown}); {hint}replace the run in it with "
                      "--overwrite, or choose another --output_dir")


def clear_run_files(output_dir: Path) -> list[str]:
    """`--overwrite`: delete a previous run's files (and their temporaries); returns the names deleted."""
    if not output_dir.is_dir():
        return []
    names = os.listdir(output_dir)
    epochs = sorted(n for n in names if _EPOCH_CHECKPOINT.fullmatch(n))
    ordered = [n for n in RUN_FILES if n in names] + epochs + sorted(n for n in names if _is_shard_dir(n))
    ordered += sorted(n for n in names if (m := _TEMPORARY.fullmatch(n)) and _is_run_file(m["name"]))
    for name in ordered:
        path = output_dir / name
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
    return ordered
