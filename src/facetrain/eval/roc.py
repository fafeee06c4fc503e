"""ROC curve with sklearn's `roc_curve` semantics, and the literature's TAR@FAR rule, for millions of scores.

`roc_curve` reproduces sklearn (drop_intermediate=True, a leading (0, 0) point) point for point,
so the IJB numbers equal those of insightface's ijb_11.py / AdaFace's validate_IJB_BC.py, which
call sklearn. It sorts the scores once and takes cumulative counts, with less memory than sklearn.
"""
from __future__ import annotations

import numpy as np

FAR_TARGETS = (1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1)


def roc_curve(labels: np.ndarray, scores: np.ndarray, drop_intermediate: bool = True) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(fpr, tpr, thresholds) of binary `labels` (1 = genuine) for `scores` (higher = more similar)."""
    labels = np.asarray(labels).reshape(-1) != 0
    scores = np.asarray(scores).reshape(-1)
    if len(labels) != len(scores):
        raise ValueError(f"{len(labels)} labels for {len(scores)} scores")
    order = np.argsort(scores)[::-1]  # ties: any order, only counts at distinct scores are used
    sorted_scores = scores[order]
    tps_all = np.cumsum(labels[order], dtype=np.int64)
    del order
    last_of_value = np.r_[np.flatnonzero(np.diff(sorted_scores)), len(sorted_scores) - 1]
    tps = tps_all[last_of_value]
    del tps_all
    fps = 1 + last_of_value - tps
    thresholds = sorted_scores[last_of_value]
    if drop_intermediate and len(fps) > 2:
        keep = np.flatnonzero(np.r_[True, np.logical_or(np.diff(fps, 2), np.diff(tps, 2)), True])
        fps, tps, thresholds = fps[keep], tps[keep], thresholds[keep]
    fps, tps = np.r_[0, fps], np.r_[0, tps]
    thresholds = np.r_[np.inf, thresholds]
    fpr = fps / fps[-1] if fps[-1] > 0 else np.full(len(fps), np.nan)
    tpr = tps / tps[-1] if tps[-1] > 0 else np.full(len(tps), np.nan)
    return fpr, tpr, thresholds


def tar_at_far(fpr: np.ndarray, tpr: np.ndarray, far_targets=FAR_TARGETS) -> dict[float, float]:
    """TPR at the ROC point whose FPR is nearest to each target (insightface's rule).

    insightface flips the curve and takes the first minimum of |fpr - target|: among equally near
    points that is the one with the highest TPR, i.e. the last one in increasing-FPR order.
    """
    out = {}
    for far in far_targets:
        gap = np.abs(fpr - far)
        out[far] = float(tpr[len(gap) - 1 - int(np.argmin(gap[::-1]))])
    return out


def auc(fpr: np.ndarray, tpr: np.ndarray) -> float:
    """Area under the curve by the trapezoidal rule (sklearn's `auc`)."""
    return float(np.trapezoid(tpr, fpr))
