"""`facetrain check`: each planted defect found and named (a copy aligned to another template, loose
crops, channels swapped, a pair of one image twice, a truncated set), and clean copies passed."""
import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from facetrain.alignment.aligner import FaceAligner, read_rgb
from facetrain.alignment.mtcnn import MTCNN
from facetrain.cli import main
from facetrain.data.formats.bin import read_bin, write_bin
from facetrain.geometry.cp2tform import cp2tform_similarity
from facetrain.geometry.similarity import ADAFACE_TEMPLATE_112
from facetrain.hygiene.alignment_check import check_alignment
from facetrain.hygiene.published import count_verdict

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "adaface_alignment"
PHOTOS = ("astronaut_input.png", "astronaut_rot15_s0.8_input.png", "two_astronauts_input.png")

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def photos_and_landmarks():
    detector = MTCNN()
    out = []
    for name in PHOTOS:
        rgb = read_rgb(FIXTURES / name)
        _, scores, landmarks = detector.detect(rgb)
        out += [(rgb, points) for points in landmarks]  # every face (two_astronauts has two)
    return out


def _variants(faces_rgb: list[np.ndarray], count: int) -> np.ndarray:
    """`count` BGR faces: the given ones with brightness changes (the landmarks stay where they are)."""
    gains = np.linspace(0.8, 1.2, -(-count // len(faces_rgb)))
    images = [np.clip(face[:, :, ::-1] * g, 0, 255).astype(np.uint8) for g in gains for face in faces_rgb]
    return np.stack(images[:count])


def test_alignment_verdicts_on_real_faces(photos_and_landmarks):
    aligner = FaceAligner()
    arcface = [aligner.warp(rgb, points, 112) for rgb, points in photos_and_landmarks]
    result = check_alignment(_variants(arcface, 12), sample=12)
    assert result["verdict"] == "aligned to the ArcFace 112x112 template", result
    # 96x112 crops (SphereFace's template, not widened by 8 px) padded to 112: the faces sit 8 px left
    narrow = ADAFACE_TEMPLATE_112 - [8.0, 0.0]
    shifted = [cv2.warpAffine(rgb, cp2tform_similarity(points, narrow), (112, 112)) for rgb, points in photos_and_landmarks]
    result = check_alignment(_variants(shifted, 12), sample=12)
    assert result["verdict"].startswith("aligned to another template"), result
    assert result["offset_px"][0] == pytest.approx(-8.0, abs=2.0) and abs(result["offset_px"][1]) < 2.0
    # loose crops: the whole photo squeezed to 112x112, faces anywhere and small
    loose = [cv2.resize(rgb, (112, 112), interpolation=cv2.INTER_AREA) for rgb, _ in photos_and_landmarks]
    result = check_alignment(_variants(loose, 12), sample=12)
    assert result["verdict"].startswith(("not aligned", "no face found")), result


def test_published_counts():
    assert count_verdict("lfw", 6000, 3000)["ok"] is True
    assert count_verdict("cfp_fp", 7000, 3500)["ok"] is True and count_verdict("African_test", 6000, 3000)["ok"]
    truncated = count_verdict("agedb_30", 5400, 2700)
    assert truncated["ok"] is False and "agedb_30 has 6000 (3000 genuine)" in truncated["message"]
    assert count_verdict("my_set", 40, 20)["ok"] is None


def test_check_cli_names_duplicates_counts_and_sha256(tmp_path, capsys):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (40, 112, 112, 3), dtype=np.uint8)
    images[7] = images[6]  # pair 3: one image twice
    write_bin(tmp_path / "lfw.bin", list(images), [True, False] * 10, ext=".png")
    report = tmp_path / "check.json"
    assert main(["check", str(tmp_path / "lfw.bin"), "--sample", "4", "--quiet", "--json", str(report)]) == 0
    printed = capsys.readouterr().out
    assert "20 pairs (10 genuine) where lfw has 6000 (3000 genuine)" in printed
    assert "1 pairs of one image twice" in printed
    entry = json.loads(report.read_text())["sets"][0]
    import hashlib

    assert entry["sha256"] == hashlib.sha256((tmp_path / "lfw.bin").read_bytes()).hexdigest()
    assert entry["duplicates"]["identical_pairs"] == [3] and entry["counts"]["ok"] is False
    assert entry["alignment"]["verdict"] == "no face found in the sample"  # noise has no face


@pytest.mark.slow
def test_swapped_channels_are_found_with_the_model(trained_tinynet, tmp_path, capsys):
    """The shared test model on its held-out lfw.bin, as stored and with blue and red exchanged: only the
    swapped copy is flagged (the model learnt BGR faces whose skin, hair and eyes have a colour)."""
    vset = read_bin(trained_tinynet.data / "lfw.bin")
    write_bin(tmp_path / "lfw.bin", list(vset.images[..., ::-1]), vset.issame)
    verdicts = {}
    for name, path in (("stored", trained_tinynet.data / "lfw.bin"), ("swapped", tmp_path / "lfw.bin")):
        out = tmp_path / f"{name}.json"
        assert main(["check", str(path), "--ckpt", str(trained_tinynet.checkpoint), "--sample", "4", "--quiet",
                     "--device", "cpu", "--json", str(out)]) == 0
        verdicts[name] = json.loads(out.read_text())["sets"][0]["channels"]
    assert not verdicts["stored"]["swapped_better"], verdicts
    assert verdicts["swapped"]["swapped_better"], verdicts
    assert verdicts["swapped"]["gain_if_swapped"] > 2 * verdicts["swapped"]["noise"], verdicts
