"""MTCNN on real photographs shipped with scikit-image, transformed so the right answer is known,
for both detector styles (AdaFace's default and facenet-pytorch's). AdaFace's exact numbers are
checked in test_adaface_alignment.py."""
import cv2
import numpy as np
import pytest
import torch
from skimage import data

from facetrain.alignment.adaface_detect import adaface_scales
from facetrain.alignment.aligner import FaceAligner, NoFaceError, choose_face
from facetrain.alignment.facenet_cascade import pyramid_scales
from facetrain.alignment.mtcnn import MTCNN, WEIGHTS_ENV, ONet, PNet, RNet, find_weights_dir
from facetrain.alignment.nms import batched_nms, nms
from facetrain.errors import ConfigError
from facetrain.geometry.cp2tform import cp2tform_similarity
from facetrain.geometry.similarity import estimate_similarity

pytestmark = pytest.mark.usefixtures("one_torch_thread")

# Typed in (never imported): insightface's ArcFace template and AdaFace's square reference points.
ARCFACE_112 = np.array([[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366],
                        [41.5493, 92.3655], [70.7299, 92.2041]])
ADAFACE_SQUARE_112 = np.array([[38.29459953, 51.69630051], [73.53179932, 51.50139999], [56.02519989, 71.73660278],
                               [41.54930115, 92.3655014], [70.72990036, 92.20410156]])


@pytest.fixture(scope="module", params=["adaface", "facenet"])
def detector(request):
    return MTCNN(style=request.param)


@pytest.fixture(scope="module")
def aligner(detector):
    return FaceAligner(detector=detector)


@pytest.fixture(scope="module")
def astronaut():
    # 512 -> 256 keeps the face (~45 px wide) well above the 20 px minimum and the test fast.
    return cv2.resize(data.astronaut(), (256, 256), interpolation=cv2.INTER_AREA)


def test_released_state_dicts_load_strictly():
    folder = find_weights_dir()
    for name, net in (("pnet", PNet()), ("rnet", RNet()), ("onet", ONet())):
        state = torch.load(folder / f"{name}.pt", map_location="cpu", weights_only=True)
        assert set(state) == set(net.state_dict())
        net.load_state_dict(state, strict=True)


def test_missing_weights_name_the_folder_and_files(tmp_path, monkeypatch):
    monkeypatch.setenv(WEIGHTS_ENV, str(tmp_path))
    with pytest.raises(ConfigError, match=f"pnet.pt, rnet.pt, onet.pt not found in .{WEIGHTS_ENV}={tmp_path}"):
        MTCNN()


def test_weights_ship_inside_the_package_with_facenet_pytorchs_bytes():
    """The packaged copies are facenet-pytorch 2.6.0's data files, byte for byte (sha256 of its wheel's files)."""
    import hashlib

    expected = {"pnet": "a2a71925e0b9996a42f63e47efc1ca19043e69558b5c523b978d611dfae49c8f",
                "rnet": "bbb937de72efc9ef83b186c49f5f558467a1d7e3453a8ece0d71a886633f6a86",
                "onet": "165bfbe42940416ccfb977545cf0e976d5bf321f67083ae2aaaa5c764280118d"}
    folder = find_weights_dir()
    assert folder.parent.name == "alignment" and (folder / "LICENSE.md").is_file()
    for name, digest in expected.items():
        assert hashlib.sha256((folder / f"{name}.pt").read_bytes()).hexdigest() == digest


def test_facenet_package_is_never_imported(detector):
    import sys

    assert "facenet_pytorch" not in sys.modules and "torchvision" not in sys.modules


def test_one_face_on_astronaut(detector, astronaut):
    boxes, scores, landmarks = detector.detect(astronaut)
    assert boxes.shape == (1, 4) and scores.shape == (1,) and landmarks.shape == (1, 5, 2)
    assert scores[0] > 0.99
    x1, y1, x2, y2 = boxes[0]
    # The face of the astronaut sits around x 90..130, y 30..85 at this size.
    assert 80 < x1 < 100 and 115 < x2 < 140 and 20 < y1 < 45 and 70 < y2 < 95
    eyes, mouth = landmarks[0, :2], landmarks[0, 3:]
    assert eyes[0, 0] < eyes[1, 0] and mouth[0, 0] < mouth[1, 0]  # left before right
    assert eyes[:, 1].max() < landmarks[0, 2, 1] < mouth[:, 1].min()  # eyes above nose above mouth


def test_bgr_input_gives_the_same_detection(detector, astronaut):
    rgb = detector.detect(astronaut)
    bgr = detector.detect(np.ascontiguousarray(astronaut[:, :, ::-1]), channels="bgr")
    for a, b in zip(rgb, bgr):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-3)


def test_aligned_landmarks_land_on_the_template(detector, aligner, astronaut):
    _, _, landmarks = detector.detect(astronaut)
    face = aligner.align(astronaut)
    assert face.shape == (112, 112, 3) and face.dtype == np.uint8
    if detector.style == "adaface":
        template, matrix = ADAFACE_SQUARE_112, cp2tform_similarity(landmarks[0], ADAFACE_SQUARE_112)
    else:
        template, matrix = ARCFACE_112, estimate_similarity(landmarks[0], ARCFACE_112)
    warped = landmarks[0] @ matrix[:, :2].T + matrix[:, 2]
    # A similarity cannot fit five points exactly (she smiles: a wider, lower mouth than the
    # template's), but the eyes land within a few pixels and every point within 8.
    residual = np.linalg.norm(warped - template, axis=1)
    assert residual[:2].max() < 4.0 and residual.max() < 8.0, residual
    # Re-detect on the aligned face, padded so that MTCNN sees some background around it:
    # the landmarks are where the warp put them, so crop and landmarks agree.
    pad = 56
    boxes, _, again = detector.detect(cv2.copyMakeBorder(face, pad, pad, pad, pad, cv2.BORDER_REPLICATE))
    assert len(boxes) == 1
    error = np.linalg.norm(again[0] - pad - warped, axis=1)
    assert error.max() < 2.5, error


def test_rotated_and_rescaled_photo_aligns_to_the_same_face(aligner, astronaut):
    reference = aligner.align(astronaut).astype(np.float64)
    centre = (115.0, 60.0)
    matrix = cv2.getRotationMatrix2D(centre, 30.0, 0.75)
    rotated = cv2.warpAffine(astronaut, matrix, (256, 256), borderMode=cv2.BORDER_REFLECT)
    moved = aligner.align(rotated).astype(np.float64)
    # Compare the central region (the border can differ: reflected background vs original).
    a, b = reference[16:96, 16:96].ravel(), moved[16:96, 16:96].ravel()
    assert np.corrcoef(a, b)[0, 1] > 0.9
    assert np.abs(a - b).mean() < 20.0
    # A blank image is far from the reference: the thresholds above discriminate.
    assert np.abs(a - np.full_like(a, a.mean())).mean() > 25.0


def test_two_pasted_copies_give_two_faces_and_the_selection_rules(detector, astronaut):
    small = cv2.resize(astronaut, (160, 160), interpolation=cv2.INTER_AREA)
    canvas = np.full((260, 430, 3), 200, np.uint8)
    canvas[:256, :256] = astronaut
    canvas[50:210, 265:425] = small
    boxes, scores, _ = detector.detect(canvas)
    assert len(boxes) == 2
    centres = (boxes[:, 0] + boxes[:, 2]) / 2
    assert sorted(centres < 256) == [False, True]  # one face in each copy
    largest = choose_face(boxes, scores, "largest")
    assert centres[largest] < 256  # the full-size copy
    assert choose_face(boxes, scores, "score") == int(np.argmax(scores))


def test_no_face_raises_an_error_naming_the_image(aligner):
    with pytest.raises(NoFaceError, match="coffee.png: no face"):
        aligner.align(cv2.resize(data.coffee(), (200, 150)), "coffee.png")
    gradient = np.repeat(np.linspace(0, 255, 128, dtype=np.uint8)[None, :, None], 96, 0).repeat(3, 2)
    with pytest.raises(NoFaceError, match="gradient"):
        aligner.align(gradient, "gradient")


def test_pyramid_scales_cover_min_face_to_image_size():
    scales = pyramid_scales(886, 1280, 20, 0.709)
    assert scales[0] == pytest.approx(12 / 20)
    assert 886 * scales[-1] >= 12 > 886 * scales[-1] * 0.709
    assert pyramid_scales(10, 10, 20, 0.709) == []


def test_adaface_pyramid_is_0_6_times_0_85_to_the_k_while_the_short_side_exceeds_12():
    # 886 * 0.6 = 531.6 px; 531.6 * 0.85**k > 12 holds for k <= 23 (0.85**23 = 0.0238, 0.85**24 = 0.0202).
    scales = adaface_scales(886, 1280, 20, 0.85)
    assert len(scales) == 24
    assert scales[0] == 0.6 and scales[23] == pytest.approx(0.6 * 0.85**23, rel=1e-12)
    assert adaface_scales(20, 50, 20, 0.85) == []  # short side exactly 12 px after scaling: not > 12
    assert MTCNN(style="adaface").pyramid_levels(886, 1280) == 24


def test_unknown_detector_style_is_a_config_error():
    with pytest.raises(ConfigError, match="adaface"):
        MTCNN(style="retina")
    with pytest.raises(ConfigError, match="facenet"):
        FaceAligner(detector="dlib")


def test_nms_union_and_min_modes():
    boxes = np.array([[0, 0, 9, 9], [1, 1, 10, 10], [50, 50, 59, 59], [2, 2, 5, 5]], float)
    scores = np.array([0.9, 0.8, 0.7, 0.95])
    # The nested small box (score 0.95) does not overlap the others enough by IoU...
    assert nms(boxes, scores, 0.5).tolist() == [3, 0, 2]
    # ...but "min" overlap sees it as inside box 0 and keeps only the best of the pair.
    assert nms(boxes, scores, 0.5, mode="min").tolist() == [3, 2]
    assert nms(np.zeros((0, 4)), np.zeros(0), 0.5).shape == (0,)


def test_batched_nms_keeps_groups_apart():
    boxes = np.array([[0, 0, 9, 9], [0, 0, 9, 9], [0, 0, 9, 9]], float)
    scores = np.array([0.5, 0.9, 0.7])
    assert batched_nms(boxes, scores, np.array([0, 0, 1]), 0.5).tolist() == [1, 2]
