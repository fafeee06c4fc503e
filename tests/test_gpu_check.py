"""benchmarks/gpu_check.sh --cpu: the GPU check's steps, tiny, on the CPU (the script itself must stay
green), and its bookkeeping: a failing step row or section (an OOM, a compilation error, a benchmark's
SystemExit) costs only itself, the JSON is written as the check goes, and calls with --only add their
sections to one file."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import gpu_check  # noqa: E402
from gpu_check_report import peak_bf16_tflops, summary_lines, train_flops_per_image  # noqa: E402


def _fake_measure(arch, precision, channels_last, compile_, *rest):
    if compile_:
        raise RuntimeError("compilation failed\nwith a long story")
    return 123.0


def test_a_failing_row_or_section_costs_only_itself(tmp_path, monkeypatch, capfd):
    monkeypatch.setattr(gpu_check, "measure", _fake_measure)
    saved = []
    monkeypatch.setattr(gpu_check.Record, "save", lambda self: saved.append(json.loads(self.text())))

    def benchmark_gives_up(*_):
        raise SystemExit("train_end_to_end: too few logging intervals")

    monkeypatch.setattr(gpu_check, "end_to_end_section", benchmark_gives_up)
    assert gpu_check.main(["--cpu", "--out", str(tmp_path), "--only", "step", "end_to_end"]) == 1
    out, err = capfd.readouterr()
    summary = json.loads(out)  # stdout: the JSON only
    rows = summary["sections"]["step"]["rows"]
    assert [("error" in r, r["compile"]) for r in rows] == [(False, False), (True, True), (False, False)]
    assert rows[1]["error"] == "RuntimeError: compilation failed with a long story"
    assert all(r["img_per_sec"] == 123.0 for r in rows if "error" not in r)
    assert summary["failures"] == ["step", "end_to_end"]
    assert "too few logging intervals" in summary["sections"]["end_to_end"]["error"]
    # written as it went: after every row, before the next section began
    assert [len(s["sections"].get("step", {}).get("rows", [])) for s in saved[:4]] == [0, 1, 2, 3]
    assert any("end_to_end" not in s["sections"] and s["sections"]["step"]["status"] == "failed" for s in saved)
    assert "FAILED: step, end_to_end" in err and "tinynet" in err


def test_calls_with_only_add_their_sections_to_one_file(tmp_path, monkeypatch, capfd):
    monkeypatch.setattr(gpu_check, "measure", lambda *a: 50.0)
    monkeypatch.setattr(gpu_check, "eval_section", lambda *a: {"tinynet_fp32_img_per_sec": 9.0})
    assert gpu_check.main(["--cpu", "--out", str(tmp_path), "--only", "step"]) == 0
    assert gpu_check.main(["--cpu", "--out", str(tmp_path), "--only", "eval"]) == 0
    capfd.readouterr()
    on_disk = json.loads((tmp_path / "gpu_check_cpu.json").read_text())
    assert set(on_disk["sections"]) == {"step", "eval"} and on_disk["failures"] == []
    assert all(s["status"] == "ok" for s in on_disk["sections"].values())


def test_mfu_and_the_summary_fit_one_screen():
    assert peak_bf16_tflops("NVIDIA H200") == 989.0 and peak_bf16_tflops("NVIDIA H100 PCIe") == 756.0
    assert peak_bf16_tflops("Some GPU") is None
    flops = train_flops_per_image("ir_50", 10000)
    assert 3 * 2 * 6.0e9 < flops < 3 * 2 * 6.8e9  # IR-50: ~6.3 GMACs per 112x112 face
    rows = [{"arch": "ir_50", "batch": b, "precision": p, "channels_last": c, "compile": False, "img_per_sec": 3000.0,
             "mfu": 0.3, "peak_memory_gib": 20.0} for b in (128, 256, 512) for p in ("fp16", "bf16") for c in (1, 0)]
    data = {"mode": "gpu", "environment": {"gpu": "NVIDIA H200", "torch": "2.11", "peak_bf16_tflops": 989.0},
            "sections": {"step": {"status": "ok", "seconds": 200, "rows": rows * 2 + rows[:2]}}, "failures": []}
    lines = summary_lines(data, Path("x.json"))
    assert len(lines) <= 40 and max(map(len, lines)) <= 100 and lines[-1] == "all sections passed"


@pytest.mark.slow
@pytest.mark.timeout(1800)  # a compiled row and two torchrun launches: ~4 min of CPU time
def test_gpu_check_runs_green_on_the_cpu(tmp_path):
    env = {**os.environ, "PYTHON": sys.executable, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([str(ROOT / "benchmarks" / "gpu_check.sh"), "--cpu", "--out", str(tmp_path)],
                          env=env, capture_output=True, text=True, timeout=1700)
    assert proc.returncode == 0, proc.stderr[-4000:]
    summary = json.loads(proc.stdout)  # stdout is the JSON summary only (torchrun's children write elsewhere)
    assert summary == json.loads((tmp_path / "gpu_check_cpu.json").read_text())
    sections = summary["sections"]
    assert summary["failures"] == [] and all(s["status"] == "ok" for s in sections.values())
    assert sections["step"]["best"]["img_per_sec"] > 0
    assert [r["compile"] for r in sections["step"]["rows"]] == [False, True, False]  # CI compiles something
    assert 0 <= sections["end_to_end"]["data_time_share"] <= 1 and sections["end_to_end"]["ratio_to_bare_step"] > 0
    assert sections["eval"]["tinynet_bf16_img_per_sec"] > 0 and sections["eval"]["ijb_scoring_seconds"] >= 0
    assert sections["short_run"]["bf16"]["steps_then_resumed"] == [6, 9]
    torchrun = sections["torchrun"]
    assert (torchrun["backend"], torchrun["processes"], torchrun["steps_then_resumed"]) == ("gloo", 2, [6, 9])
    assert "all sections passed" in proc.stderr
