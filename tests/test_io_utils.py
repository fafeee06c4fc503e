"""io_utils: atomic writes, leftovers of dead processes, and the fault-injection hook."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap

import pytest

from facetrain import fault_injection, io_utils

WRITER = textwrap.dedent("""
    import sys
    from facetrain.io_utils import atomic_write_bytes, open_write, replace
    out = sys.argv[1]
    atomic_write_bytes(out + "/a.bin", b"A" * 1000)          # events 1 (mid-file), 2 (rename)
    with open_write(out + "/b.part", "wb") as f:
        f.write(b"B" * 1000)                                  # event 3
    replace(out + "/b.part", out + "/b.bin")                  # event 4
""")


def _run_writer(tmp_path, env_extra: dict) -> subprocess.CompletedProcess:
    env = {**os.environ, **env_extra}
    return subprocess.run([sys.executable, "-c", WRITER, str(tmp_path)], env=env, capture_output=True, timeout=60)


def test_events_file_counts_an_uninterrupted_run(tmp_path):
    count_file = tmp_path / "events"
    proc = _run_writer(tmp_path, {fault_injection.EVENTS_FILE_ENV: str(count_file)})
    assert proc.returncode == 0, proc.stderr
    assert count_file.read_text().strip() == "4"
    assert (tmp_path / "a.bin").read_bytes() == b"A" * 1000


@pytest.mark.parametrize("n, expect", [
    (1, {"a.bin": None, "partial_tmp": 500}),      # killed halfway through the first file
    (2, {"a.bin": None, "partial_tmp": 1000}),     # file complete, not yet renamed
    (3, {"a.bin": 1000, "b.part": 500}),
    (4, {"a.bin": 1000, "b.part": 1000, "b.bin": None}),
])
def test_crash_after_n_writes_kills_at_that_event(tmp_path, n, expect):
    proc = _run_writer(tmp_path, {fault_injection.CRASH_ENV: str(n)})
    assert proc.returncode == -signal.SIGKILL
    names = {p.name: p.stat().st_size for p in tmp_path.iterdir()}
    for name, size in expect.items():
        if name == "partial_tmp":
            tmps = [s for k, s in names.items() if k.startswith("a.bin.tmp-")]
            assert tmps == [size]
        elif size is None:
            assert name not in names
        else:
            assert names[name] == size


def test_leftovers_of_dead_processes_are_removed_when_the_output_is_written_again(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(dead.stdout)
    (tmp_path / f"out.json.tmp-{dead_pid}").write_text("half")
    (tmp_path / f"out.json.old-{dead_pid}").mkdir()
    live = tmp_path / f"out.json.tmp-{os.getppid()}"  # our parent is alive: its temporary is left alone
    live.write_text("busy")
    unrelated = tmp_path / f"other.json.tmp-{dead_pid}"
    unrelated.write_text("x")
    io_utils.atomic_write_json(tmp_path / "out.json", {"a": 1})
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["out.json", live.name, unrelated.name])


def test_atomic_path_removes_its_temporary_on_error(tmp_path):
    with pytest.raises(RuntimeError):
        with io_utils.atomic_path(tmp_path / "x") as tmp:
            tmp.write_text("partial")
            raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []


def _strict_loads(text: str):
    def refuse(name):
        raise ValueError(f"non-standard JSON constant {name}")
    return json.loads(text, parse_constant=refuse)


def test_json_is_strict_non_finite_numbers_become_null(tmp_path):
    import numpy as np

    obj = {"nan": float("nan"), "inf": [float("inf"), -float("inf"), 1.5], "np_nan": np.float32("nan"),
           "np_two": np.float64(2.0), "np_int": np.int64(7), "pair": (1, float("nan")), "text": "NaN"}
    io_utils.atomic_write_json(tmp_path / "out.json", obj)
    assert _strict_loads((tmp_path / "out.json").read_text()) == {
        "nan": None, "inf": [None, None, 1.5], "np_nan": None, "np_two": 2.0, "np_int": 7, "pair": [1, None],
        "text": "NaN"}
