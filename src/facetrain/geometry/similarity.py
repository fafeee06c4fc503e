"""Similarity warps from 5 facial landmarks (left eye, right eye, nose, left and right mouth
corners) to a 112x112 template: AdaFace's (cp2tform fit, the default) and insightface's
(Umeyama fit, the "facenet" detector option), also used by IJB."""
from __future__ import annotations

import cv2
import numpy as np

from facetrain.geometry.cp2tform import cp2tform_similarity

# The 96x112 template of SphereFace / AdaFace's `REFERENCE_FACIAL_POINTS`; AdaFace's
# `get_reference_facial_points(default_square=True)` widens the crop to 112x112 by moving it
# 8 px right. Equal to TEMPLATE_112 within 5e-5 px; kept separately to match AdaFace bit for bit.
_TEMPLATE_96X112 = np.array(
    [
        [30.29459953, 51.69630051],
        [65.53179932, 51.50139999],
        [48.02519989, 71.73660278],
        [33.54930115, 92.3655014],
        [62.72990036, 92.20410156],
    ]
)
ADAFACE_TEMPLATE_112 = _TEMPLATE_96X112 + np.array([(112 - 96) / 2, 0.0])

# (x, y) of left eye, right eye, nose tip, left and right mouth corners on the 112x112 crop.
TEMPLATE_112 = np.array(
    [
        [38.2946, 51.6963],
        [73.5318, 51.5014],
        [56.0252, 71.7366],
        [41.5493, 92.3655],
        [70.7299, 92.2041],
    ],
    dtype=np.float32,
)


def estimate_similarity(landmarks: np.ndarray, template: np.ndarray = TEMPLATE_112) -> np.ndarray:
    """Least-squares similarity (rotation, uniform scale, translation) mapping `landmarks` onto `template`.

    Umeyama's closed form, the same estimate as skimage's SimilarityTransform that insightface and
    AdaFace use; returns the 2x3 matrix for cv2.warpAffine.
    """
    src = np.asarray(landmarks, dtype=np.float64).reshape(-1, 2)
    dst = np.asarray(template, dtype=np.float64).reshape(-1, 2)
    if src.shape != dst.shape or src.shape[0] < 2:
        raise ValueError(f"need matching landmark sets, got {src.shape} and {dst.shape}")
    src_mean, dst_mean = src.mean(0), dst.mean(0)
    src_c, dst_c = src - src_mean, dst - dst_mean
    cov = dst_c.T @ src_c / len(src)
    u, s, vt = np.linalg.svd(cov)
    d = np.ones(2)
    if np.linalg.det(cov) < 0:
        d[1] = -1.0
    rot = u @ np.diag(d) @ vt
    var_src = (src_c**2).sum() / len(src)
    scale = (s * d).sum() / var_src if var_src > 0 else 1.0
    matrix = np.empty((2, 3))
    matrix[:, :2] = scale * rot
    matrix[:, 2] = dst_mean - scale * rot @ src_mean
    return matrix


def align_face(image: np.ndarray, landmarks: np.ndarray, size: int = 112) -> np.ndarray:
    """Warp `image` (any channel order, kept as is) so its 5 landmarks land on TEMPLATE_112
    (Umeyama fit, as insightface / facenet-pytorch users do); border 0."""
    matrix = estimate_similarity(landmarks, TEMPLATE_112 * (size / 112.0))
    return cv2.warpAffine(image, matrix, (size, size), borderValue=0.0)


def warp_and_crop_face(image: np.ndarray, landmarks: np.ndarray, size: int = 112) -> np.ndarray:
    """AdaFace's crop: the cp2tform similarity of the 5 landmarks onto ADAFACE_TEMPLATE_112
    (scaled by size / 112), bilinear warp, border 0. Any channel order, kept as is."""
    matrix = cp2tform_similarity(landmarks, ADAFACE_TEMPLATE_112 * (size / 112.0))
    return cv2.warpAffine(image, matrix, (size, size))


# The warp of each detector style: the template and fit its detection-based alignment uses.
WARPS = {"adaface": warp_and_crop_face, "facenet": align_face}
