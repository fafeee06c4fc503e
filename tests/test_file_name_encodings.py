"""File names that are not UTF-8 (a Latin-1 identity folder, a byte that decodes as nothing) are
printed, hashed and written to JSON, CSV, HTML and logs as the bytes they are: never a
UnicodeEncodeError, and a path read back from JSON is the same file (os.fsencode)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import facetrain
from data_format_fixtures import make_image_folder

LATIN1 = b"caf\xe9"  # "café" written by a Latin-1 system
ODD = b"\xff0.jpg"  # no encoding's text

_VERBS = """
import sys
from facetrain.cli import main
codes = {}
for name, argv in ARGVS:
    codes[name] = main(argv)
print("CODES", codes)
"""


@pytest.mark.skipif(sys.platform == "win32", reason="Windows file names are Unicode, never undecodable bytes")
def test_every_verb_prints_and_writes_undecodable_file_names(tmp_path):
    from facetrain.checkpoint import save_checkpoint
    from facetrain.models import build_model
    from train_fixtures import make_dataset

    imgs = make_image_folder(tmp_path / "faces", {"alice": 3, "bob": 3, "carl": 3})
    os.rename(imgs / "carl", os.fsencode(imgs) + b"/" + LATIN1)
    os.rename(imgs / "bob" / "0.jpg", os.fsencode(imgs / "bob") + b"/" + ODD)
    train = Path(os.fsdecode(os.fsencode(tmp_path) + b"/train-" + LATIN1))
    # OpenCV crashes on such names (facetrain reads and writes image bytes in Python): rename afterwards
    os.rename(make_dataset(tmp_path / "train", classes=2, per_class=4, val_pairs=10), train)
    save_checkpoint(tmp_path / "tiny.ckpt", build_model("tinynet"))
    ckpt, out = str(tmp_path / "tiny.ckpt"), tmp_path / "out"
    argvs = [
        ("info", ["info", str(imgs)]),
        ("embed", ["embed", str(imgs), "--ckpt", ckpt, "--out", os.fsdecode(os.fsencode(out) + b"-" + LATIN1 + b".npz"),
                   "--quiet"]),
        ("audit", ["audit", str(imgs), "--ckpt", ckpt, "--out", str(out / "audit"), "--quiet"]),
        ("align", ["align", str(imgs), str(out / "aligned"), "--quiet"]),
        ("make-bin", ["make-bin", str(imgs), "--out", str(out / "set.bin"), "--pairs", "10", "--exclude", os.fsdecode(LATIN1)]),
        ("train", ["train", "--data_root", str(train), "--train_data_path", "train/imgs", "--val_data_path", "val",
                   "--arch", "tinynet", "--batch_size", "4", "--num_workers", "0", "--gpus", "0", "--epochs", "1",
                   "--limit_train_batches", "1", "--output_dir", str(out / "run"), "--no_progress"]),
        ("report", ["report", str(out / "run")]),
        ("export", ["export", "--ckpt", ckpt, "--onnx", os.fsdecode(os.fsencode(out) + b"/" + LATIN1 + b".onnx"),
                    "--safetensors", os.fsdecode(os.fsencode(out) + b"/" + LATIN1 + b".safetensors")]),
    ]
    env = {**os.environ, "PYTHONIOENCODING": "utf-8:strict",  # a UTF-8 terminal outside the C locale
           "PYTHONPATH": str(Path(facetrain.__file__).parents[1])}
    script = f"ARGVS = {argvs!r}\n{_VERBS}"
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=600, env=env, cwd=tmp_path)
    stdout, stderr = proc.stdout.decode("utf-8", "surrogateescape"), proc.stderr.decode("utf-8", "surrogateescape")
    assert proc.returncode == 0 and "Error" not in stderr, stderr
    codes = eval(stdout.rsplit("CODES ", 1)[1])
    assert codes == {name: 0 for name, _ in argvs}, (codes, stderr)
    assert LATIN1 in proc.stdout  # printed as the bytes the name is made of
    audit = json.loads((out / "audit" / "audit.json").read_text())
    listed = json.dumps(audit)
    assert "\\udce9" in listed  # JSON holds the name (as an escape) and reads back the same path
    report = json.loads((out / "aligned" / "align_report.json").read_text())
    assert all(Path(p).exists() for p in report["no_face"]) and any(LATIN1 in os.fsencode(p) for p in report["no_face"])
    assert LATIN1 in (out / "run" / "train.log").read_bytes()
    assert json.loads((out / "run" / "config.json").read_text())["data_root"] == str(train)
    assert b"train-caf" in (out / "run" / "report.html").read_bytes()
    assert {LATIN1 + b".onnx", LATIN1 + b".safetensors"} <= set(os.listdir(os.fsencode(out)))


@pytest.mark.skipif(sys.platform == "win32", reason="Windows file names are Unicode, never undecodable bytes")
def test_ijb_crops_are_read_whatever_their_file_names(tmp_path):
    """OpenCV's own imread kills the process on such a name: IJB crops are read by Python."""
    import cv2
    import numpy as np

    from facetrain.geometry.similarity import TEMPLATE_112
    from facetrain.eval.ijb_features import AlignedCrops

    crop = np.random.default_rng(0).integers(0, 256, (150, 150, 3), dtype=np.uint8)
    path = Path(os.fsdecode(os.fsencode(tmp_path) + b"/" + LATIN1 + b".png"))
    path.write_bytes(cv2.imencode(".png", crop)[1].tobytes())
    faces = AlignedCrops([path], np.asarray(TEMPLATE_112, np.float32)[None] + 19.0, workers=1)[0:1]
    assert faces.shape == (1, 112, 112, 3) and faces.std() > 0
