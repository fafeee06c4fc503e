"""Fusing the feature of an image with the feature of its horizontal flip (AdaFace's `fuse_features_with_norm`).

Inputs are un-normalised features (unit embedding x norm, as `extract_features` returns them).
Every method returns `(unit_features, norms)`; which norm each method reports follows AdaFace's
validate_IJB_BC.py, so IJB numbers that multiply the norm back match theirs.
"""
from __future__ import annotations

import numpy as np

FUSION_METHODS = ("pre_norm_vector_add", "average", "norm_weighted_avg", "concat", "none")


def l2_normalize(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rows divided by their L2 norm; returns (unit rows, norms (N,1)). Zero rows stay zero."""
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.where(norms > 0, norms, 1), norms


def fuse_flip(features: np.ndarray, flip_features: np.ndarray | None, method: str = "pre_norm_vector_add") -> tuple[np.ndarray, np.ndarray]:
    """Fuse image and flip features; `flip_features=None` or `method="none"` uses the image feature alone.

    - pre_norm_vector_add: add the un-normalised features, then L2-normalise (norm of the sum);
    - average: add the unit features, then L2-normalise (norm = mean of the two norms);
    - norm_weighted_avg: unit features weighted by norm / (sum of norms); same direction as
      pre_norm_vector_add, norm = mean of the two norms;
    - concat: the two unit features side by side, L2-normalised (2D dims; norm = mean of the two).
    """
    if method not in FUSION_METHODS:
        raise ValueError(f"unknown fusion method {method!r}; choose one of {FUSION_METHODS}")
    unit, norm = l2_normalize(features)
    if flip_features is None or method == "none":
        return unit, norm
    if flip_features.shape != features.shape:
        raise ValueError(f"features {features.shape} and flip features {flip_features.shape} differ in shape")
    flip_unit, flip_norm = l2_normalize(flip_features)
    mean_norm = (norm + flip_norm) / 2
    if method == "pre_norm_vector_add":
        return l2_normalize(features + flip_features)
    if method == "norm_weighted_avg":
        total = norm + flip_norm
        fused, _ = l2_normalize(unit * (norm / total) + flip_unit * (flip_norm / total))
        return fused, mean_norm
    if method == "average":
        fused, _ = l2_normalize(unit + flip_unit)
        return fused, mean_norm
    fused, _ = l2_normalize(np.concatenate([unit, flip_unit], axis=1))
    return fused, mean_norm
