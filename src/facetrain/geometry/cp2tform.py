"""The 'similarity' fit of MATLAB's cp2tform as ported to Python in AdaFace's alignment
(`matlab_cp2tform.get_similarity_transform_for_cv2`), which AdaFace's crops were made with.

It differs from Umeyama's least squares (`transform.estimate_similarity`) in two ways that move
the crop by a fraction of a pixel to a few pixels:
- the least-squares problem is posed the other way round: the similarity that maps the
  *template* onto the landmarks is fitted (residuals measured in the photo), then inverted;
- a mirrored fit (template reflected across the y axis) is also computed and kept if it
  scores better. The port scores both fits against the mirrored template (it mirrors its
  input array in place before scoring), and that scoring is reproduced here, so the same fit
  is chosen as in AdaFace. For upright faces the plain fit wins.
"""
from __future__ import annotations

import numpy as np


def _fit_template_to_points(points: np.ndarray, template: np.ndarray) -> np.ndarray:
    """3x3 row-vector matrix T with [x y 1] = [u v 1] T, where (u, v) are `points` and (x, y)
    the template, obtained by fitting u = a x + b y + c, v = a y - b x + d and inverting it."""
    x, y = template[:, 0], template[:, 1]
    ones, zeros = np.ones_like(x), np.zeros_like(x)
    design = np.concatenate([np.stack([x, y, ones, zeros], 1), np.stack([y, -x, zeros, ones], 1)])
    target = np.concatenate([points[:, 0], points[:, 1]])
    if np.linalg.matrix_rank(design) < 4:
        raise ValueError("a similarity needs at least two distinct template points")
    a, b, c, d = np.linalg.lstsq(design, target, rcond=None)[0]
    template_to_points = np.array([[a, -b, 0.0], [b, a, 0.0], [c, d, 1.0]])
    points_to_template = np.linalg.inv(template_to_points)
    points_to_template[:, 2] = (0.0, 0.0, 1.0)
    return points_to_template


def _apply(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    return points @ matrix[:2, :2] + matrix[2, :2]


def cp2tform_similarity(points: np.ndarray, template: np.ndarray) -> np.ndarray:
    """2x3 matrix for cv2.warpAffine taking `points` (K,2) onto `template` (K,2), K >= 2.

    Inputs are rounded to float32 first, as the port receives them; the fit runs in float64.
    """
    points = np.asarray(points, np.float32).reshape(-1, 2).astype(np.float64)
    template = np.asarray(template, np.float32).reshape(-1, 2).astype(np.float64)
    if points.shape != template.shape or len(points) < 2:
        raise ValueError(f"need matching point sets of at least 2 points, got {points.shape} and {template.shape}")
    mirror = np.diag([-1.0, 1.0, 1.0])
    mirrored = template @ mirror[:2, :2]
    plain = _fit_template_to_points(points, template)
    reflective = _fit_template_to_points(points, mirrored) @ mirror
    plain_error = np.linalg.norm(_apply(plain, points) - mirrored)
    reflective_error = np.linalg.norm(_apply(reflective, points) - mirrored)
    chosen = plain if plain_error <= reflective_error else reflective
    return chosen[:, :2].T.copy()
