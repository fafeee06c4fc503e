"""`facetrain demo --tiny`: the whole pipeline (synth -> memfiles -> train -> 5 sets + IJB -> report) end to end."""
import json

import pytest

from facetrain.cli import main
from facetrain.demo import DemoSettings, check_accuracy_floor
from facetrain.errors import FacetrainError

# Measured on the tiny settings (1 epoch, 40 pairs per set): trained 0.570 on average over the
# five sets with 1 torch thread (0.590 with 2), raw pixels 0.465, a margin of 0.105; a model that
# learned nothing scores ~0.5.
TINY_MARGIN = 0.05


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_tiny_demo_writes_results_and_report_and_fails_below_its_floor(tmp_path, capsys):
    # a floor the tiny run cannot reach: everything is still written, then the demo fails loudly
    assert main(["demo", "--tiny", "--out", str(tmp_path), "--min_accuracy", "0.99"]) == 1
    captured = capsys.readouterr()
    last = captured.err.replace("\r", "\n").rstrip("\n").split("\n")[-1]  # after the progress bars
    assert last.startswith("error: demo: average accuracy over the five sets is ")
    assert "below the floor of 0.99" in last and "Traceback" not in captured.err
    results = json.loads((tmp_path / "results.json").read_text())
    standard = ("lfw", "cfp_fp", "cplfw", "calfw", "agedb_30")
    assert set(standard) <= set(results["accuracy"]) and "average" in results["accuracy"]
    assert set(standard) <= set(results["raw_pixel_baseline"])
    assert results["accuracy"]["average"] >= results["raw_pixel_baseline"]["average"] + TINY_MARGIN
    assert results["accuracy"]["average"] == pytest.approx(sum(results["accuracy"][k] for k in standard) / 5)
    assert set(results["ijb"]["tar_at_far"]) == {"1e-06", "1e-05", "1e-04", "1e-03", "1e-02", "1e-01"}
    assert results["training"]["seconds"] > 0 and results["training"]["img_per_sec"] > 0
    assert set(results["audit"]["leakage"]) == {"lfw", "cfp_fp", "cfp_ff", "cplfw", "calfw", "agedb_30"}
    assert (tmp_path / "audit" / "audit.html").is_file() and "Dataset audit" in (tmp_path / "report.html").read_text()
    assert (tmp_path / "data" / "validation" / "lfw.dat.conf").is_file()  # the convert.py memfile path was used
    fairness = results["fairness"]
    assert list(fairness["groups"]) == ["group_a", "group_b", "group_c", "group_d"]
    assert all(g["pairs"] == 20 for g in fairness["groups"].values()) and fairness["global_threshold"]["fmr_target"] == 0.1
    assert "Demographic fairness" in (tmp_path / "report.html").read_text() and (tmp_path / "fairness.png").is_file()
    page = (tmp_path / "report.html").read_text()
    assert page.count("data:image/png;base64,") >= 4  # curves, ROC, heatmap, sample grid
    assert "raw pixels" in captured.out and "report:" in captured.out  # the table comes before the error


def test_accuracy_floor():
    assert DemoSettings().min_average_accuracy == 0.94 and DemoSettings.tiny().min_average_accuracy is None
    check_accuracy_floor({"accuracy": {"average": 0.95}}, 0.95)
    check_accuracy_floor({"accuracy": {"average": 0.2}}, None)
    with pytest.raises(FacetrainError, match="0.9499, below the floor of 0.95"):
        check_accuracy_floor({"accuracy": {"average": 0.9499}, "report": "r.html"}, 0.95)
    with pytest.raises(FacetrainError, match="missing"):
        check_accuracy_floor({"accuracy": {}}, 0.5)
