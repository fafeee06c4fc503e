"""`facetrain demo --tiny`: the whole pipeline (synth -> memfiles -> train -> 5 sets + IJB -> report) end to end."""
import json

from facetrain.cli import main


def test_tiny_demo_writes_results_and_report(tmp_path, capsys):
    assert main(["demo", "--tiny", "--out", str(tmp_path)]) == 0
    results = json.loads((tmp_path / "results.json").read_text())
    standard = ("lfw", "cfp_fp", "cplfw", "calfw", "agedb_30")
    assert set(standard) <= set(results["accuracy"]) and "average" in results["accuracy"]
    assert set(standard) <= set(results["raw_pixel_baseline"])
    assert 0.0 <= results["accuracy"]["average"] <= 1.0
    assert set(results["ijb"]["tar_at_far"]) == {"1e-06", "1e-05", "1e-04", "1e-03", "1e-02", "1e-01"}
    assert results["training"]["seconds"] > 0 and results["training"]["img_per_sec"] > 0
    assert set(results["audit"]["leakage"]) == {"lfw", "cfp_fp", "cfp_ff", "cplfw", "calfw", "agedb_30"}
    assert (tmp_path / "audit" / "audit.html").is_file() and "Dataset audit" in (tmp_path / "report.html").read_text()
    assert (tmp_path / "data" / "validation" / "lfw.dat.conf").is_file()  # the convert.py memfile path was used
    page = (tmp_path / "report.html").read_text()
    assert page.count("data:image/png;base64,") >= 4  # curves, ROC, heatmap, sample grid
    out = capsys.readouterr().out
    assert "raw pixels" in out and "report:" in out
