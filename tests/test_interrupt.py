"""Ctrl-C (SIGINT) at seeded write events of the long-running data verbs: the CLI prints the one line
"interrupted" and exits 130, nothing half-written survives (every output present is the uninterrupted
run's, no temporaries), and running the command again gives the uninterrupted run's outputs.
Worker processes leave the signal to their parent (no traceback of theirs reaches the terminal)."""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import facetrain
from crash_harness import PRELOAD, leftovers, prepare, snapshot
from crash_tools import CommandServer

def _prepare(command: str, work: Path) -> tuple[list[str], Path]:
    """The crash harness's commands, plus verbs whose one output is a single file."""
    if command not in ("embed", "make_bin"):
        return prepare(command, work)
    from data_format_fixtures import make_image_folder

    imgs, out = make_image_folder(work / "in", {"a": 3, "b": 3, "c": 2}), work / "out"
    if command == "make_bin":
        return ["make-bin", str(imgs), "--out", str(out / "pairs.bin"), "--pairs", "12"], out
    from facetrain.checkpoint import save_checkpoint
    from facetrain.models import build_model

    save_checkpoint(work / "tiny.ckpt", build_model("tinynet"))
    return ["embed", str(imgs), "--ckpt", str(work / "tiny.ckpt"), "--out", str(out / "faces.npz"), "--quiet",
            "--device", "cpu"], out


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """One server (torch imported once) forks every command of this module."""
    with CommandServer(tmp_path_factory.mktemp("logs"), preload=tuple(sorted({m for ms in PRELOAD.values()
                                                                             for m in ms}))) as server:
        yield server


@pytest.mark.parametrize("command", [pytest.param("synth", marks=pytest.mark.slow), "convert_memfiles",
                                     "convert_images", "compound", "align", "embed", "make_bin"])
def test_interrupted_verb_is_one_line_exit_130_and_leaves_nothing_half_written(server, tmp_path, command):
    argv, out = _prepare(command, tmp_path)
    events, _ = server.trace(argv)
    reference = snapshot(out)
    middle = int(np.random.default_rng(0).integers(1, events + 1))
    for point in sorted({1, middle, events}):
        shutil.rmtree(out)  # each interruption starts afresh
        outcome = server.run(argv, kill_at=point, signal_name="INT")
        assert (outcome.returncode, outcome.log.strip().splitlines()[-1:]) == (130, ["interrupted"]), \
            f"{command} N={point}: {outcome.returncode} {outcome.log[-2000:]}"
        assert "Traceback" not in outcome.log and "error" not in outcome.log.lower(), outcome.log[-2000:]
        present = snapshot(out) if out.exists() else {}
        assert all(reference.get(rel) == digest for rel, digest in present.items()), (point, sorted(present))
        assert out.exists() is False or leftovers(out) == [], (point, leftovers(out))
        assert server.run(argv).returncode == 0 and snapshot(out) == reference, point


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="finds the workers in Linux's /proc")
def test_ctrl_c_reaches_the_workers_too_and_only_the_parent_speaks(tmp_path):
    """A terminal's Ctrl-C signals the whole process group: synth's rendering processes included."""
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": str(Path(facetrain.__file__).parents[1])}
    proc = subprocess.Popen([sys.executable, "-m", "facetrain", "synth", "--out", str(out), "--identities", "400",
                             "--images_per_identity", "8", "--workers", "2"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env, start_new_session=True)
    children = Path(f"/proc/{proc.pid}/task/{proc.pid}/children")
    deadline = time.monotonic() + 120
    while proc.poll() is None and len(children.read_text().split()) < 2:  # both rendering processes started
        assert time.monotonic() < deadline, "synth never started its workers"
        time.sleep(0.2)
    time.sleep(1.0)  # rendering in both workers
    os.killpg(proc.pid, signal.SIGINT)
    stderr = proc.communicate(timeout=120)[1].decode()
    assert proc.returncode == 130 and stderr == "interrupted\n", stderr
    assert not any(p for p in tmp_path.rglob("*") if ".tmp-" in p.name or ".old-" in p.name)
