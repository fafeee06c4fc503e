"""What `nms` / `batched_nms` promise beyond the greedy invariants, on hand-made boxes: any numeric
dtype, ties visited lowest index first, an explicit visit order, groups kept apart wherever the
boxes lie, extra columns ignored, the mode passed through."""
from __future__ import annotations

import numpy as np
import pytest

from facetrain.alignment.nms import batched_nms, nms

# boxes 0 and 2 overlap by IoU 50 / 150 = 1/3 (10x10 each, 5x10 shared); box 1 is apart
THREE = [[0, 0, 9, 9], [20, 0, 29, 9], [5, 0, 14, 9]]


@pytest.mark.parametrize("dtype", ["uint8", "uint16", "int32", "float32"])
def test_boxes_of_any_numeric_dtype(dtype):
    """Unsigned boxes: the gap between apart boxes (9 - 20) must not wrap around to a huge overlap."""
    for mode in ("union", "min"):  # min: overlap 50 / 100 of box 2 with box 0
        assert nms(np.array(THREE, dtype), np.array([0.9, 0.8, 0.7]), 0.3, mode).tolist() == [0, 1]


@pytest.mark.parametrize("dtype", ["uint8", "int32"])
def test_integer_scores_best_first(dtype):
    """Scores 0, 2, 1: box 1 first, then box 2, which suppresses box 0 (IoU 1/3 > 0.3)."""
    assert nms(np.array(THREE, float), np.array([0, 2, 1], dtype), 0.3).tolist() == [1, 2]


def test_equal_scores_are_visited_lowest_index_first():
    """20 boxes apart from each other are all kept, in visiting order: best score first, ties by index
    (more than 16 ties: numpy's default sort is not stable there)."""
    boxes = np.array([[20.0 * i, 0, 20.0 * i + 9, 9] for i in range(20)])
    scores = np.array([0.5, 0.9, 0.5, 0.7] * 5)
    expected = sorted(range(20), key=lambda i: (-scores[i], i))
    assert nms(boxes, scores, 0.5).tolist() == expected


def test_visit_order_replaces_the_score_order():
    boxes, scores = np.array(THREE, float), np.array([0.9, 0.8, 0.7])
    assert nms(boxes, scores, 0.3, visit_order=np.array([2, 1, 0])).tolist() == [2, 1]
    assert nms(boxes, scores, 0.3, visit_order=[1, 0, 2]).tolist() == [1, 0]


def test_batched_nms_keeps_identical_boxes_of_different_groups():
    """Threshold 0: any shared pixel suppresses, so only groups placed fully apart keep both copies."""
    for box in ([0, 0, 10, 10], [-100, -100, 0, 0], [37.5, 2, 80, 60]):
        boxes = np.array([box, box, box], float)
        assert batched_nms(boxes, np.array([0.9, 0.8, 0.7]), np.array([0, 1, 0]), 0.0).tolist() == [0, 1]


def test_batched_nms_ignores_extra_columns_and_passes_the_mode():
    """(N, 5) boxes with the score as fifth column, as the detector keeps them; box 1 lies inside box 0:
    IoU 50 / 100 = 0.5 keeps it at threshold 0.6, overlap / smaller area = 1 does not."""
    boxes = np.array([[0, 0, 9, 9, 0.9], [0, 0, 4, 9, 0.8], [0, 0, 4, 9, 0.7]])
    groups = np.array([0, 0, 1])
    assert batched_nms(boxes, boxes[:, 4], groups, 0.6).tolist() == [0, 1, 2]
    assert batched_nms(boxes, boxes[:, 4], groups, 0.6, mode="min").tolist() == [0, 2]
    empty = batched_nms(np.zeros((0, 5)), np.zeros(0), np.zeros(0, np.int64), 0.5)
    assert empty.dtype == np.int64 and empty.shape == (0,)
