"""MODEL_CARD.md: written by every training run with results.json's numbers, again at a resumed run's end,
by `facetrain report` (with an audit's row) and `calibrate --save`; copied beside exported models; never
half-written; licence terms only where a source states them."""
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from facetrain.cli import main
from facetrain.data.licences import INSIGHTFACE_SOURCE, SYNTHETIC, dataset_terms, training_data_terms
from facetrain.fingerprint import file_sha256
from facetrain.training.logger import read_metrics
from facetrain.training.model_card import render_model_card
from train_fixtures import make_dataset, train_args

pytestmark = pytest.mark.usefixtures("one_torch_thread")
SRC = Path(__file__).resolve().parents[1] / "src"


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_dataset(tmp_path_factory.mktemp("faces"))


@pytest.fixture(scope="module")
def run(data, tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "run"
    assert main(["train", *train_args(data, out, "--epochs", "2", "--limit_train_batches", "2",
                                      "--no_alignment_check")]) == 0
    return out


def _section(card: str, title: str) -> str:
    return card.split(f"## {title}")[1].split("\n## ")[0]


def _rows(section: str) -> dict[str, list[str]]:
    rows = [line.strip("|").split("|") for line in section.splitlines() if line.startswith("|")]
    return {cells[0].strip(): [c.strip() for c in cells[1:]] for cells in rows[2:]}


def test_the_card_holds_the_runs_numbers(run, data):
    card = (run / "MODEL_CARD.md").read_text()
    results = json.loads((run / "results.json").read_text())
    config = json.loads((run / "config.json").read_text())
    test = _rows(_section(card, "Final test"))
    for name, metrics in results["test"].items():
        assert test[name][0] == f"{metrics['accuracy']:.4f}"
        assert test[name][2] == f"{metrics['best_threshold_cosine']:.4f}"
    assert test["lfw"][4] == str(results["test"]["lfw"]["pairs"])
    facts = _rows(_section(card, "Data"))
    assert results["data"]["images"] == 48 and results["data"]["identities"] == 6
    assert facts["images"] == ["48"] and facts["identities"] == ["6"]
    assert facts["fingerprint"] == [results["data"]["fingerprint"]] and len(results["data"]["fingerprint"]) == 64
    assert facts["training data"] == [str((data / "train" / "imgs").resolve())]
    model = _rows(_section(card, "Model"))
    assert model["architecture"] == ["tinynet"] and model["seed"] == [str(config["seed"])]
    assert model["head"] == [f"adaface (m {config['m']}, h {config['h']}, s {config['s']}, t_alpha {config['t_alpha']})"]
    curve = _rows(_section(card, "Validation curve"))
    validations = [r for r in read_metrics(run / "metrics.csv") if r["name"] == "val_acc"]
    assert [(int(k), f"{r['value']:.4f}") for k, r in zip(curve, validations)] == \
        [(r["step"], f"{r['value']:.4f}") for r in validations] and len(curve) == len(validations)
    environment = _rows(_section(card, "Environment"))
    assert environment["torch"] == [results["runtime"]["torch"]]
    assert environment["precision used"][0].startswith(results["runtime"]["precision"])
    assert f"facetrain train --config {run / 'config.json'}" in card
    assert _rows(_section(card, "Licences"))["training data"][1] == "unknown"


def test_a_resumed_run_that_only_repeats_the_final_test_writes_it_again(run, tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    (copy / "MODEL_CARD.md").unlink()
    config = json.loads((copy / "config.json").read_text())
    assert main(["train", "--config", str(copy / "config.json"), "--output_dir", str(copy), "--no_progress",
                 "--resume_from_checkpoint", str(copy / "last.ckpt"), "--epochs", str(config["epochs"])]) == 0
    card = (copy / "MODEL_CARD.md").read_text()
    assert _section(card, "Final test") == _section((run / "MODEL_CARD.md").read_text(), "Final test")


def test_export_writes_the_card_beside_the_model(run, tmp_path, capsys):
    out = tmp_path / "export" / "model.safetensors"
    assert main(["export", "--ckpt", str(run / "best.ckpt"), "--safetensors", str(out)]) == 0
    card = (tmp_path / "export" / "model.MODEL_CARD.md").read_text()
    assert f"model card: {tmp_path / 'export' / 'model.MODEL_CARD.md'}" in capsys.readouterr().out
    assert _section(card, "Final test") == _section((run / "MODEL_CARD.md").read_text(), "Final test")
    assert _rows(_section(card, "Exported files"))["model.safetensors"] == [file_sha256(out)]
    assert "![training curves]" not in card  # the plot stays in the run folder


def test_report_quotes_the_audit_row_of_this_data(run, data, tmp_path, capsys):
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    scorecard = tmp_path / "scorecard.json"
    row = {"dataset": "faces", "path": str(data / "train" / "imgs"), "identities": 6, "uniqueness": 0.75}
    other = {"dataset": "other", "path": str(tmp_path / "other" / "imgs"), "identities": 9, "uniqueness": 0.5}
    scorecard.write_text(json.dumps({"model": "m.ckpt", "far": 1e-4, "columns": {"uniqueness": "uniqueness (share)"},
                                     "datasets": [other, row]}))
    assert main(["report", str(copy), "--audit", str(scorecard)]) == 0
    audit = _rows((copy / "MODEL_CARD.md").read_text().split("### Audit")[1].split("\n## ")[0])
    assert audit["uniqueness (share)"] == ["0.7500"] and audit["identities"] == ["6"]
    # an audit.json of other data is named as such; a file that is no audit is refused before anything is written
    other_audit = tmp_path / "audit.json"
    other_audit.write_text(json.dumps({"summary": {"images": 999, "identities": 9}}))
    assert main(["report", str(copy), "--audit", str(other_audit)]) == 0
    assert "audits other data (999 images, 9 identities" in (copy / "MODEL_CARD.md").read_text()
    before = (copy / "MODEL_CARD.md").read_bytes()
    (tmp_path / "bad.json").write_text("[1, 2]")
    capsys.readouterr()
    assert main(["report", str(copy), "--audit", str(tmp_path / "bad.json")]) == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "bad.json" in err and (copy / "MODEL_CARD.md").read_bytes() == before


def test_calibrate_save_refreshes_the_card(run, data, tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    assert main(["calibrate", "--ckpt", str(copy / "best.ckpt"), "--pairs", str(data / "val" / "lfw.bin"),
                 "--far", "0.1", "--save", "--quiet"]) == 0
    section = _section((copy / "MODEL_CARD.md").read_text(), "Decision threshold")
    assert re.search(r"Calibrated: cosine -?\d\.\d{6}, calibrated at FAR 0\.1 on ", section), section


@pytest.mark.parametrize("crash_at", [1, 2])
def test_a_card_is_never_half_written(run, tmp_path, crash_at):
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    full = (copy / "MODEL_CARD.md").read_text()
    (copy / "MODEL_CARD.md").write_text("the previous card\n")
    env = {**os.environ, "PYTHONPATH": str(SRC), "FACETRAIN_CRASH_AFTER_WRITES": str(crash_at)}
    code = ("import sys; from facetrain.training.model_card import write_model_card; write_model_card(sys.argv[1])")
    done = subprocess.run([sys.executable, "-c", code, str(copy)], env=env, capture_output=True)
    assert done.returncode == -9  # killed inside the write (1: the data, 2: the rename)
    assert (copy / "MODEL_CARD.md").read_text() in ("the previous card\n", full)


def test_licence_terms_come_from_a_source_or_are_unknown(tmp_path):
    assert dataset_terms("/data/faces_emore/imgs").name.startswith("MS1MV2")
    assert dataset_terms("/data/faces_emore/imgs").source == INSIGHTFACE_SOURCE
    assert dataset_terms("WebFace4M").source == "https://www.face-benchmark.org/download.html"
    assert "non-commercial" in dataset_terms("/x/DigiFace1M/imgs").terms
    assert dataset_terms("/x/dcface_0.5m").terms == "unknown"
    assert dataset_terms("/x/my_faces") is None
    (tmp_path / "synth").mkdir()
    (tmp_path / "synth" / "synth_summary.json").write_text("{}")
    assert training_data_terms(tmp_path / "synth" / "imgs") == SYNTHETIC


def test_pretrained_weights_are_named_with_their_datas_terms(run, tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    config = json.loads((copy / "config.json").read_text())
    (copy / "config.json").write_text(json.dumps({**config, "start_from_model_statedict": "pretrained/adaface_ir50_ms1mv2.ckpt"}))
    weights = _rows(_section(render_model_card(copy), "Licences"))["pretrained weights"]
    assert "adaface_ir50_ms1mv2.ckpt (trained on MS1MV2)" in weights[0]
    assert weights[1].startswith("weights: unknown") and "non-commercial research purposes only" in weights[1]
