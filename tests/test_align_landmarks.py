"""Alignment from landmarks you already have: `facetrain align --landmarks FILE` and
`facetrain.align(image, landmarks=...)`. The landmarks of AdaFace's fixtures give AdaFace's crops,
the detector's own landmarks give the detection-based crop exactly, mirrored landmarks are refused,
and images without landmarks are skipped, never detected."""
import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

import facetrain
from facetrain.alignment.aligner import read_rgb
from facetrain.alignment.landmarks import as_points, read_landmarks
from facetrain.alignment.mtcnn import MTCNN
from facetrain.cli import main
from facetrain.errors import DataError

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "adaface_alignment"
EXPECTED = json.loads((FIXTURES / "expected.json").read_text())
NAMES = ("astronaut", "astronaut_rot15_s0.8")

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _points(name: str) -> np.ndarray:
    return np.array(EXPECTED[name]["faces"][0]["landmarks_xy"])


def _reference_crop(name: str) -> np.ndarray:
    return np.asarray(Image.open(FIXTURES / EXPECTED[name]["aligned_first_face"]).convert("RGB"))


@pytest.fixture
def photos(tmp_path) -> Path:
    folder = tmp_path / "raw" / "person"
    folder.mkdir(parents=True)
    for name in NAMES:
        shutil.copy(FIXTURES / EXPECTED[name]["input"], folder / f"{name}.png")
    return tmp_path / "raw"


def _write_csv(path: Path, rows: dict[str, np.ndarray]) -> Path:
    lines = ["path,x1,y1,x2,y2,x3,y3,x4,y4,x5,y5"]
    lines += [",".join([name, *(repr(float(v)) for v in np.asarray(points).reshape(-1))]) for name, points in rows.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


def _written(out: Path, name: str) -> np.ndarray:
    return cv2.imread(str(out / "imgs" / "person" / f"{name}.jpg"))


def test_adafaces_landmarks_give_adafaces_crops_without_detection(photos, tmp_path, capsys):
    csv = _write_csv(tmp_path / "points.csv", {f"person/{n}.png": _points(n) for n in NAMES})
    assert main(["align", str(photos), str(tmp_path / "out"), "--landmarks", str(csv), "--no_progress"]) == 0
    for name in NAMES:
        # JPEG quality 95 on both sides: compare through the same codec, as the detection CLI test does
        ok, encoded = cv2.imencode(".jpg", cv2.cvtColor(_reference_crop(name), cv2.COLOR_RGB2BGR),
                                   [cv2.IMWRITE_JPEG_QUALITY, 95])
        expected = cv2.imdecode(encoded, cv2.IMREAD_COLOR).astype(np.float64)
        assert np.abs(_written(tmp_path / "out", name) - expected).mean() <= 1.0
    # the API: the same crop from the same points, given as (5, 2) or as 10 numbers
    path = photos / "person" / "astronaut.png"
    face = np.asarray(facetrain.align(path, landmarks=_points("astronaut")))
    assert np.abs(face.astype(np.float64) - _reference_crop("astronaut")).mean() <= 1.0
    assert np.array_equal(np.asarray(facetrain.align(path, landmarks=_points("astronaut").reshape(-1))), face)


def test_the_detectors_own_landmarks_give_the_detection_crop_exactly(photos, tmp_path):
    detector = MTCNN()
    rows = {}
    for name in NAMES:
        boxes, scores, landmarks = detector.detect(read_rgb(photos / "person" / f"{name}.png"))
        rows[str((photos / "person" / f"{name}.png").resolve())] = landmarks[int(np.argmax(scores))]  # absolute paths
    csv = _write_csv(tmp_path / "points.csv", rows)
    assert main(["align", str(photos), str(tmp_path / "detected"), "--no_progress"]) == 0
    assert main(["align", str(photos), str(tmp_path / "given"), "--landmarks", str(csv), "--no_progress"]) == 0
    for name in NAMES:
        assert np.array_equal(_written(tmp_path / "given", name), _written(tmp_path / "detected", name))


def test_images_without_landmarks_are_skipped_and_reported(photos, tmp_path, capsys):
    points = json.dumps({"person/astronaut.png": _points("astronaut").tolist()})
    (tmp_path / "points.json").write_text(points)
    out = tmp_path / "out"
    assert main(["align", str(photos), str(out), "--landmarks", str(tmp_path / "points.json"), "--no_progress"]) == 0
    printed = capsys.readouterr().out
    assert "no landmarks: 1" in printed and "no landmarks (skipped)" in printed
    report = json.loads((out / "align_report.json").read_text())
    assert [Path(p).name for p in report["no_landmarks"]] == ["astronaut_rot15_s0.8.png"]
    assert report["aligned"] == 1 and report["no_face"] == []
    assert sorted(p.name for p in (out / "imgs" / "person").iterdir()) == ["astronaut.jpg"]  # nothing detected


def test_mirrored_landmarks_are_refused_with_one_line(photos, tmp_path, capsys):
    mirrored = _points("astronaut")[[1, 0, 2, 4, 3]]  # left and right swapped
    csv = _write_csv(tmp_path / "points.csv", {"person/astronaut.png": mirrored})
    out = tmp_path / "out"
    assert main(["align", str(photos), str(out), "--landmarks", str(csv), "--no_progress"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "points.csv, line 2" in err[0] and "mirrored" in err[0]
    assert not out.exists()
    with pytest.raises(DataError, match="mirrored"):
        facetrain.align(photos / "person" / "astronaut.png", landmarks=mirrored)
    # rotation does not hide it: the rotated photo's points mirrored about a vertical line
    rotated = _points("astronaut_rot15_s0.8")
    with pytest.raises(DataError, match="mirrored"):
        as_points(rotated * [-1, 1], "rotated")
    as_points(rotated, "rotated")


def test_the_xxyy_layout_and_bad_rows(tmp_path):
    points = _points("astronaut")
    (tmp_path / "xxyy.csv").write_text("a.png," + ",".join(str(v) for v in points.T.reshape(-1)) + "\n")
    assert np.array_equal(read_landmarks(tmp_path / "xxyy.csv", layout="xxyy")["a.png"], points)
    with pytest.raises(DataError, match="mirrored.*xxyy"):  # the same file read pairwise is nonsense
        read_landmarks(tmp_path / "xxyy.csv")
    for text, message in [("a.png,1,2,3\n", "line 1: expected an image path and 10 coordinates"),
                          ("path,x\n", "line 1: expected an image path and 10 coordinates"),
                          ("a.png," + ",".join(["1"] * 9) + ",nan\n", "not finite"),
                          ("a.png," + ",".join(["5"] * 10) + "\n", "one line"),
                          ("", "no landmarks")]:
        (tmp_path / "bad.csv").write_text(text)
        with pytest.raises(DataError, match=message):
            read_landmarks(tmp_path / "bad.csv")
    with pytest.raises(DataError, match="not found"):
        read_landmarks(tmp_path / "missing.csv")


def test_a_landmark_file_that_lists_none_of_the_images_is_an_error(photos, tmp_path, capsys):
    csv = _write_csv(tmp_path / "points.csv", {"elsewhere/astronaut.png": _points("astronaut")})
    assert main(["align", str(photos), str(tmp_path / "out"), "--landmarks", str(csv), "--no_progress"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "none of its 2 images is listed" in err[0]
