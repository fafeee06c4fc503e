"""The 5-point similarity estimate (Umeyama) and the warp, on point sets made by a known similarity.

Only the estimator's mathematics is checked here, on arbitrary point sets; the 112x112 template
itself is pinned by the alignment tests against AdaFace's fixtures.
"""
from __future__ import annotations

import math

import cv2
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from facetrain.geometry.similarity import align_face, estimate_similarity

POINTS = np.array([[30.0, 50.0], [80.0, 48.0], [55.0, 72.0], [35.0, 95.0], [78.0, 93.0]])


def _similarity(scale, angle, tx, ty) -> np.ndarray:
    c, s = scale * math.cos(angle), scale * math.sin(angle)
    return np.array([[c, -s, tx], [s, c, ty]])


@settings(max_examples=40, deadline=None, derandomize=True)
@given(scale=st.floats(0.3, 3.0), angle=st.floats(-math.pi + 0.01, math.pi - 0.01),
       tx=st.floats(-200, 200), ty=st.floats(-200, 200))
def test_an_exact_similarity_is_recovered(scale, angle, tx, ty):
    truth = _similarity(scale, angle, tx, ty)
    moved = POINTS @ truth[:, :2].T + truth[:, 2]
    np.testing.assert_allclose(estimate_similarity(POINTS, moved), truth, atol=1e-8)
    back = estimate_similarity(moved, POINTS)  # the inverse maps the points back
    np.testing.assert_allclose(moved @ back[:, :2].T + back[:, 2], POINTS, atol=1e-7)


def test_least_squares_with_noise_and_no_reflection():
    rng = np.random.default_rng(0)
    truth = _similarity(1.7, 0.4, 12.0, -30.0)
    moved = POINTS @ truth[:, :2].T + truth[:, 2] + rng.normal(0, 0.5, POINTS.shape)
    got = estimate_similarity(POINTS, moved)
    np.testing.assert_allclose(got[:, :2], truth[:, :2], atol=0.02)
    np.testing.assert_allclose(got[:, 2], truth[:, 2], atol=1.5)
    residual = np.abs(POINTS @ got[:, :2].T + got[:, 2] - moved).sum()
    for delta in (np.array([[0.01, 0, 0], [0, 0.01, 0]]), np.array([[0, 0, 0.1], [0, 0, 0]])):
        worse = got + delta
        assert np.square(POINTS @ worse[:, :2].T + worse[:, 2] - moved).sum() > np.square(
            POINTS @ got[:, :2].T + got[:, 2] - moved).sum()
    assert residual < 5
    # mirrored points: the best proper rotation, never a reflection (determinant > 0)
    mirrored = POINTS * [-1.0, 1.0]
    m = estimate_similarity(POINTS, mirrored)
    assert np.linalg.det(m[:, :2]) > 0


def test_degenerate_inputs():
    with pytest.raises(ValueError, match="matching landmark sets"):
        estimate_similarity(POINTS[:4], POINTS)
    with pytest.raises(ValueError, match="matching landmark sets"):
        estimate_similarity(POINTS[:1], POINTS[:1])
    same = np.tile([[10.0, 20.0]], (5, 1))  # no spread: scale 1, a pure translation onto the centroid
    np.testing.assert_allclose(estimate_similarity(same, POINTS), [[1, 0, 45.6], [0, 1, 51.6]], atol=1e-9)


def test_align_face_puts_the_landmarks_where_the_template_says():
    """A picture whose 5 landmark pixels are marked: after the warp the marks sit on the template."""
    rng = np.random.default_rng(1)
    truth = _similarity(2.1, -0.3, 40.0, 90.0)
    template = np.array([[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366],
                         [41.5493, 92.3655], [70.7299, 92.2041]])  # the ArcFace template (insightface)
    landmarks = template @ truth[:, :2].T + truth[:, 2]
    image = np.zeros((320, 320), np.float32)
    for x, y in landmarks:
        cv2.circle(image, (int(round(x)), int(round(y))), 4, 255.0, -1)
    image += rng.uniform(0, 10, image.shape).astype(np.float32)
    face = align_face(image, landmarks)
    assert face.shape == (112, 112)
    for x, y in template:
        ys, xs = np.mgrid[-5:6, -5:6]
        patch = face[int(round(y)) - 5:int(round(y)) + 6, int(round(x)) - 5:int(round(x)) + 6]
        cy, cx = (patch * ys).sum() / patch.sum(), (patch * xs).sum() / patch.sum()
        assert abs(int(round(y)) + cy - y) < 1.0 and abs(int(round(x)) + cx - x) < 1.0
    big = align_face(image, landmarks, size=224)  # the template scales with the output size
    assert big.shape == (224, 224) and big[int(2 * template[2, 1]), int(2 * template[2, 0])] > 100


def test_the_fit_runs_in_float64_whatever_the_input_dtypes():
    """float32 landmarks (as detectors return them) and a float32 template are fitted exactly as their
    float64 values."""
    template = np.array([[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366],
                         [41.5493, 92.3655], [70.7299, 92.2041]], np.float32)
    landmarks = (template * 1.37 + [100.3, 41.9]).astype(np.float32)
    np.testing.assert_array_equal(estimate_similarity(landmarks, template),
                                  estimate_similarity(landmarks.astype(np.float64), template.astype(np.float64)))


def test_mirrored_points_get_skimages_best_rotation():
    """Umeyama's reflection fix, against skimage's SimilarityTransform (what insightface calls)."""
    from skimage.transform import SimilarityTransform

    mirrored = POINTS * [-1.0, 1.0] + [200.0, 0.0]
    reference = SimilarityTransform.from_estimate(POINTS, mirrored)
    np.testing.assert_allclose(estimate_similarity(POINTS, mirrored), reference.params[:2], atol=1e-9)


def test_two_points_and_small_coordinates_are_enough():
    """Two points fix a similarity; coordinates of spread below 1 (normalised ones) scale like any other."""
    truth = _similarity(40.0, 0.2, 3.0, -7.0)
    for points in (POINTS[:2], POINTS / 400.0):
        moved = points @ truth[:, :2].T + truth[:, 2]
        np.testing.assert_allclose(estimate_similarity(points, moved), truth, atol=1e-7)
