"""The default alignment is AdaFace's own `face_alignment` (mk-minchul/AdaFace): checked against
the reference's outputs in ../shared/fixtures/adaface_alignment (boxes, scores, landmarks and the
first aligned face of three lossless inputs), through the library, the seed API and the CLI.
Templates and published numbers are typed in here, never imported from the code under test."""
import json
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

from facetrain.alignment.aligner import FaceAligner, read_rgb
from facetrain.alignment.mtcnn import MTCNN
from facetrain.checkpoint import save_checkpoint
from facetrain.cli import main
from facetrain.geometry.cp2tform import cp2tform_similarity
from facetrain.geometry.similarity import align_face, warp_and_crop_face
from facetrain.infer import to_input
from facetrain.models import build_model

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "tests" / "fixtures" / "adaface_alignment"  # see its README.md
EXPECTED = json.loads((FIXTURES / "expected.json").read_text())
NAMES = sorted(EXPECTED)

sys.path.insert(0, str(ROOT))  # the seed imports `face_alignment` from the repository root
from face_alignment import align  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")

# insightface's published 112x112 ArcFace template (left eye, right eye, nose, mouth corners).
ARCFACE_112 = np.array([[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366],
                        [41.5493, 92.3655], [70.7299, 92.2041]])
# AdaFace's get_reference_facial_points(default_square=True): its 96x112 points + 8 px in x.
ADAFACE_SQUARE_112 = np.array([[38.29459953, 51.69630051], [73.53179932, 51.50139999], [56.02519989, 71.73660278],
                               [41.54930115, 92.3655014], [70.72990036, 92.20410156]])


def _input(name: str) -> np.ndarray:
    return read_rgb(FIXTURES / EXPECTED[name]["input"])


def _reference_crop(name: str) -> np.ndarray:
    return np.asarray(Image.open(FIXTURES / EXPECTED[name]["aligned_first_face"]).convert("RGB"))


def _mean_abs_diff(a: np.ndarray, b: np.ndarray) -> float:
    assert a.shape == b.shape == (112, 112, 3)
    return float(np.abs(a.astype(np.float64) - b.astype(np.float64)).mean())


@pytest.fixture(scope="module")
def adaface_detector():
    return MTCNN()


@pytest.fixture(scope="module")
def detections(adaface_detector):
    return {name: adaface_detector.detect(_input(name)) for name in NAMES}


@pytest.mark.parametrize("name", NAMES)
def test_boxes_scores_and_landmarks_are_adafaces(detections, name):
    boxes, scores, landmarks = detections[name]
    faces = EXPECTED[name]["faces"]
    assert len(boxes) == len(faces)  # same count, and below, the same order
    for k, face in enumerate(faces):
        box_score = np.array(face["box_x1y1x2y2_score"])
        np.testing.assert_allclose(boxes[k], box_score[:4], atol=0.5, rtol=0)
        np.testing.assert_allclose(scores[k], box_score[4], atol=1e-4, rtol=0)
        np.testing.assert_allclose(landmarks[k], np.array(face["landmarks_xy"]), atol=0.25, rtol=0)


@pytest.mark.parametrize("name", NAMES)
def test_first_aligned_face_is_adafaces(adaface_detector, name):
    face = FaceAligner(detector=adaface_detector).align(_input(name))
    assert _mean_abs_diff(face, _reference_crop(name)) <= 1.0


@pytest.mark.parametrize("name", NAMES)
def test_seed_get_aligned_face_is_adafaces(name):
    face = align.get_aligned_face(str(FIXTURES / EXPECTED[name]["input"]))
    assert _mean_abs_diff(np.asarray(face), _reference_crop(name)) <= 1.0


def test_python_api_aligns_like_adaface_by_default():
    import facetrain

    path = FIXTURES / EXPECTED["astronaut"]["input"]
    assert _mean_abs_diff(np.asarray(facetrain.align(path)), _reference_crop("astronaut")) <= 1.0
    facenet = facetrain.align_all([path], detector="facenet")[0]
    assert _mean_abs_diff(np.asarray(facenet), _reference_crop("astronaut")) > 5.0


def test_facenet_option_is_the_other_pipeline(adaface_detector):
    """detector="facenet" stays available and really is a different crop (16 grey levels away here)."""
    facenet = FaceAligner(detector="facenet")
    assert facenet.detector.style == "facenet" and facenet.detector.factor == pytest.approx(0.709)
    assert adaface_detector.style == "adaface" and adaface_detector.factor == pytest.approx(0.85)
    face = facenet.align(_input("astronaut"))
    assert _mean_abs_diff(face, _reference_crop("astronaut")) > 5.0


def test_align_cli_writes_adafaces_crops_by_default(tmp_path, capsys):
    raw = tmp_path / "raw" / "someone"
    raw.mkdir(parents=True)
    for name in NAMES:
        Image.fromarray(_input(name)).save(raw / f"{name}.png")
    for detector in ("adaface", "facenet"):  # the same photos, each detector into its own folder
        extra = [] if detector == "adaface" else ["--detector", "facenet"]
        assert main(["align", str(tmp_path / "raw"), str(tmp_path / detector), "--no_progress", "--device", "cpu", *extra]) == 0
    capsys.readouterr()
    for name in NAMES:
        # The CLI stores JPEG (quality 95): compare with the reference crop through the same codec.
        ok, encoded = cv2.imencode(".jpg", cv2.cvtColor(_reference_crop(name), cv2.COLOR_RGB2BGR),
                                   [cv2.IMWRITE_JPEG_QUALITY, 95])
        expected = cv2.imdecode(encoded, cv2.IMREAD_COLOR)
        written = {d: cv2.imread(str(tmp_path / d / "imgs" / "someone" / f"{name}.jpg")) for d in ("adaface", "facenet")}
        assert _mean_abs_diff(written["adaface"], expected) <= 1.0
        assert _mean_abs_diff(written["facenet"], expected) > 5.0


@pytest.fixture(scope="module")
def small_model(tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("ckpt") / "mobilefacenet.ckpt"
    model = build_model("mobilefacenet").eval()
    save_checkpoint(path, model)
    return path, model


def _embed(model, rgb: np.ndarray) -> np.ndarray:
    with torch.inference_mode():
        return model(to_input(Image.fromarray(rgb)))[0][0].numpy()


def test_embed_and_compare_clis_align_like_adaface(small_model, tmp_path, capsys):
    path, model = small_model
    photos = tmp_path / "photos"
    photos.mkdir()
    names = ["astronaut", "astronaut_rot15_s0.8"]
    for name in names:
        Image.fromarray(_input(name)).save(photos / f"{name}.png")
    reference = {name: _embed(model, _reference_crop(name)) for name in names}

    out = {}
    for detector in ("adaface", "facenet"):
        out[detector] = tmp_path / f"{detector}.npz"
        assert main(["embed", str(photos), "--ckpt", str(path), "--out", str(out[detector]), "--align",
                     "--detector", detector, "--device", "cpu", "--no_progress"]) == 0
    for detector, limit in (("adaface", 1e-3), ("facenet", None)):
        saved = np.load(out[detector])
        errors = [np.abs(row - reference[Path(p).stem]).max() for row, p in zip(saved["embeddings"], saved["paths"])]
        if limit is not None:
            assert max(errors) < limit, errors
        else:
            assert min(errors) > 1e-2, errors  # the other crop gives visibly other embeddings

    images = [str(photos / f"{name}.png") for name in names]
    assert main(["compare", *images, "--ckpt", str(path), "--device", "cpu"]) == 0
    printed = capsys.readouterr().out.splitlines()
    rows = [line for line in printed if line.startswith("[0]") and len(line.split()) == 1 + len(names)]
    similarity = float(rows[0].split()[2])  # [0] vs [1]
    expected = float(reference[names[0]] @ reference[names[1]])
    assert similarity == pytest.approx(expected, abs=2e-4)


def test_inference_script_takes_the_detector_flag(small_model, capsys):
    import inference

    path, _ = small_model
    image = str(FIXTURES / EXPECTED["astronaut"]["input"])
    assert inference.main([image, "--ckpt", str(path), "--detector", "facenet"]) == 0
    assert "tensor(" in capsys.readouterr().out


def _blob_image(points: np.ndarray, size: int, sigma: float) -> np.ndarray:
    """Grey image with a Gaussian dot at each point (float32, 0..255, three channels)."""
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float64)
    image = np.zeros((size, size))
    for x, y in points:
        image += 255.0 * np.exp(-((xs - x) ** 2 + (ys - y) ** 2) / (2 * sigma**2))
    return np.repeat(np.clip(image, 0, 255)[:, :, None], 3, 2).astype(np.float32)


def _dot_centres(crop: np.ndarray, near: np.ndarray, radius: int = 5) -> np.ndarray:
    """Intensity-weighted centre of the dot found around each expected position."""
    grey = crop[:, :, 0].astype(np.float64)
    centres = []
    for x, y in near:
        x0, y0 = int(round(x)) - radius, int(round(y)) - radius
        patch = grey[y0 : y0 + 2 * radius + 1, x0 : x0 + 2 * radius + 1]
        patch = np.clip(patch - patch.min(), 0, None)
        py, px = np.mgrid[0 : patch.shape[0], 0 : patch.shape[1]]
        centres.append([x0 + (px * patch).sum() / patch.sum(), y0 + (py * patch).sum() / patch.sum()])
    return np.array(centres)


@pytest.mark.parametrize("warp, template", [(warp_and_crop_face, ADAFACE_SQUARE_112), (align_face, ARCFACE_112)])
def test_warps_put_the_landmarks_on_the_published_templates(warp, template):
    """Landmarks that are an exact similarity of the template must land on it (to dot-finding
    precision): a template moved by a few pixels fails this."""
    angle, scale, shift = np.deg2rad(17.0), 1.9, np.array([141.0, 73.0])
    rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    landmarks = template @ (scale * rotation).T + shift
    image = _blob_image(landmarks, 400, sigma=2.0 * scale)
    found = _dot_centres(warp(image, landmarks), template)
    np.testing.assert_allclose(found, template, atol=0.25)


def test_adaface_fit_sends_the_landmark_centroid_onto_the_template_centroid():
    """Both least-squares fits map the landmarks' centroid exactly onto the template's: with the
    reference's own landmarks (expected.json) and the typed template."""
    for name in NAMES:
        landmarks = np.array(EXPECTED[name]["faces"][0]["landmarks_xy"])
        # warp a one-pixel-per-landmark probe through the real function: the warped image of
        # the landmark centroid must sit at the template centroid.
        matrix = cp2tform_similarity(landmarks, ADAFACE_SQUARE_112)
        centroid = matrix[:, :2] @ landmarks.mean(0) + matrix[:, 2]
        np.testing.assert_allclose(centroid, ADAFACE_SQUARE_112.mean(0), atol=1e-3)


def _closed_form_fit(points: np.ndarray, template: np.ndarray) -> np.ndarray:
    """Least squares u = a x + b y + c, v = a y - b x + d (template (x,y) -> points (u,v)),
    solved in closed form about the centroids, inverted into a 2x3 points -> template matrix."""
    t, p = template - template.mean(0), points - points.mean(0)
    norm = (t**2).sum()
    a = (p[:, 0] * t[:, 0] + p[:, 1] * t[:, 1]).sum() / norm
    b = (p[:, 0] * t[:, 1] - p[:, 1] * t[:, 0]).sum() / norm
    forward = np.array([[a, b], [-b, a]])  # template -> points, column vectors
    inverse = np.linalg.inv(forward)
    return np.column_stack([inverse, template.mean(0) - inverse @ points.mean(0)])


def test_cp2tform_fit_on_matlabs_published_example():
    """MATLAB's cp2tform(uv, xy, 'similarity') documents T for this example; the non-reflective
    fit reproduces it. The Python port AdaFace uses scores the fits against a mirrored copy of
    xy (it negates its input in place), so here it keeps the mirrored fit instead: we match the port."""
    uv = np.array([[0.0, 0.0], [6.0, 3.0], [-2.0, 5.0]])
    xy = np.array([[-1.0, -1.0], [0.0, -10.0], [4.0, 4.0]])
    matlab_t = np.array([[-0.0764, -1.6190], [1.6190, -0.0764], [-3.2156, 0.0290]])  # rows: [x y] = [u v 1] T
    plain = _closed_form_fit(uv, xy)
    np.testing.assert_allclose(plain, np.column_stack([matlab_t[:2].T, matlab_t[2]]), atol=1e-4)

    mirror = np.array([-1.0, 1.0])
    mirrored_fit = _closed_form_fit(uv, xy * mirror) * mirror[:, None]  # fit to the mirror, mirror back
    errors = [np.linalg.norm(uv @ m[:, :2].T + m[:, 2] - xy * mirror) for m in (plain, mirrored_fit)]
    assert errors[1] < errors[0]  # the port's scoring prefers the mirrored fit here
    np.testing.assert_allclose(cp2tform_similarity(uv, xy), mirrored_fit, atol=1e-6)
    # Real faces keep the plain fit: the first fixture's landmarks against the square template.
    landmarks = np.array(EXPECTED["astronaut"]["faces"][0]["landmarks_xy"])
    np.testing.assert_allclose(cp2tform_similarity(landmarks, ADAFACE_SQUARE_112),
                               _closed_form_fit(landmarks, ADAFACE_SQUARE_112), atol=1e-4)


class _ScriptedPNet:
    """P-Net stand-in: face logits (5 and 4 by default) at map cells ((0,0) and (2,2)) of the first
    level (30x30), 0 elsewhere, zero box offsets. Only a softmax along each row turns these into 0.943 /
    0.858 while the other rows stay at 1/10 (below the 0.6 threshold)."""

    def __init__(self, level: int = 30, cells: dict = {(0, 0): 5.0, (2, 2): 4.0}):  # noqa: B006 (read only)
        self.level, self.cells = level, cells

    def logits(self, x):
        height, width = (-(-(x.shape[2] - 2) // 2) - 4), (-(-(x.shape[3] - 2) // 2) - 4)
        logits = torch.zeros(1, 2, height, width)
        if x.shape[2] == self.level:
            for (row, col), value in self.cells.items():
                logits[0, 1, row, col] = value
        return torch.zeros(1, 4, height, width), logits


def test_cascade_conventions_on_scripted_networks():
    """Hand-computed through AdaFace's conventions: min face 40 on a 100x100 image gives scale 0.3;
    cell (0,0) maps to round(1/0.3)=3 .. round(13/0.3)=43, cell (2,2) to 17..57. O-Net shrinks the
    second box to 20..40, inside the first: IoU 0.26 keeps it, but the last NMS is "min"
    (overlap / smaller area = 1), so one face remains. Landmarks = x1 + (x2 - x1 + 1) * fraction."""
    from facetrain.alignment.adaface_detect import detect_faces_adaface

    def rnet(x):
        return torch.zeros(len(x), 4), torch.tensor([[0.01, 0.99], [0.02, 0.98]])[: len(x)]

    fractions = torch.tensor([0.2, 0.8, 0.5, 0.3, 0.7, 0.3, 0.3, 0.5, 0.7, 0.7])

    def onet(x):
        assert len(x) == 2
        offsets = torch.tensor([[0.0, 0.0, 0.0, 0.0], [3 / 41, 3 / 41, -17 / 41, -17 / 41]])
        return offsets, fractions.repeat(2, 1), torch.tensor([[0.01, 0.99], [0.05, 0.95]])

    image = np.full((100, 100, 3), 128, np.uint8)
    boxes, scores, landmarks = detect_faces_adaface(image, (_ScriptedPNet(), rnet, onet), torch.device("cpu"),
                                                    min_face_size=40.0)
    np.testing.assert_allclose(boxes, [[3, 3, 43, 43]], atol=1e-5)
    np.testing.assert_allclose(scores, [0.99], atol=1e-6)
    expected = np.stack([3 + 41 * fractions[:5].numpy(), 3 + 41 * fractions[5:].numpy()], axis=1)
    np.testing.assert_allclose(landmarks[0], expected, atol=1e-4)


def test_a_box_that_leaves_the_image_goes_on_clipped():
    """AdaFace's crop cutting clips the boxes it cuts (in place), and the cascade goes on with them.
    Min face 40 on a 60x60 image: scale 0.3, an 18x18 level, a 4x4 map; cell (3,3) maps to
    round(7/0.3)=23 .. round(19/0.3)=63, past the last pixel 59. R-Net sees that 41 px square, then the
    box is 23..59 (37 px): with zero offsets it stays so, O-Net sees it whole, and the landmarks are
    23 + 37 * fraction (not 23 + 41 * fraction, the square the first crop was cut from)."""
    from facetrain.alignment.adaface_detect import detect_faces_adaface

    def rnet(x):
        return torch.zeros(len(x), 4), torch.tensor([[0.01, 0.99]]).repeat(len(x), 1)

    fractions = torch.tensor([0.2, 0.8, 0.5, 0.3, 0.7, 0.3, 0.3, 0.5, 0.7, 0.7])
    seen = []

    def onet(x):
        seen.append(x)
        return torch.zeros(len(x), 4), fractions.repeat(len(x), 1), torch.tensor([[0.01, 0.99]]).repeat(len(x), 1)

    image = np.full((60, 60, 3), 128, np.uint8)
    pnet = _ScriptedPNet(level=18, cells={(3, 3): 5.0})
    boxes, scores, landmarks = detect_faces_adaface(image, (pnet, rnet, onet), torch.device("cpu"), min_face_size=40.0)
    np.testing.assert_allclose(boxes, [[23, 23, 59, 59]], atol=1e-5)
    expected = np.stack([23 + 37 * fractions[:5].numpy(), 23 + 37 * fractions[5:].numpy()], axis=1)
    np.testing.assert_allclose(landmarks[0], expected, atol=1e-4)
    # O-Net's crop was the clipped box, all image (grey 128 -> 0.0039 after the shift), no black padding
    assert torch.allclose(seen[0], torch.full_like(seen[0], 0.5 * 0.0078125))
