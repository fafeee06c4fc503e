"""One rank's error ends every rank of the job promptly, each with that error's one line.

Without this, ranks that did not fail wait in their next collective (a barrier while rank 0
validates, DDP's gradient all-reduce, a broadcast) for the process group's whole timeout: on one
node a launcher tears them down, across nodes nothing does. The failing rank writes its error line
into the rendezvous store (the TCP key-value store every rank reached at start-up, across nodes);
a daemon thread on every rank polls that store, and a rank that finds another's error there prints
it as `error: ...` and exits with status 1, wherever its main thread is blocked. A rank that loses
the store (the process hosting it died) exits too after `LOST_STORE_GRACE_S`, unless it is itself
finishing by then.
"""
from __future__ import annotations

import datetime
import os
import sys
import threading
import time

import torch.distributed as dist

from facetrain.errors import one_line
from facetrain.training.distributed import DistContext

# per attempt: torchrun --max_restarts keeps its store across restarts of the workers
_ATTEMPT = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")
ERROR_KEY, SEEN_KEY = f"facetrain/{_ATTEMPT}/first_error", f"facetrain/{_ATTEMPT}/error_seen"
POLL_S = 1.0
ACK_WAIT_S = 10.0  # how long the failing rank waits for the others to read its error before it exits
LOST_STORE_GRACE_S = 30.0


class FailureWatch:
    """`start` after joining the process group, `fail(exc)` on any exception, `stop` before leaving the
    group. A no-op in a single process."""

    def __init__(self, ctx: DistContext, poll_s: float = POLL_S):
        self.ctx, self.poll_s = ctx, poll_s
        self._stop = threading.Event()
        self._store: dist.TCPStore | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> "FailureWatch":
        address, port = os.environ.get("MASTER_ADDR"), os.environ.get("MASTER_PORT")
        if not self.ctx.enabled or not address or not port:
            return self
        # a client of its own: the process group's store may be busy in a blocking wait (NCCL set-up)
        self._store = dist.TCPStore(address, int(port), is_master=False, timeout=datetime.timedelta(seconds=30))
        self._thread = threading.Thread(target=self._watch, name="facetrain-failure-watch", daemon=True)
        self._thread.start()
        return self

    def fail(self, exc: BaseException) -> None:
        """Publish this rank's error as the job's, unless another rank's came first (then that one is
        reported and this process exits here); wait briefly until the others have read it."""
        if self._store is None:
            return
        self._stop.set()
        text = one_line(exc)
        try:
            first = self._store.compare_set(ERROR_KEY, "", f"{text} (rank {self.ctx.rank})").decode()
            if not first.startswith(f"{text} (rank "):  # another error came first (not the same one, agreed)
                _exit_with(first)
            deadline = time.monotonic() + ACK_WAIT_S
            while self._store.add(SEEN_KEY, 0) < self.ctx.world_size - 1 and time.monotonic() < deadline:
                time.sleep(0.1)
        except RuntimeError:  # the store is gone (torch.distributed.DistError): the job is ending anyway
            pass

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def _watch(self) -> None:
        lost_since = None
        while not self._stop.wait(self.poll_s):
            try:
                if self._store.check([ERROR_KEY]):
                    line = self._store.get(ERROR_KEY).decode()
                    self._store.add(SEEN_KEY, 1)
                    if not self._stop.is_set():
                        _exit_with(line)
                lost_since = None
            except RuntimeError:  # torch.distributed.DistError: the store is unreachable
                lost_since = lost_since or time.monotonic()
                if time.monotonic() - lost_since > LOST_STORE_GRACE_S and not self._stop.is_set():
                    _exit_with("lost contact with the other processes of this job (the rendezvous store "
                               "is gone: another process ended without finishing)")


def _exit_with(line: str) -> None:
    """End the process now: its main thread may be blocked in a collective that never returns."""
    sys.stdout.flush()
    print(f"error: {line}", file=sys.stderr, flush=True)
    os._exit(1)
