"""kill -9 at seeded write events (inside file writes too), then check that nothing half-written survives.

The driver (tests/crash_harness.py) runs in its own process and forks one child per run; see its
docstring for the invariants. Kill points are write events counted by facetrain.io_utils, not
times, so a failure reproduces with the same seed.
"""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

HARNESS = Path(__file__).with_name("crash_harness.py")
KILLS = 20


@pytest.mark.slow
@pytest.mark.parametrize("command", ["synth", "convert_memfiles", "convert_images", "compound", "align"])
def test_killed_runs_leave_only_complete_outputs_and_rerun_to_the_same_result(tmp_path, command):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}  # MTCNN on tiny photos: threads only add overhead
    env.pop("FACETRAIN_CRASH_AFTER_WRITES", None)
    proc = subprocess.run([sys.executable, str(HARNESS), command, str(tmp_path), "0", str(KILLS)],
                          env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["events"] >= KILLS and len(result["kills"]) >= KILLS, result
    assert result["problems"] == [], "\n".join(result["problems"])
