"""`facetrain eval` and `facetrain ijb` on a tiny saved checkpoint (real CLI code paths)."""
from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch

from facetrain.checkpoint import save_checkpoint
from facetrain.cli import main
from facetrain.data.formats.bin import write_bin
from facetrain.models import build_model
from test_ijb import write_protocol


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("ckpt") / "tiny.ckpt"
    save_checkpoint(path, build_model("mobilefacenet").eval())
    return path


def test_eval_cli_writes_table_csv_json(tmp_path, checkpoint, capsys):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (40, 112, 112, 3), dtype=np.uint8)
    issame = [i % 2 == 0 for i in range(20)]
    write_bin(tmp_path / "lfw.bin", images, issame)
    write_bin(tmp_path / "cfp_fp.bin", images[:20][::-1], issame[:10])  # 10 pairs: one per fold
    out_json, out_csv = tmp_path / "r.json", tmp_path / "r.csv"
    rc = main(["eval", "--ckpt", str(checkpoint), "--val_data_path", str(tmp_path), "--batch_size", "16",
               "--device", "cpu", "--json", str(out_json), "--csv", str(out_csv), "--no_progress"])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "lfw" in printed and "cfp_fp" in printed and "average" in printed
    results = json.loads(out_json.read_text())["results"]
    assert results["lfw"]["pairs"] == 20 and 0.0 <= results["lfw"]["accuracy"] <= 1.0
    assert set(results["lfw"]) >= {"accuracy", "std", "best_threshold", "tar_at_far_1e-3", "mean_norm"}
    assert results["average"]["sets"] == ["lfw", "cfp_fp"]
    assert results["average"]["accuracy"] == pytest.approx((results["lfw"]["accuracy"] + results["cfp_fp"]["accuracy"]) / 2)
    rows = list(csv.DictReader(out_csv.open()))
    assert [r["set"] for r in rows] == ["lfw", "cfp_fp", "average"]


def test_eval_cli_missing_set_is_one_line_error(tmp_path, checkpoint, capsys):
    rc = main(["eval", "--ckpt", str(checkpoint), "--val_data_path", str(tmp_path), "--sets", "agedb_30", "--device", "cpu"])
    assert rc == 1 and "agedb_30" in capsys.readouterr().err


def test_ijb_cli(tmp_path, checkpoint, capsys):
    write_protocol(tmp_path / "data", n_ids=3, templates_per_id=2)
    args = ["ijb", "--data_root", str(tmp_path / "data"), "--dataset_name", "IJBC", "--ckpt_path", str(checkpoint),
            "--output_dir", str(tmp_path / "out"), "--batch_size", "8", "--device", "cpu", "--no_progress"]
    assert main(args) == 0
    first = capsys.readouterr().out
    assert "pre_norm_vector_add-F1N1D0" in first and "identification skipped" in first
    assert main(args + ["--use_norm_score", "false", "--use_detector_score", "true"]) == 0
    result = json.loads((tmp_path / "out" / "verification_result.json").read_text())
    assert result["mode"] == "pre_norm_vector_add-F1N0D1" and len(result["tar_at_far"]) == 6
    assert len(list((tmp_path / "out").glob("features_*.npz"))) == 1  # second mode used the cache
