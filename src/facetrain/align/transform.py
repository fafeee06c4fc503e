"""Similarity transform from 5 facial landmarks to the 112x112 ArcFace template (DESIGN 6.2)."""
from __future__ import annotations

import cv2
import numpy as np

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
    """Warp `image` (any channel order, kept as is) so its 5 landmarks land on the template; border 0."""
    matrix = estimate_similarity(landmarks, TEMPLATE_112 * (size / 112.0))
    return cv2.warpAffine(image, matrix, (size, size), borderValue=0.0)
