"""benchmarks/gpu_check.sh --cpu: the GPU check's steps, tiny, on the CPU (the script itself must stay green)."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_gpu_check_runs_green_on_the_cpu(tmp_path):
    env = {**os.environ, "PYTHON": sys.executable, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([str(ROOT / "benchmarks" / "gpu_check.sh"), "--cpu", "--out", str(tmp_path / "check.json")],
                          env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    summary = json.loads(proc.stdout)  # stdout is the JSON summary only
    assert summary == json.loads((tmp_path / "check.json").read_text())
    sections = summary["sections"]
    assert summary["failures"] == [] and all(s["status"] == "ok" for s in sections.values())
    assert sections["step"]["best"]["img_per_sec"] > 0
    assert 0 <= sections["end_to_end"]["data_time_share"] <= 1 and sections["end_to_end"]["ratio_to_bare_step"] > 0
    assert sections["eval"]["tinynet_bf16_img_per_sec"] > 0 and sections["eval"]["ijb_scoring_seconds"] >= 0
    assert sections["short_run"]["bf16"]["steps_then_resumed"] == [6, 9]
    assert "skipped" in sections["torchrun"]

