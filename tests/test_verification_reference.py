"""The 10-fold protocol against a reference written here from the published description only.

insightface's `verification.evaluate` (Sandberg's facenet `calculate_roc` / `calculate_val`):
squared L2 distance of the unit features, "same" when distance < threshold, thresholds
np.arange(0, 4, 0.01) for accuracy and np.arange(0, 4, 0.001) for TAR@FAR=1e-3, 10 contiguous
folds (KFold without shuffle: the first n % 10 folds one pair longer), best threshold = first
maximum of the training accuracy, accuracy = mean, std = np.std (ddof 0), threshold = mean of
the chosen ones. Nothing of the module under test is imported but the evaluation entry points.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from facetrain.data.formats.verification_set import VerificationSet
from facetrain.eval.verification import evaluate_pairs, evaluate_verification_sets
from pair_embeddings import embeddings_at, noisy_pairs

ACC_GRID = np.arange(0, 4, 0.01)  # typed in from insightface, on purpose not imported
VAL_GRID = np.arange(0, 4, 0.001)


def _folds(n: int, k: int = 10) -> list[np.ndarray]:
    sizes = [n // k + (1 if i < n % k else 0) for i in range(k)]
    starts = np.cumsum([0] + sizes)
    return [np.arange(starts[i], starts[i + 1]) for i in range(k)]


def _distances(emb: np.ndarray) -> np.ndarray:
    """Squared L2 of rows 2i, 2i+1, in float32 as insightface computes it (np.subtract, np.square, np.sum)."""
    emb = np.asarray(emb, np.float32)
    return np.array([np.sum(np.square(emb[2 * i] - emb[2 * i + 1])) for i in range(len(emb) // 2)])


def _reference(dist: np.ndarray, issame: np.ndarray) -> dict:
    folds = _folds(len(dist))
    accs, thresholds, tars = [], [], []
    for test in folds:
        train = np.setdiff1d(np.arange(len(dist)), test)

        def accuracy(t, idx):
            pred = dist[idx] < t
            return (np.sum(pred & issame[idx]) + np.sum(~pred & ~issame[idx])) / len(idx)

        train_acc = [accuracy(t, train) for t in ACC_GRID]
        best = ACC_GRID[int(np.argmax(train_acc))]
        thresholds.append(best)
        accs.append(accuracy(best, test))
        diff = ~issame[train]
        far = np.array([np.sum((dist[train] < t) & diff) / diff.sum() for t in VAL_GRID])
        ok = np.flatnonzero(far <= 1e-3)
        t_val = VAL_GRID[ok[-1]] if len(ok) else 0.0
        same = issame[test]
        tars.append(np.sum((dist[test] < t_val) & same) / max(same.sum(), 1))  # tiny sets: folds without genuine pairs
    return {"accuracy": np.mean(accs), "std": np.std(accs), "best_threshold": np.mean(thresholds),
            "tar": np.mean(tars), "fold_accuracies": accs, "fold_thresholds": thresholds}


def _pairs(rng, n_pairs, dim=16, noise=1.0):
    emb, issame = noisy_pairs(rng, n_pairs, dim, noise)
    return emb / np.linalg.norm(emb, axis=1, keepdims=True), issame


@pytest.fixture(scope="module")
def case():
    """1003 pairs (uneven folds), a noisy signal whose per-fold thresholds and accuracies vary."""
    emb, issame = _pairs(np.random.default_rng(11), 1003)
    return emb, issame, _reference(_distances(emb), issame)


def test_accuracy_std_and_threshold_equal_the_reference(case):
    emb, issame, ref = case
    got = evaluate_pairs(emb, issame)
    assert got["fold_accuracies"] == pytest.approx(ref["fold_accuracies"], abs=1e-12)
    assert got["accuracy"] == pytest.approx(ref["accuracy"], abs=1e-12)
    assert got["std"] == pytest.approx(ref["std"], abs=1e-12)
    assert got["best_threshold"] == pytest.approx(ref["best_threshold"], abs=1e-12)
    assert got["pairs"] == 1003
    # the case separates the published choices from their neighbours
    assert 0.6 < ref["accuracy"] < 0.97
    assert abs(np.std(ref["fold_accuracies"], ddof=1) - ref["std"]) > 1e-4
    assert abs(np.median(ref["fold_thresholds"]) - ref["best_threshold"]) > 1e-3


def test_tar_at_far_equals_the_reference_on_the_fine_grid(case):
    emb, issame, ref = case
    assert evaluate_pairs(emb, issame)["tar_at_far_1e-3"] == pytest.approx(ref["tar"], abs=1e-12)
    # same pairs dense where different pairs begin: the grid step decides the TAR. Distances sit
    # half-way between multiples of 1e-4, far from every threshold of either grid.
    rng = np.random.default_rng(12)
    issame = rng.random(2000) < 0.5
    dist = np.where(issame, rng.integers(0, 12000, 2000), rng.integers(10055, 39000, 2000)) * 1e-4 + 5e-5
    emb = embeddings_at(dist)
    dist = _distances(emb)
    ref = _reference(dist, issame)
    assert evaluate_pairs(emb, issame)["tar_at_far_1e-3"] == pytest.approx(ref["tar"], abs=1e-12)
    assert 0.5 < ref["tar"] < 0.98
    coarse = []
    for test in _folds(len(dist)):
        train = np.setdiff1d(np.arange(len(dist)), test)
        diff = ~issame[train]
        far = np.array([np.sum((dist[train] < t) & diff) / diff.sum() for t in ACC_GRID])
        ok = np.flatnonzero(far <= 1e-3)
        t = ACC_GRID[ok[-1]] if len(ok) else 0.0
        coarse.append(np.sum((dist[test] < t) & issame[test]) / issame[test].sum())
    assert abs(np.mean(coarse) - ref["tar"]) > 1e-4


def test_a_hand_computed_case():
    """20 pairs, folds of 2: same pairs at distance 0.505, different ones at 1.505, except one
    different pair at 0.205 in fold 0. Every training set is then best split at thresholds
    0.51..1.50 (first maximum: 0.51), so fold 0 scores 1/2 and the other nine 2/2."""
    dist = np.array([0.205, 0.505] + [0.505, 1.505] * 9)
    issame = np.array([False, True] + [True, False] * 9)
    got = evaluate_pairs(embeddings_at(dist), issame)
    assert got["fold_accuracies"] == pytest.approx([0.5] + [1.0] * 9)
    assert got["accuracy"] == pytest.approx(0.95)
    assert got["std"] == pytest.approx(0.15)  # sqrt(mean((a - 0.95)^2)) = sqrt((0.2025 + 9 * 0.0025) / 10)
    assert got["best_threshold"] == pytest.approx(0.51)


@settings(max_examples=25, deadline=None, derandomize=True)
@given(seed=st.integers(0, 2**32 - 1), n_pairs=st.integers(20, 120))
def test_pair_order_within_a_fold_does_not_matter(seed, n_pairs):
    rng = np.random.default_rng(seed)
    emb, issame = _pairs(rng, n_pairs, dim=4, noise=0.7)
    order = np.concatenate([rng.permutation(f) for f in _folds(n_pairs)])
    rows = np.stack([2 * order, 2 * order + 1], 1).reshape(-1)
    a, b = evaluate_pairs(emb, issame), evaluate_pairs(emb[rows], issame[order])
    for key in ("accuracy", "std", "best_threshold", "tar_at_far_1e-3"):
        assert a[key] == pytest.approx(b[key], abs=1e-12)


class _MeanColour(torch.nn.Module):
    """(unit embedding, norm) of the mean colour of the left 56 columns: flips see the right half."""

    def forward(self, x):
        feat = x[:, :, :, :56].mean((2, 3)) + torch.tensor([1.0, 0.5, -0.25])
        norm = feat.norm(dim=1, keepdim=True)
        return feat / norm, norm


def test_evaluate_verification_sets_embeds_image_and_flip_and_averages_the_standard_sets():
    rng = np.random.default_rng(7)
    images = rng.integers(0, 256, (40, 112, 112, 3), dtype=np.uint8)
    issame = rng.random(20) < 0.5
    sets = {"lfw": VerificationSet("lfw", images, issame), "cfp_ff": VerificationSet("cfp_ff", images[::-1].copy(), issame)}
    model = _MeanColour().train()
    got = evaluate_verification_sets(model, sets, batch_size=7, progress=False)
    assert model.training and set(got) == {"lfw", "cfp_ff", "average"}
    x = (images.astype(np.float64) / 255 - 0.5) / 0.5  # BGR HWC -> the model's normalised input
    shift = np.array([1.0, 0.5, -0.25])
    feat = x[:, :, :56].mean((1, 2)) + shift
    flip = x[:, :, 56:].mean((1, 2)) + shift
    fused = feat + flip  # pre_norm_vector_add: the un-normalised sum, then unit length
    fused /= np.linalg.norm(fused, axis=1, keepdims=True)
    ref = _reference(_distances(fused), issame)
    assert got["lfw"]["accuracy"] == pytest.approx(ref["accuracy"], abs=1e-12)
    assert got["lfw"]["best_threshold"] == pytest.approx(ref["best_threshold"], abs=1e-12)
    assert got["lfw"]["mean_norm"] == pytest.approx(
        (np.linalg.norm(feat, axis=1).mean() + np.linalg.norm(flip, axis=1).mean()) / 2, rel=1e-5)
    assert got["average"]["sets"] == ["lfw"]  # cfp_ff is not one of the five
    assert got["average"]["accuracy"] == got["lfw"]["accuracy"]
    alone = evaluate_verification_sets(model, {"lfw": sets["lfw"]}, batch_size=64, fusion="none", progress=False)
    unit = feat / np.linalg.norm(feat, axis=1, keepdims=True)
    assert alone["lfw"]["accuracy"] == pytest.approx(_reference(_distances(unit), issame)["accuracy"], abs=1e-12)
