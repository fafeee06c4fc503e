"""Inference API of the seed (load_pretrained_model, to_input, inference.py) and `facetrain embed/compare`."""
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from PIL import Image
from skimage import data

from facetrain.checkpoint import save_checkpoint
from facetrain.cli import main
from facetrain.errors import ConfigError, DataError
from facetrain.infer import load_pretrained_model, to_input
from facetrain.models.released import resolve_checkpoint
from facetrain.models import build_model

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = sorted(str(p) for p in (ROOT / "face_alignment" / "test_images").glob("*.jpeg"))
sys.path.insert(0, str(ROOT))  # the seed imports `inference` and `face_alignment` from the root

import inference  # noqa: E402
from face_alignment import align  # noqa: E402


@pytest.fixture(scope="module")
def small_ckpt(tmp_path_factory):
    """A project checkpoint of a random-init MobileFaceNet (small and fast on CPU)."""
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("ckpt") / "mobilefacenet.ckpt"
    save_checkpoint(path, build_model("mobilefacenet"))
    return path


def test_to_input_is_adafaces_bgr_normalisation():
    rgb = np.random.default_rng(0).integers(0, 256, (112, 112, 3), dtype=np.uint8)
    x = to_input(Image.fromarray(rgb))
    assert x.shape == (1, 3, 112, 112) and x.dtype == torch.float32
    expected = ((rgb[:, :, ::-1] / 255.0) - 0.5) / 0.5  # AdaFace's inference.to_input, in float64
    np.testing.assert_allclose(x[0].numpy(), expected.transpose(2, 0, 1), atol=1e-6)


def test_to_input_rejects_missing_or_unaligned_faces():
    with pytest.raises(DataError, match="no face"):
        to_input(None)
    with pytest.raises(DataError, match="112x112"):
        to_input(Image.new("RGB", (100, 120)))


def test_missing_released_checkpoint_says_where_to_put_it(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match=r"adaface_ir50_ms1mv2\.ckpt not found.*pretrained.*nothing is downloaded"):
        load_pretrained_model("ir_50")
    with pytest.raises(ConfigError, match="released model name"):
        load_pretrained_model("resnet_1000")
    with pytest.raises(ConfigError, match="not found"):
        load_pretrained_model(str(tmp_path / "missing.ckpt"))


def test_seed_usage_with_an_official_style_checkpoint(tmp_path, monkeypatch):
    # AdaFace's Lightning layout: the backbone under `model.`, plus head tensors.
    torch.manual_seed(1)
    backbone = build_model("mobilefacenet").eval()
    state = {f"model.{k}": v for k, v in backbone.state_dict().items()}
    state["head.kernel"] = torch.randn(512, 10)
    torch.save({"state_dict": state, "epoch": 3}, tmp_path / "official.ckpt")

    model = inference.load_pretrained_model(str(tmp_path / "official.ckpt"))
    assert not model.training
    face = align.get_aligned_face(SAMPLES[0])
    feature, norm = model(inference.to_input(face))
    assert feature.shape == (1, 512) and norm.shape == (1, 1)
    with torch.no_grad():
        expected, _ = backbone(to_input(face))
    torch.testing.assert_close(feature.detach(), expected, atol=1e-5, rtol=1e-5)


def test_released_names_resolve_to_adaface_file_names(tmp_path, monkeypatch):
    (tmp_path / "pretrained").mkdir()
    for name in ("adaface_ir50_ms1mv2.ckpt", "adaface_ir101_webface12m.ckpt"):
        (tmp_path / "pretrained" / name).touch()
    monkeypatch.chdir(tmp_path)
    assert resolve_checkpoint("ir_50") == (tmp_path / "pretrained" / "adaface_ir50_ms1mv2.ckpt", "ir_50")
    assert resolve_checkpoint("ir_101") == (tmp_path / "pretrained" / "adaface_ir101_webface12m.ckpt", "ir_101")


def test_a_name_whose_file_holds_another_architecture_is_refused(tmp_path, monkeypatch, small_ckpt):
    (tmp_path / "pretrained").mkdir()
    (tmp_path / "pretrained" / "adaface_ir50_ms1mv2.ckpt").write_bytes(small_ckpt.read_bytes())
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match="mobilefacenet"):
        load_pretrained_model("ir_50")


def test_inference_script_prints_the_similarity_matrix(small_ckpt, capsys):
    assert inference.main(["--ckpt", str(small_ckpt)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("tensor([[1.0000,") and out.count("[") == 4  # a 3x3 matrix


def test_compare_cli_prints_a_symmetric_matrix_and_writes_a_heatmap(small_ckpt, tmp_path, capsys):
    png = tmp_path / "sim.png"
    assert main(["compare", *SAMPLES[:2], "--ckpt", str(small_ckpt), "--out", str(png)]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0] == f"[0] {SAMPLES[0]}" and lines[1] == f"[1] {SAMPLES[1]}"
    matrix = np.array([[float(v) for v in line.split()[1:]] for line in lines[3:5]])
    np.testing.assert_allclose(matrix, matrix.T, atol=1e-4)
    np.testing.assert_allclose(np.diag(matrix), 1.0, atol=1e-4)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert cv2.imread(str(png)).shape[0] > 200


def test_compare_cli_names_an_image_without_a_face(small_ckpt, tmp_path, capsys):
    coffee = tmp_path / "coffee.png"
    Image.fromarray(cv2.resize(data.coffee(), (160, 120))).save(coffee)
    assert main(["compare", SAMPLES[0], str(coffee), "--ckpt", str(small_ckpt)]) == 1
    assert "coffee.png: no face" in capsys.readouterr().err


def test_embed_cli_writes_embeddings_norms_and_paths(small_ckpt, tmp_path):
    faces = tmp_path / "faces"
    (faces / "sub").mkdir(parents=True)
    aligned = [np.asarray(align.get_aligned_face(p)) for p in SAMPLES]
    for k, face in enumerate(aligned[:2]):
        Image.fromarray(face).save(faces / f"{k}.png")
    Image.fromarray(aligned[2]).save(faces / "sub" / "2.png")
    (faces / "sub" / "broken.jpg").write_bytes(b"junk")
    out = tmp_path / "emb.npz"
    assert main(["embed", str(faces), "--ckpt", str(small_ckpt), "--out", str(out), "--batch_size", "2",
                 "--device", "cpu", "--no_progress"]) == 0
    result = np.load(out)
    assert list(result["paths"]) == ["0.png", "1.png", "sub/2.png"]
    assert result["embeddings"].shape == (3, 512) and result["norms"].shape == (3,)
    np.testing.assert_allclose(np.linalg.norm(result["embeddings"], axis=1), 1.0, atol=1e-5)
    assert list(result["failed_paths"]) == ["sub/broken.jpg"] and "broken.jpg" in result["failed_errors"][0]
    # Same numbers as the seed's per-image path.
    model = load_pretrained_model(str(small_ckpt))
    with torch.no_grad():
        emb, norm = model(to_input(Image.fromarray(aligned[2])))
    np.testing.assert_allclose(result["embeddings"][2], emb[0].numpy(), atol=1e-5)
    np.testing.assert_allclose(result["norms"][2], norm[0, 0].item(), rtol=1e-5)


def test_embed_with_align_reports_photos_without_a_face(small_ckpt, tmp_path):
    photos = tmp_path / "photos"
    photos.mkdir()
    Image.fromarray(cv2.resize(data.astronaut(), (200, 200))).save(photos / "astronaut.jpg")
    Image.fromarray(cv2.resize(data.coffee(), (160, 120))).save(photos / "coffee.jpg")
    out = tmp_path / "emb.npz"
    assert main(["embed", str(photos), "--ckpt", str(small_ckpt), "--out", str(out), "--align", "--no_progress"]) == 0
    result = np.load(out)
    assert list(result["paths"]) == ["astronaut.jpg"]
    assert list(result["failed_paths"]) == ["coffee.jpg"] and "no face" in result["failed_errors"][0]
