"""Atomic writes: a final output either exists complete or not at all (killed runs leave no half-files).

Files are built under `<path>.tmp-<pid>` next to their final path and renamed onto it. Writing
the same output again first removes the leftovers (`*.tmp-<pid>`, `*.old-<pid>`) of processes
that no longer run, so killed runs do not pile up temporaries.

Each rename onto a final path (`replace`, `atomic_path`) and each `write` through `open_write` is a
write event of `facetrain.fault_injection`, where the crash-consistency tests kill the process.
"""
from __future__ import annotations

import contextlib
import json
import math
import os
import re
import shutil
import signal
from pathlib import Path
from typing import IO, Any, Iterator

from facetrain import fault_injection


def open_write(path: str | os.PathLike, mode: str = "wb") -> IO:
    """`open(path, mode)` for writing; under fault injection every write is a kill point."""
    return fault_injection.watch_writes(open(path, mode))


def write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Plain (non-atomic) write of a file inside a folder that is itself committed atomically."""
    with open_write(path, "wb") as f:
        f.write(data)


def replace(src: str | os.PathLike, dst: str | os.PathLike) -> None:
    """`os.replace` as a write event (the commit point of an atomic output)."""
    fault_injection.write_event()
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
