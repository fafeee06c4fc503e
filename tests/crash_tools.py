"""Running `facetrain` commands that are SIGKILLed at a chosen write event (the fault-injection hook
of `facetrain.io_utils`, FACETRAIN_CRASH_AFTER_WRITES), and finding the events worth killing at.

`CommandServer` keeps one process that has imported torch and matplotlib (most of a run's start-up
time on 2 cores), plus any `preload` modules, and forks a fresh child per command; each child sets
the command's environment and then re-reads it into the hook's counter, as a process started with
it would. `trace=True` records at which event number each output was committed (renamed onto its
final path) during an uninterrupted run. Used for training runs (test_crash_train, test_train_loop)
and the data commands (crash_harness).
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

CRASH_ENV, EVENTS_FILE_ENV = "FACETRAIN_CRASH_AFTER_WRITES", "FACETRAIN_WRITE_EVENTS_FILE"
CRASH_SIGNAL_ENV = "FACETRAIN_CRASH_SIGNAL"

_SERVER = textwrap.dedent("""
    import atexit, json, os, sys, traceback
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot, torch, torch._dynamo  # what every training run imports
    import importlib
    torch.set_num_threads(1)
    for name in sys.argv[1:]:
        importlib.import_module(name)

    def child(job):
        preloaded = "facetrain.fault_injection" in sys.modules  # its hook read the server's environment
        os.environ.update(job["env"])
        log = os.open(job["log"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
        os.dup2(log, 1)
        os.dup2(log, 2)
        from facetrain import fault_injection, io_utils
        from facetrain.cli import main
        if preloaded:
            fault_injection._events = fault_injection._WriteEvents()  # this command's kill point and count file
        if job["trace"]:
            count, commits = [0], []
            counted, replaced = fault_injection.write_event, io_utils.replace
            def write_event():
                count[0] += 1
                counted()
            def replace(src, dst):
                replaced(src, dst)
                commits.append([count[0], str(dst)])
            fault_injection.write_event, io_utils.replace = write_event, replace
        code = main(job["argv"])
        if job["trace"]:
            with open(job["trace"], "w") as f:
                json.dump(commits, f)
        sys.stdout.flush()
        sys.stderr.flush()
        return code

    for line in sys.stdin:
        job = json.loads(line)
        pid = os.fork()
        if pid == 0:
            try:
                code = child(job)
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else 1
            except BaseException:
                traceback.print_exc()
                code = 1
            sys.stdout.flush()
            sys.stderr.flush()
            # the exit handlers (the hook's event count), then no interpreter teardown: with torch
            # loaded it took about 3 s per command, 10x the data commands' own run time
            atexit._run_exitfuncs()
            os._exit(code)
        print(os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]), flush=True)
""")


@dataclass
class Outcome:
    returncode: int
    log: str

    @property
    def killed(self) -> bool:
        return self.returncode == -signal.SIGKILL


class CommandServer:
    """`with CommandServer(scratch) as server: server.run(["train", ...], kill_at=N)`."""

    def __init__(self, scratch: Path, preload: tuple[str, ...] = ()):
        self.scratch = scratch
        self.preload = preload
        self.jobs = 0
        self.proc: subprocess.Popen | None = None

    def __enter__(self) -> "CommandServer":
        env = {k: v for k, v in os.environ.items() if k not in (CRASH_ENV, EVENTS_FILE_ENV, CRASH_SIGNAL_ENV)}
        self.proc = subprocess.Popen([sys.executable, "-c", _SERVER, *self.preload], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, env={**env, "OMP_NUM_THREADS": "1"}, text=True)
        return self

    def __exit__(self, *exc) -> None:
        self.proc.stdin.close()
        self.proc.wait(timeout=60)

    def run(self, argv: list[str], kill_at: int | None = None, events_file: Path | None = None,
            trace: Path | None = None, signal_name: str = "KILL") -> Outcome:
        """`signal_name` "INT": interrupted at `kill_at` as by Ctrl-C, instead of killed."""
        self.jobs += 1
        log = self.scratch / f"command-{self.jobs}.log"
        env = {CRASH_ENV: str(kill_at) if kill_at else "", EVENTS_FILE_ENV: str(events_file or ""),
               CRASH_SIGNAL_ENV: signal_name}
        job = {"argv": [str(a) for a in argv], "env": env, "log": str(log), "trace": str(trace or "")}
        self.proc.stdin.write(json.dumps(job) + "\n")
        self.proc.stdin.flush()
        code = int(self.proc.stdout.readline())
        return Outcome(code, log.read_text())

    def trace(self, argv: list[str]) -> tuple[int, list[tuple[int, str]]]:
        """Run uninterrupted: (number of write events, [(event number, committed path), ...])."""
        events, commits = self.scratch / "events.txt", self.scratch / "commits.json"
        outcome = self.run(argv, events_file=events, trace=commits)
        assert outcome.returncode == 0, outcome.log[-3000:]
        return int(events.read_text()), [(n, path) for n, path in json.loads(commits.read_text())]
