"""`facetrain align` on hostile folders: outputs inside inputs, resumed runs, huge and 16-bit photos."""
import json
import os

import cv2
import numpy as np
import pytest
from PIL import Image
from skimage import data

from facetrain.cli import main
from facetrain.data.guards.photo import read_photo_rgb
from facetrain.data.guards.pixel_limit import MAX_PIXELS_ENV


def _astronaut() -> np.ndarray:
    return cv2.resize(data.astronaut(), (200, 200), interpolation=cv2.INTER_AREA)


@pytest.fixture
def raw(tmp_path):
    folder = tmp_path / "raw"
    for identity in ("alice", "bob"):
        (folder / identity).mkdir(parents=True)
        Image.fromarray(_astronaut()).save(folder / identity / "0.png")
    return folder


def _tree(folder):
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("out", ["same", "inside", "input_in_output"])
def test_output_inside_the_input_or_the_reverse_is_refused(tmp_path, raw, capsys, out):
    if out == "input_in_output":  # align OUT/imgs OUT: the input is the output's imgs folder
        (tmp_path / "ds").mkdir()
        raw.rename(tmp_path / "ds" / "imgs")
        raw, target = tmp_path / "ds" / "imgs", tmp_path / "ds"
    else:
        target = raw if out == "same" else raw / "aligned"
    before = _tree(tmp_path)
    assert main(["align", str(raw), str(target), "--no_progress"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "inside" in err and len(err.strip().splitlines()) == 1
    assert _tree(tmp_path) == before


def test_running_again_resumes_and_keeps_the_faces_already_written(tmp_path, raw, capsys):
    out = tmp_path / "out"
    assert main(["align", str(raw), str(out), "--no_progress"]) == 0
    first = _tree(out)
    stamps = {p: p.stat().st_mtime_ns for p in out.rglob("*.jpg")}
    (out / "imgs" / "bob" / "0.jpg").unlink()  # as if killed before this face was written
    assert main(["align", str(raw), str(out), "--no_progress"]) == 0
    assert _tree(out) == first
    assert (out / "imgs" / "alice" / "0.jpg").stat().st_mtime_ns == stamps[out / "imgs" / "alice" / "0.jpg"]
    assert "aligned 2/2 images" in capsys.readouterr().out


def test_huge_photos_are_reported_before_decoding_and_the_batch_goes_on(tmp_path, raw, capsys):
    cv2.imwrite(str(raw / "bob" / "huge.png"), np.zeros((10000, 10000), np.uint8))  # 100 Mpx over 50 Mpx
    cv2.imwrite(str(raw / "bob" / "bomb.png"), np.zeros((14000, 14000), np.uint8))  # PIL's DecompressionBombError
    out = tmp_path / "out"
    assert main(["align", str(raw), str(out), "--no_progress"]) == 0
    report = json.loads((out / "align_report.json").read_text())
    assert report["aligned"] == 2
    errors = {os.path.basename(item["path"]): item["error"] for item in report["unreadable"]}
    assert set(errors) == {"huge.png", "bomb.png"}
    assert "10000x10000 pixels is over the limit of 50000000" in errors["huge.png"]
    assert "over the pixel limit" in errors["bomb.png"] or "over the limit" in errors["bomb.png"]


def test_max_pixels_flag_sets_the_limit(tmp_path, raw, monkeypatch):
    monkeypatch.setenv(MAX_PIXELS_ENV, "50000000")  # restored after the test: the flag sets it for workers
    out = tmp_path / "out"
    assert main(["align", str(raw), str(out), "--no_progress", "--max_pixels", "30000"]) == 0
    report = json.loads((out / "align_report.json").read_text())
    assert report["aligned"] == 0 and len(report["unreadable"]) == 2
    assert "200x200 pixels is over the limit of 30000" in report["unreadable"][0]["error"]


def test_sixteen_bit_grey_photo_is_read_at_full_depth(tmp_path, raw):
    grey8 = cv2.cvtColor(_astronaut(), cv2.COLOR_RGB2GRAY)
    cv2.imwrite(str(tmp_path / "g16.png"), grey8.astype(np.uint16) * 257)
    rgb = read_photo_rgb(tmp_path / "g16.png")
    assert rgb.dtype == np.uint8 and rgb.shape == (200, 200, 3)
    np.testing.assert_array_equal(rgb[:, :, 0], grey8)
    (raw / "carol").mkdir()
    (tmp_path / "g16.png").rename(raw / "carol" / "g16.png")
    out = tmp_path / "out"
    assert main(["align", str(raw), str(out), "--no_progress"]) == 0
    report = json.loads((out / "align_report.json").read_text())
    assert report["aligned"] == 3 and report["no_face"] == []
