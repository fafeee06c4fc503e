"""Greedy non-maximum suppression in numpy (no torchvision).

Boxes are (N,4) x1,y1,x2,y2 in pixel units; areas use MTCNN's inclusive "+1" convention.
Each round keeps the best remaining box and drops, in one vectorised step, every box that
overlaps it more than `threshold`; rounds = number of kept boxes, not of candidates.
"""
from __future__ import annotations

import numpy as np


def nms(
    boxes: np.ndarray, scores: np.ndarray, threshold: float, mode: str = "union", visit_order: np.ndarray | None = None
) -> np.ndarray:
    """Indices of the kept boxes, in the order they were kept. `mode`: "union" (IoU) or "min" (overlap /
    smaller area). Boxes are visited best score first, equal scores lowest index first, unless
    `visit_order` (a permutation of the indices, e.g. another implementation's tie order) is given."""
    if mode not in ("union", "min"):
        raise ValueError(f"nms mode must be 'union' or 'min', got {mode!r}")
    boxes = np.asarray(boxes, dtype=np.float64)
    if len(boxes) == 0:
        return np.empty(0, dtype=np.int64)
    x1, y1, x2, y2 = boxes.T
    areas = (x2 - x1 + 1.0) * (y2 - y1 + 1.0)
    if visit_order is None:
        order = np.argsort(-np.asarray(scores, dtype=np.float64), kind="stable")
    else:
        order = np.asarray(visit_order, dtype=np.int64)
    keep = []
    while order.size:
        best, rest = order[0], order[1:]
        keep.append(best)
        inter_w = np.maximum(0.0, np.minimum(x2[best], x2[rest]) - np.maximum(x1[best], x1[rest]) + 1.0)
        inter_h = np.maximum(0.0, np.minimum(y2[best], y2[rest]) - np.maximum(y1[best], y1[rest]) + 1.0)
        inter = inter_w * inter_h
        if mode == "min":
            overlap = inter / np.minimum(areas[best], areas[rest])
        else:
            overlap = inter / (areas[best] + areas[rest] - inter)
        order = rest[overlap <= threshold]
    return np.asarray(keep, dtype=np.int64)


def batched_nms(
    boxes: np.ndarray, scores: np.ndarray, groups: np.ndarray, threshold: float, mode: str = "union"
) -> np.ndarray:
    """NMS applied independently within each group (e.g. pyramid scale), in one pass.

    Shifting each group's boxes by a multiple of the largest coordinate keeps groups disjoint.
    """
    boxes = np.asarray(boxes, dtype=np.float64)
    if len(boxes) == 0:
        return np.empty(0, dtype=np.int64)
    span = boxes[:, :4].max() - min(boxes[:, :4].min(), 0.0) + 2.0
    shifted = boxes[:, :4] + (np.asarray(groups, dtype=np.float64) * span)[:, None]
    return nms(shifted, scores, threshold, mode)
