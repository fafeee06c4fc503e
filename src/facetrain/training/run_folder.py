"""The run folder: the files a training run writes, and when a folder may be (re)used.

A folder that already holds anything is refused, so a new run never truncates `metrics.csv` or
leaves another run's `best.ckpt` beside its own results, unless
- `--resume_from_checkpoint` points into it (the run continues there), or
- `--overwrite` is given: the previous run's files (the names below, the Partial FC shard folders of
  its checkpoints, and their temporaries) are deleted, `results.json` first so a half-cleared folder
  never looks like a finished run, shard folders after the checkpoints that name them. Other files are
  left alone. A temporary of a live process means another run writes there: refused.

A run holds an exclusive OS lock (`flock`) on `LOCK` in its folder for its whole life: a second run
into the folder, a resume of it or an `--overwrite` of it is refused while the first lives. The kernel
releases the lock when the process dies, however it dies (kill -9 included), so no stale lock is ever
left; the lock file itself stays (deleting it would let two processes lock two different files). A
forked child (a data-loader worker) closes its inherited copy of the descriptor at once, so workers
that outlive a killed run for a few seconds do not keep its folder locked.
"""
from __future__ import annotations

import contextlib
import fcntl
import os
import re
import shlex
import shutil
from pathlib import Path

from facetrain.errors import ConfigError
from facetrain.heads.partial_fc_checkpoint import SHARD_DIR_SUFFIX
from facetrain.io_utils import process_alive
from facetrain.training.logger import CSV_NAME, CURVES_NAME
from facetrain.training.run_log import LOG_NAME

LAST, BEST, RESULTS, CONFIG = "last.ckpt", "best.ckpt", "results.json", "config.json"
EVALUATION = "evaluation.json"
SAMPLES = "training_samples.jpg"  # augmented inputs as the model sees them (BGR): a wrong colour order shows at once
TENSORBOARD, WANDB = "tensorboard", "wandb"
LOCK = ".facetrain.lock"
_held: set[int] = set()  # descriptors holding run locks in this process


def _close_inherited_locks() -> None:
    for fd in _held:  # the child's reference only; the parent's lock stays
        with contextlib.suppress(OSError):
            os.close(fd)
    _held.clear()


os.register_at_fork(after_in_child=_close_inherited_locks)
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
    _refuse_if_locked(output_dir)  # a live run there: say so before anything else
    entries = sorted(name for name in os.listdir(output_dir) if name != LOCK)
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


def resume_hint(output_dir: Path) -> str:
    """What to run to continue an interrupted run in `output_dir` (one line)."""
    if not (output_dir / LAST).is_file():
        return f"{output_dir} holds no checkpoint yet: nothing to resume (start again with --overwrite)"
    config = f"--config {shlex.quote(str(output_dir / CONFIG))} " if (output_dir / CONFIG).is_file() else ""
    return f"resume with: facetrain train {config}--resume_from_checkpoint {shlex.quote(str(output_dir / LAST))}"


def lock_run_folder(output_dir: Path) -> int:
    """Create `output_dir` and take its run lock (see the module doc); returns the descriptor to hold
    (closing it releases the lock). ConfigError when another live process holds it."""
    output_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(output_dir / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        if os.pread(fd, 32, 0) != f"{os.getpid()}\n".encode():  # who holds it, for the message of the refused
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    except BlockingIOError:
        problem = _locked(output_dir, fd)
        os.close(fd)
        raise problem from None
    _held.add(fd)
    return fd


def unlock_run_folder(fd: int) -> None:
    """Release a lock `lock_run_folder` took."""
    _held.discard(fd)
    os.close(fd)


def abandon_run_folder(output_dir: Path, fd: int, created: bool) -> None:
    """A run that took the folder's lock and then could not start (e.g. W&B refused): release the lock,
    and remove the folder when this run created it and it holds nothing but the lock file."""
    if created and os.listdir(output_dir) == [LOCK]:
        with contextlib.suppress(OSError):
            (output_dir / LOCK).unlink()
            output_dir.rmdir()
    unlock_run_folder(fd)


def _refuse_if_locked(output_dir: Path) -> None:
    """ConfigError when a live process holds the folder's lock; only tests it (reads, writes nothing)."""
    try:
        fd = os.open(output_dir / LOCK, os.O_RDONLY)
    except FileNotFoundError:
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        if _holder(fd) != str(os.getpid()):  # not this run, checking its folder again under its own lock
            raise _locked(output_dir, fd) from None
    finally:
        os.close(fd)


def _holder(fd: int) -> str:
    return os.pread(fd, 32, 0).decode(errors="replace").strip()


def _locked(output_dir: Path, fd: int) -> ConfigError:
    holder = _holder(fd)
    return ConfigError(f"{output_dir}: another training process{f' (pid {holder})' if holder.isdigit() else ''} "
                       "is running in this folder; wait for it to end, or choose another --output_dir")
