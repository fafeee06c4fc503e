import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from facetrain.cli import main
from facetrain.data.formats.bin import read_bin
from facetrain.data.formats.image_codec import read_file_bgr
from facetrain.data.formats.recordio import RecordReader
from facetrain.errors import ConfigError
from facetrain.eval.ijb_data import load_identification_lists, load_protocol
from facetrain.geometry.similarity import TEMPLATE_112, estimate_similarity
from facetrain.synthetic import Nuisance, generate_dataset, render_face, sample_identity
from facetrain.synthetic.baseline import raw_pixel_accuracy
from facetrain.synthetic.ijb_protocol import loose_crop_matrix
from facetrain.synthetic.splits import STREAMS, make_identity, pair_plan

TINY = dict(num_identities=4, images_per_identity=3, bins=True, rec=True, ijb=True, bin_names=("lfw", "cfp_fp"),
            pairs_per_set=20, ijb_subjects=3, progress=False)


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("synth") / "a"
    generate_dataset(out, seed=3, **TINY)
    return out


def test_same_seed_same_bytes_and_workers_do_not_matter(dataset, tmp_path):
    generate_dataset(tmp_path / "b", seed=3, workers=2, **TINY)
    first, second = _files(dataset), _files(tmp_path / "b")
    assert first.keys() == second.keys() and first == second
    assert {"lfw.bin", "cfp_fp.bin", "train.rec", "train.idx", "synth_summary.json", "imgs/id_00000/0.jpg"} <= first.keys()


def test_different_seed_different_images(dataset, tmp_path):
    generate_dataset(tmp_path / "c", seed=4, num_identities=1, images_per_identity=1, progress=False)
    assert (tmp_path / "c/imgs/id_00000/0.jpg").read_bytes() != (dataset / "imgs/id_00000/0.jpg").read_bytes()


def test_image_folder_layout(dataset):
    folders = sorted(p.name for p in (dataset / "imgs").iterdir())
    assert folders == ["id_00000", "id_00001", "id_00002", "id_00003"]
    img = read_file_bgr(dataset / "imgs/id_00002/2.jpg")
    assert img.shape == (112, 112, 3) and img.dtype == np.uint8
    assert not list(dataset.glob("imgs.*"))  # no temporary folder left


def test_verification_sets_are_readable_half_genuine_and_alternating(dataset):
    for name in ("lfw", "cfp_fp"):
        vset = read_bin(dataset / f"{name}.bin")
        assert vset.images.shape == (40, 112, 112, 3)
        assert vset.issame.sum() == 10 and list(vset.issame[:4]) == [True, False, True, False]


def test_verification_identities_are_disjoint_from_training():
    train = {make_identity(0, "train", i).to_vector().tobytes() for i in range(30)}
    for name in ("lfw", "cfp_fp", "cplfw", "calfw", "agedb_30", "cfp_ff", "ijb"):
        held_out = {make_identity(0, name, i).to_vector().tobytes() for i in range(30)}
        assert not train & held_out
    assert len(set(STREAMS.values())) == len(STREAMS)


def test_impostor_pairs_join_different_identities():
    _, plan, issame = pair_plan(0, "calfw", 40, 12)
    assert np.all(plan[issame, 0] == plan[issame, 1])
    assert np.all(plan[~issame, 0] != plan[~issame, 1])


def test_recordio_holds_the_training_images_with_their_labels(dataset):
    reader = RecordReader(dataset / "train.rec")
    assert len(reader.image_keys) == 12 and reader.num_classes == 4
    for key in reader.image_keys:
        img, label = reader.read_image(int(key))
        n = (int(key) - 1) % 3  # InsightFace layout: images 1..N grouped by label, in order
        assert label == (int(key) - 1) // 3
        assert np.array_equal(img, read_file_bgr(dataset / f"imgs/id_{label:05d}/{n}.jpg"))


def test_ijb_protocol_is_consistent_and_readable_by_the_evaluator(dataset):
    proto = load_protocol(dataset / "ijb", "IJBC")
    assert len(proto.image_paths) == len(proto.templates) and all(p.is_file() for p in proto.image_paths)
    assert set(np.unique(proto.pair_label)) == {0, 1}
    lists = load_identification_lists(proto.meta_dir, "IJBC")
    assert not isinstance(lists, str)
    assert set(lists.gallery_subjects) == set(lists.probe_subjects) == {1, 2, 3}
    assert not set(lists.gallery_templates) & set(lists.probe_templates)
    # a template holds 1-3 media of 1-3 images each; media ids are not shared between templates
    media_counts = []
    for t in np.unique(proto.templates):
        medias, per_media = np.unique(proto.medias[proto.templates == t], return_counts=True)
        assert 1 <= len(medias) <= 3 and per_media.min() >= 1 and per_media.max() <= 3
        assert not set(medias) & set(proto.medias[proto.templates != t])
        media_counts.append(len(medias))
    assert max(media_counts) > 1 and len(np.unique(proto.templates)) == 9  # 3 subjects x 3 templates
    for path, lmk in zip(proto.image_paths, proto.landmarks):
        h, w = cv2.imread(str(path)).shape[:2]
        assert 150 <= h == w <= 250
        assert np.all((lmk >= 0) & (lmk < w))
        aligned = estimate_similarity(lmk)
        mapped = lmk @ aligned[:, :2].T + aligned[:, 2]
        assert np.abs(mapped - TEMPLATE_112).max() < 12  # profile views bend the 5 points; most are close


def test_landmarks_follow_the_loose_crop_transform():
    ident = sample_identity(np.random.default_rng(5))
    nz = Nuisance(yaw=20.0, roll=4.0, scale=1.03, shift=(1.0, -2.0))
    aligned = render_face(ident, nz, np.random.default_rng(0))
    crop, size = loose_crop_matrix(np.random.default_rng(1))
    loose = render_face(ident, nz, np.random.default_rng(0), size=size, crop=crop)
    expected = aligned.landmarks @ crop[:, :2].T + crop[:, 2]
    assert loose.image.shape == (size, size, 3)
    assert np.allclose(loose.landmarks, expected, atol=1e-3)


def test_frontal_face_sits_on_the_template():
    residuals = []
    for seed in range(20):
        face = render_face(sample_identity(np.random.default_rng(seed)), Nuisance(), np.random.default_rng(seed))
        assert face.image.shape == (112, 112, 3) and face.image.dtype == np.uint8
        residuals.append(np.linalg.norm(face.landmarks - TEMPLATE_112, axis=1).max())
    assert np.median(residuals) < 5 and max(residuals) < 9


def test_raw_pixel_baseline():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 255, (40, 112, 112, 3), dtype=np.uint8)
    issame = np.arange(20) % 2 == 0
    images[1::2][issame] = images[0::2][issame]  # genuine pairs are identical images
    assert raw_pixel_accuracy(images, issame) == 1.0


def test_summary_reports_sizes_and_baselines(dataset):
    summary = json.loads((dataset / "synth_summary.json").read_text())
    assert summary["seed"] == 3 and summary["train"]["images"] == 12
    for info in summary["verification_sets"].values():
        assert info["pairs"] == 20 and info["genuine"] == 10 and 0.0 <= info["raw_pixel_accuracy"] <= 1.0
    assert summary["ijb"]["dataset_name"] == "IJBC" and summary["ijb"]["genuine_pairs"] == 9


def test_cli_end_to_end(tmp_path, capsys):
    out = tmp_path / "cli"
    assert main(["synth", "--out", str(out), "--identities", "2", "--images_per_identity", "2", "--bins",
                 "--bin_names", "agedb_30", "--pairs_per_set", "10", "--seed", "1"]) == 0
    printed = capsys.readouterr().out
    assert "agedb_30.bin: 10 pairs (5 genuine)" in printed and "raw-pixel baseline accuracy" in printed
    assert (out / "agedb_30.bin").is_file() and len(list((out / "imgs").rglob("*.jpg"))) == 4


def test_bad_options_are_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="unknown verification set"):
        generate_dataset(tmp_path, bins=True, bin_names=("nope",))
    with pytest.raises(ConfigError, match="ijb_name"):
        generate_dataset(tmp_path, ijb=True, ijb_name="IJBX")
