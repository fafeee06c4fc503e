"""Raw-pixel baseline: how well plain pixel similarity verifies a synthetic set.

A learned model must beat it by a wide margin; if it does not, the nuisance is too weak (pixels already
tell identities apart) or the identity cues are too weak.
"""
from __future__ import annotations

import numpy as np

from facetrain.eval.verification import evaluate_pairs


def raw_pixel_features(images: np.ndarray) -> np.ndarray:
    """(N,H,W,3) uint8 -> (N, H*W*3) float32: flattened pixels, minus each image's mean, unit length."""
    x = images.reshape(len(images), -1).astype(np.float32)
    x -= x.mean(axis=1, keepdims=True)
    x /= np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-6)
    return x


def raw_pixel_accuracy(images: np.ndarray, issame: np.ndarray) -> float:
    """10-fold verification accuracy of raw-pixel cosine similarity (the standard protocol's folds)."""
    return float(evaluate_pairs(raw_pixel_features(images), issame)["accuracy"])
