"""The seed's alignment API (`from face_alignment import align`) and `facetrain align` on a tiny folder."""
import json
import logging
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image
from skimage import data

from facetrain.alignment.aligner import read_rgb
from facetrain.cli import main
from facetrain.errors import DataError

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the seed imports `face_alignment` from the repository root

from face_alignment import align  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _astronaut(angle: float = 0.0, scale: float = 1.0) -> np.ndarray:
    rgb = cv2.resize(data.astronaut(), (200, 200), interpolation=cv2.INTER_AREA)
    matrix = cv2.getRotationMatrix2D((90.0, 47.0), angle, scale)
    return cv2.warpAffine(rgb, matrix, (200, 200), borderMode=cv2.BORDER_REFLECT)


def test_get_aligned_face_from_a_path_and_from_a_pil_image():
    path = ROOT / "face_alignment" / "test_images" / "img1.jpeg"
    face = align.get_aligned_face(str(path))
    assert isinstance(face, Image.Image) and face.mode == "RGB" and face.size == (112, 112)
    same = align.get_aligned_face(str(path), rgb_pil_image=Image.open(path).convert("RGB"))
    np.testing.assert_array_equal(np.asarray(face), np.asarray(same))


def test_every_sample_image_has_a_face():
    for name in ("img1.jpeg", "img2.jpeg", "img3.jpeg"):
        assert align.get_aligned_face(str(ROOT / "face_alignment" / "test_images" / name)) is not None


def test_no_face_returns_none_and_warns_with_the_image_name(tmp_path, caplog):
    path = tmp_path / "coffee.jpg"
    Image.fromarray(cv2.resize(data.coffee(), (160, 120))).save(path)
    with caplog.at_level(logging.WARNING, logger="facetrain.alignment"):
        assert align.get_aligned_face(str(path)) is None
    assert "coffee.jpg" in caplog.text and "no face" in caplog.text


def test_photos_stored_sideways_are_turned_upright_by_their_exif_orientation(tmp_path):
    upright = _astronaut()
    sideways = Image.fromarray(np.ascontiguousarray(np.rot90(upright)))  # stored turned 90 degrees left
    exif = sideways.getexif()
    exif[0x0112] = 6  # EXIF Orientation: rotate 90 degrees clockwise to display
    sideways.save(tmp_path / "phone.jpg", exif=exif, quality=95)
    assert np.abs(read_rgb(tmp_path / "phone.jpg").astype(int) - upright).mean() < 4
    assert align.get_aligned_face(str(tmp_path / "phone.jpg")) is not None


def test_unreadable_file_is_a_data_error_naming_it(tmp_path):
    path = tmp_path / "broken.jpg"
    path.write_bytes(b"not a jpeg")
    with pytest.raises(DataError, match="broken.jpg"):
        align.get_aligned_face(str(path))


def test_align_cli_builds_a_training_folder_and_reports_failures(tmp_path, capsys):
    raw = tmp_path / "raw"
    photos = {"alice": [_astronaut(), _astronaut(25, 0.8)], "bob": [_astronaut(-20, 0.9), _astronaut(10, 1.1)]}
    for identity, images in photos.items():
        (raw / identity).mkdir(parents=True)
        for k, rgb in enumerate(images):
            Image.fromarray(rgb).save(raw / identity / f"{k}.png")
    Image.fromarray(cv2.resize(data.coffee(), (160, 120))).save(raw / "bob" / "coffee.jpg")
    (raw / "bob" / "corrupt.jpg").write_bytes(b"\xff\xd8\xff garbage")

    out = tmp_path / "aligned"
    assert main(["align", str(raw), str(out), "--workers", "2", "--no_progress"]) == 0
    printed = capsys.readouterr().out
    assert "aligned 4/6 images of 2 identities" in printed and "coffee.jpg" in printed

    written = sorted(p.relative_to(out).as_posix() for p in out.rglob("*.jpg"))
    assert written == ["imgs/alice/0.jpg", "imgs/alice/1.jpg", "imgs/bob/0.jpg", "imgs/bob/1.jpg"]
    for path in out.rglob("*.jpg"):
        assert cv2.imread(str(path)).shape == (112, 112, 3)
    report = json.loads((out / "align_report.json").read_text())
    assert report["aligned"] == 4 and report["images"] == 6
    assert [Path(p).name for p in report["no_face"]] == ["coffee.jpg"]
    assert [Path(item["path"]).name for item in report["unreadable"]] == ["corrupt.jpg"]
    assert "corrupt.jpg" in report["unreadable"][0]["error"]

    # The output trains directly: it is an image folder with one class per identity.
    from facetrain.data.formats.image_folder import ImageFolder

    folder = ImageFolder(out)
    assert folder.classes == ["alice", "bob"] and len(folder.samples) == 4


def test_align_cli_rejects_an_empty_folder(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert main(["align", str(tmp_path / "empty"), str(tmp_path / "out")]) == 1
    assert "no images found" in capsys.readouterr().err
