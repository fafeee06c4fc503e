"""Fault injection for the crash-consistency tests, at the write events of `facetrain.io_utils`.

With `FACETRAIN_CRASH_AFTER_WRITES=N` the process SIGKILLs itself at its N-th write event
(`FACETRAIN_CRASH_SIGNAL=INT`: a SIGINT instead, as Ctrl-C). Events are
each rename onto a final path (`io_utils.replace`, `io_utils.atomic_path`) and each `write` through
`io_utils.open_write` (the kill then falls between two halves of the data, i.e. inside the file). With
`FACETRAIN_WRITE_EVENTS_FILE=F` the number of events of a run is written to F at exit, so a test can
pick N within an uninterrupted run. Counters are per process; without either variable the hooks cost
nothing.
"""
from __future__ import annotations

import atexit
import os
import signal
import threading
from pathlib import Path
from typing import IO, Any

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


def watch_writes(f: IO) -> IO:
    """`f`, or under fault injection `f` with every write a kill point."""
    return _EventFile(f) if _events.active else f
