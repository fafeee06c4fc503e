"""`facetrain train` checks at start-up how a sample of the training and validation faces is aligned: one
warning line for a training folder aligned to another template (SphereFace's 96x112 padded to 112, planted
as in test_check), none for consistent sets, no verdict from too few faces, and the run's random streams
untouched."""
import warnings
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from facetrain.alignment.aligner import FaceAligner, read_rgb
from facetrain.alignment.mtcnn import MTCNN
from facetrain.cli import main
from facetrain.data.formats.bin import read_bin, write_bin
from facetrain.data.training_source import open_training_source
from facetrain.geometry.cp2tform import cp2tform_similarity
from facetrain.geometry.similarity import ADAFACE_TEMPLATE_112
from facetrain.training.startup_checks import MIN_FACES, alignment_lines, check_alignment_at_start
from train_fixtures import train_args

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "adaface_alignment"
PHOTOS = ("astronaut_input.png", "astronaut_rot15_s0.8_input.png", "two_astronauts_input.png")

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def faces():
    """(ArcFace-aligned, 96x112-template) BGR crops of the fixture photos' faces, 20 of each (brightness variants)."""
    detector, aligner = MTCNN(), FaceAligner()
    found = []
    for name in PHOTOS:
        rgb = read_rgb(FIXTURES / name)
        found += [(rgb, points) for points in detector.detect(rgb)[2]]
    narrow = ADAFACE_TEMPLATE_112 - [8.0, 0.0]  # 96x112 crops padded to 112 without AdaFace's 8 px shift
    arcface = [aligner.warp(rgb, points, 112) for rgb, points in found]
    shifted = [cv2.warpAffine(rgb, cp2tform_similarity(points, narrow), (112, 112)) for rgb, points in found]

    def variants(crops):
        gains = np.linspace(0.8, 1.2, -(-20 // len(crops)))
        return [np.clip(c[:, :, ::-1] * g, 0, 255).astype(np.uint8) for g in gains for c in crops][:20]
    return variants(arcface), variants(shifted)


def _write_set(root: Path, train: list[np.ndarray], val: list[np.ndarray]) -> Path:
    for i, image in enumerate(train[:16]):
        folder = root / "train" / "imgs" / f"id{i % 2}"
        folder.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(folder / f"{i}.png"), image)
    (root / "val").mkdir(parents=True, exist_ok=True)
    write_bin(root / "val" / "lfw.bin", val, [k % 2 == 0 for k in range(len(val) // 2)])
    return root


def _alignment_warnings(record) -> list[str]:
    return [str(w.message) for w in record if str(w.message).startswith("alignment check")]


def test_training_folder_on_another_template_warns_one_line(faces, tmp_path):
    arcface, shifted = faces
    data = _write_set(tmp_path / "data", shifted, arcface)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        assert main(["train", *train_args(data, tmp_path / "run", "--epochs", "1", "--limit_train_batches", "1")]) == 0
    lines = _alignment_warnings(record)
    assert len(lines) == 1, lines
    assert lines[0].startswith("alignment check: training data") and "aligned to another template" in lines[0]
    assert "alignment check: training data" in (tmp_path / "run" / "train.log").read_text()


def test_consistent_sets_do_not_warn_and_the_random_streams_are_untouched(faces, tmp_path):
    arcface, _ = faces
    data = _write_set(tmp_path / "data", arcface, arcface)
    source = open_training_source(data, "train/imgs")
    torch.manual_seed(7)
    np.random.seed(7)
    before = torch.get_rng_state(), np.random.get_state()[1].copy()
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        check_alignment_at_start(source, {"lfw": read_bin(data / "val" / "lfw.bin")})
    assert _alignment_warnings(record) == []
    assert torch.equal(torch.get_rng_state(), before[0]) and np.array_equal(np.random.get_state()[1], before[1])


def test_too_few_faces_give_no_verdict():
    off = {"verdict": "aligned to another template (offset -8.0, +0.0 px, scale 1.000)", "offset_px": [-8.0, 0.0],
           "scale": 1.0, "sample": 48, "found": MIN_FACES - 1}
    warned, notices = alignment_lines({"training data": off, "validation set lfw": {**off, "found": 0}}, "training data")
    assert warned == [] and len(notices) == 2 and all("no verdict" in n for n in notices)
    # with enough faces the same result is a warning; a validation set agreeing with it adds none of its own
    ok = {"verdict": "aligned to the ArcFace 112x112 template", "offset_px": [0.5, -1.0], "scale": 1.01,
          "sample": 48, "found": 16}
    warned, _ = alignment_lines({"training data": {**off, "found": 16}, "validation set lfw": ok}, "training data")
    assert len(warned) == 1 and warned[0].startswith("alignment check: training data")
    warned, _ = alignment_lines({"training data": ok, "validation set lfw": {**off, "found": 16}}, "training data")
    assert len(warned) == 1 and warned[0].startswith("alignment check: validation set lfw")
