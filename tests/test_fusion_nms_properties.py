"""Identities of flip fusion / L2 normalisation and invariants of greedy NMS, over random inputs."""
from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from facetrain.alignment.nms import batched_nms, nms
from facetrain.eval.fusion import fuse_flip, l2_normalize

VALUES = st.integers(-400, 400).map(lambda v: v / 8.0)  # -50..50 in steps of 1/8, zero included
FEATURES = st.integers(1, 6).flatmap(lambda n: st.integers(1, 8).flatmap(lambda d: st.tuples(
    arrays(np.float64, (n, d), elements=VALUES), arrays(np.float64, (n, d), elements=VALUES))))


def _unit(x):
    n = np.sqrt((x * x).sum(1, keepdims=True))
    return x / np.where(n > 0, n, 1), n


def _nonzero(*xs):
    return all(np.all(np.sqrt((x * x).sum(1)) > 1e-3) for x in xs)


@settings(max_examples=60, deadline=None, derandomize=True)
@given(FEATURES)
def test_l2_normalize_splits_rows_into_direction_and_norm(pair):
    x, _ = pair
    unit, norm = l2_normalize(x)
    assert norm.shape == (len(x), 1)
    np.testing.assert_allclose(unit * norm, x, atol=1e-9)
    np.testing.assert_allclose(norm[:, 0], np.sqrt((x * x).sum(1)), rtol=1e-12, atol=1e-12)
    lengths = np.sqrt((unit * unit).sum(1))
    np.testing.assert_allclose(lengths[norm[:, 0] > 0], 1.0, rtol=1e-9)
    assert np.all(unit[norm[:, 0] == 0] == 0)  # zero rows stay zero, no NaN


@settings(max_examples=60, deadline=None, derandomize=True)
@given(FEATURES)
def test_fusion_identities(pair):
    a, b = pair
    if not (_nonzero(a, b) and _nonzero(a + b) and _nonzero(_unit(a)[0] + _unit(b)[0])):
        return
    (ua, na), (ub, nb) = _unit(a), _unit(b)
    mean_norm = (na + nb) / 2
    unit, norm = fuse_flip(a, b, "pre_norm_vector_add")
    np.testing.assert_allclose(unit * norm, a + b, atol=1e-8)  # the sum, split into direction and norm
    weighted, w_norm = fuse_flip(a, b, "norm_weighted_avg")
    np.testing.assert_allclose(weighted, unit, atol=1e-8)  # same direction as the sum
    np.testing.assert_allclose(w_norm, mean_norm, rtol=1e-12)
    average, a_norm = fuse_flip(a, b, "average")
    np.testing.assert_allclose(average, _unit(ua + ub)[0], atol=1e-8)
    np.testing.assert_allclose(a_norm, mean_norm, rtol=1e-12)
    concat, c_norm = fuse_flip(a, b, "concat")
    np.testing.assert_allclose(concat, np.concatenate([ua, ub], 1) / np.sqrt(2), atol=1e-8)
    np.testing.assert_allclose(c_norm, mean_norm, rtol=1e-12)
    for method in ("pre_norm_vector_add", "norm_weighted_avg", "average", "concat"):
        u1, n1 = fuse_flip(a, b, method)
        u2, n2 = fuse_flip(b, a, method)
        if method == "concat":
            u2 = np.concatenate([u2[:, u2.shape[1] // 2:], u2[:, : u2.shape[1] // 2]], 1)
        np.testing.assert_allclose(u1, u2, atol=1e-8)  # image and flip play symmetric roles
        np.testing.assert_allclose(n1, n2, rtol=1e-12)
    for method in ("pre_norm_vector_add", "none"):
        alone, alone_norm = fuse_flip(a, None if method == "pre_norm_vector_add" else b, method)
        np.testing.assert_allclose(alone, ua, atol=1e-12)
        np.testing.assert_allclose(alone_norm, na, rtol=1e-12)


def test_fusion_of_an_image_with_itself_is_its_normalised_feature():
    a = np.array([[3.0, 4.0], [0.0, -2.0]])
    for method in ("pre_norm_vector_add", "norm_weighted_avg", "average"):
        unit, norm = fuse_flip(a, a, method)
        np.testing.assert_allclose(unit, [[0.6, 0.8], [0.0, -1.0]])
        np.testing.assert_allclose(norm[:, 0], [10.0, 4.0] if method == "pre_norm_vector_add" else [5.0, 2.0])
    with pytest.raises(ValueError, match="differ in shape"):
        fuse_flip(a, a[:, :1], "average")


def _overlap(a, b, mode="union"):
    """MTCNN's overlap with inclusive pixel areas (+1)."""
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]) + 1)
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]) + 1)
    inter = iw * ih
    area_a, area_b = (a[2] - a[0] + 1) * (a[3] - a[1] + 1), (b[2] - b[0] + 1) * (b[3] - b[1] + 1)
    return inter / min(area_a, area_b) if mode == "min" else inter / (area_a + area_b - inter)


def _greedy(boxes, scores, threshold, mode="union"):
    """The textbook loop: best remaining box, drop the ones overlapping it by more than threshold."""
    remaining = sorted(range(len(boxes)), key=lambda i: -scores[i])
    keep = []
    while remaining:
        best = remaining.pop(0)
        keep.append(best)
        remaining = [i for i in remaining if _overlap(boxes[best], boxes[i], mode) <= threshold]
    return keep


@st.composite
def box_sets(draw):
    n = draw(st.integers(0, 14))
    xy = draw(arrays(np.float64, (n, 2), elements=st.integers(0, 60).map(float)))
    wh = draw(arrays(np.float64, (n, 2), elements=st.integers(0, 30).map(float)))
    scores = draw(st.permutations(list(range(n)))) if n else []  # distinct scores: a unique answer
    return np.hstack([xy, xy + wh]), np.asarray(scores, np.float64) / 10.0


@settings(max_examples=80, deadline=None, derandomize=True)
@given(box_sets(), st.sampled_from([0.0, 0.3, 0.5, 0.7]), st.sampled_from(["union", "min"]), st.randoms())
def test_nms_invariants(boxes_scores, threshold, mode, rnd):
    boxes, scores = boxes_scores
    keep = nms(boxes, scores, threshold, mode)
    assert keep.dtype == np.int64
    assert keep.tolist() == _greedy(boxes, scores, threshold, mode)
    assert list(scores[keep]) == sorted(scores[keep], reverse=True)  # best first
    for i, j in itertools.combinations(keep, 2):
        assert _overlap(boxes[i], boxes[j], mode) <= threshold
    for i in set(range(len(boxes))) - set(keep.tolist()):  # every dropped box had a better kept neighbour
        assert any(scores[k] > scores[i] and _overlap(boxes[k], boxes[i], mode) > threshold for k in keep)
    # idempotent: the kept boxes survive a second pass whole
    assert nms(boxes[keep], scores[keep], threshold, mode).tolist() == list(range(len(keep)))
    # permutation invariant: the same boxes are kept whatever order they come in
    perm = np.array(rnd.sample(range(len(boxes)), len(boxes)), dtype=np.int64)
    assert sorted(perm[nms(boxes[perm], scores[perm], threshold, mode)].tolist()) == sorted(keep.tolist())


def test_nms_hand_computed_overlap():
    boxes = np.array([[0, 0, 9, 9], [5, 0, 14, 9]], np.float64)  # 10x10 each, 5x10 shared: IoU 1/3, min 1/2
    scores = np.array([0.9, 0.8])
    assert nms(boxes, scores, 0.33).tolist() == [0]
    assert nms(boxes, scores, 0.34).tolist() == [0, 1]
    assert nms(boxes, scores, 0.49, mode="min").tolist() == [0]
    assert nms(boxes, scores, 0.5, mode="min").tolist() == [0, 1]
    assert nms(boxes, scores[::-1].copy(), 0.2).tolist() == [1]
    assert nms(np.zeros((0, 4)), np.zeros(0), 0.5).tolist() == []
    with pytest.raises(ValueError, match="union"):
        nms(boxes, scores, 0.5, mode="max")


@settings(max_examples=40, deadline=None, derandomize=True)
@given(box_sets(), st.sampled_from([0.3, 0.6]), st.integers(1, 3), st.randoms())
def test_batched_nms_is_nms_within_each_group(boxes_scores, threshold, n_groups, rnd):
    boxes, scores = boxes_scores
    groups = np.array([rnd.randrange(n_groups) for _ in range(len(boxes))], dtype=np.int64)
    kept = set(batched_nms(boxes, scores, groups, threshold).tolist())
    expected = set()
    for g in range(n_groups):
        idx = np.flatnonzero(groups == g)
        expected |= {int(idx[k]) for k in _greedy(boxes[idx], scores[idx], threshold)}
    assert kept == expected
