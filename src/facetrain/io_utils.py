"""Atomic writes: a final output either exists complete or not at all (killed runs leave no half-files).

Files are built under `<path>.tmp-<pid>` next to their final path and renamed onto it. Writing
the same output again first removes the leftovers (`*.tmp-<pid>`, `*.old-<pid>`) of processes
that no longer run, so killed runs do not pile up temporaries.

Fault injection for the crash-consistency tests: with `FACETRAIN_CRASH_AFTER_WRITES=N` the
process SIGKILLs itself at its N-th write event (`FACETRAIN_CRASH_SIGNAL=INT`: a SIGINT, as Ctrl-C). Events are each rename onto a final path
(`replace`, `atomic_path`) and each `write` through `open_write` (the kill then falls between
two halves of the data, i.e. inside the file). With `FACETRAIN_WRITE_EVENTS_FILE=F` the number
of events of a run is written to F at exit, so a test can pick N within an uninterrupted run.
Counters are per process; without either variable the hooks cost nothing.
"""
from __future__ import annotations

import atexit
import contextlib
import json
import math
import os
import re
import shutil
import signal
import threading
from pathlib import Path
from typing import IO, Any, Iterator

CRASH_ENV = "FACETRAIN_CRASH_AFTER_WRITES"
CRASH_SIGNAL_ENV = "FACETRAIN_CRASH_SIGNAL"
EVENTS_FILE_ENV = "FACETRAIN_WRITE_EVENTS_FILE"


class _WriteEvents:
    """Counts write events of this process; signals it at the configured one."""

    def __init__(self) -> None:
        self.count = 0
        self.crash_at = int(os.environ[CRASH_ENV]) if os.environ.get(CRASH_ENV) else None
        self.signal = signal.Signals[f"SIG{os.environ.get(CRASH_SIGNAL_ENV) or 'KILL'}"]
        self.events_file = os.environ.get(EVENTS_FILE_ENV) or None
        self.owner = os.getpid()
        self.lock = threading.Lock()
        if self.events_file:
            atexit.register(self._save_count)

    @property
    def active(self) -> bool:
        return self.crash_at is not None or self.events_file is not None

    def event(self) -> None:
        with self.lock:  # writer threads (convert) share the count
            self.count += 1
            crash = self.count == self.crash_at
        if crash:
            os.kill(os.getpid(), self.signal)

    def _save_count(self) -> None:
        if os.getpid() == self.owner:  # forked workers inherit the handler but not the job
            Path(self.events_file).write_text(f"{self.count}\n")


_events = _WriteEvents()


def write_event() -> None:
    """One fault-injection point (see the module doc); a no-op unless the test variables are set."""
    if _events.active:
        _events.event()


class _EventFile:
    """A file whose every `write` is a write event placed halfway through the data."""

    def __init__(self, f: IO) -> None:
        self._f = f

    def write(self, data: Any) -> int:
        if not isinstance(data, str):
            data = memoryview(data).cast("B")
        half = len(data) // 2
        self._f.write(data[:half])
        self._f.flush()  # what a killed process leaves: the first half on disk
        write_event()
        self._f.write(data[half:])
        return len(data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._f, name)

    def __enter__(self) -> "_EventFile":
        return self

    def __exit__(self, *exc: Any) -> None:
        self._f.close()


def open_write(path: str | os.PathLike, mode: str = "wb") -> IO:
    """`open(path, mode)` for writing; under fault injection every write is a kill point."""
    f = open(path, mode)
    return _EventFile(f) if _events.active else f


def write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Plain (non-atomic) write of a file inside a folder that is itself committed atomically."""
    with open_write(path, "wb") as f:
        f.write(data)


def replace(src: str | os.PathLike, dst: str | os.PathLike) -> None:
    """`os.replace` as a write event (the commit point of an atomic output)."""
    write_event()
    os.replace(src, dst)


_LEFTOVER = re.compile(r"\.(?:tmp|old)-(\d+)$")


def ignore_interrupts() -> None:
    """Initializer of worker processes: Ctrl-C reaches every process of the terminal's group, and only
    the parent reports it (the CLI's one line) and stops the workers; a worker left to the default
    would print its own KeyboardInterrupt traceback."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def process_alive(pid: int) -> bool:
    """Whether a process with this id runs (a temporary named after it may still be written)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def remove_stale_temporaries(path: str | os.PathLike) -> list[Path]:
    """Remove `<path>.tmp-<pid>` / `<path>.old-<pid>` left by processes that are no longer running."""
    path = Path(path)
    removed = []
    if not path.parent.is_dir():
        return removed
    prefix = path.name + "."
    with os.scandir(path.parent) as it:
        names = [e.name for e in it if e.name.startswith(prefix)]
    for name in names:
        match = _LEFTOVER.fullmatch(name[len(path.name):])
        if not match or int(match.group(1)) == os.getpid() or process_alive(int(match.group(1))):
            continue
        leftover = path.parent / name
        if leftover.is_dir() and not leftover.is_symlink():
            shutil.rmtree(leftover, ignore_errors=True)
        else:
            with contextlib.suppress(FileNotFoundError):
                leftover.unlink()
        removed.append(leftover)
    return removed


def temporary_name(path: str | os.PathLike) -> Path:
    """Where a file or folder is built before it is renamed onto `path` (same folder, so the rename is atomic)."""
    path = Path(path)
    return path.with_name(f"{path.name}.tmp-{os.getpid()}")


def fresh_temporary(path: str | os.PathLike) -> Path:
    """`temporary_name(path)`, after removing dead processes' leftovers for `path` and our own old one."""
    tmp = temporary_name(path)
    remove_stale_temporaries(path)
    if tmp.is_dir() and not tmp.is_symlink():
        shutil.rmtree(tmp)
    else:
        tmp.unlink(missing_ok=True)
    return tmp


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to `path`; on success it is renamed onto `path`, on error removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = fresh_temporary(path)
    try:
        yield tmp
        replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise


def encode_text(text: str) -> bytes:
    """UTF-8 bytes of text that may quote file names. A name that is not UTF-8 is held by Python with
    its undecodable bytes as surrogates; they are written back as those bytes (surrogateescape, as
    `os.fsencode` does), so such a name never fails a write and reads back as the same path."""
    return text.encode("utf-8", "surrogateescape")


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_path(path) as tmp:
        with open_write(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())


def strict_json_value(obj: Any) -> Any:
    """`obj` with every non-finite float (NaN, ±inf, numpy's included) replaced by None, numpy scalars
    by Python numbers and tuples by lists: what strict JSON (RFC 8259) can hold."""
    if isinstance(obj, dict):
        return {k: strict_json_value(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [strict_json_value(v) for v in obj]
    if hasattr(obj, "item") and getattr(obj, "shape", None) == ():  # numpy / torch scalar
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    """Strict JSON (non-finite numbers become null, see `strict_json_value`), written atomically."""
    text = json.dumps(strict_json_value(obj), indent=2, sort_keys=False, allow_nan=False)
    atomic_write_bytes(path, (text + "\n").encode())
