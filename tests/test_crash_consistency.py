"""kill -9 at seeded write events (inside file writes too), then check that nothing half-written survives.

The driver (tests/crash_harness.py) forks one child per run from a `crash_tools.CommandServer`; see
its docstring for the invariants. Kill points are write events counted by facetrain.io_utils, not
times, so a failure reproduces with the same seed.
"""
import pytest

from crash_harness import harness

KILLS = 20


@pytest.mark.slow
@pytest.mark.parametrize("command", ["synth", "convert_memfiles", "convert_images", "compound", "align"])
def test_killed_runs_leave_only_complete_outputs_and_rerun_to_the_same_result(tmp_path, command):
    result = harness(command, tmp_path, seed=0, kills=KILLS)
    assert result["events"] >= KILLS and len(result["kills"]) >= KILLS, result
    assert result["problems"] == [], "\n".join(result["problems"])
