"""Edges of the verification entry points that the reference comparisons do not reach: the fold
count, features without flips, the reported norm, the average over the standard sets, and
non-finite embeddings. Expected values are hand-computed (see each docstring)."""
from __future__ import annotations

import io
import math
import sys

import numpy as np
import pytest
import torch

from facetrain.data.formats.verification_set import VerificationSet
from facetrain.errors import ConfigError
from facetrain.eval.finite import refuse_non_finite
from facetrain.eval.verification import (average_over_standard_sets, evaluate_pairs,
                                         evaluate_verification_sets, kfold_accuracy, kfold_tar_at_far)
from pair_embeddings import embeddings_at

# 20 pairs: same pairs at squared distance 0.505, different ones at 1.505, except one different
# pair at 0.205 (pair 0). Training sets split best at the first grid threshold above 0.505: 0.51.
HAND_DIST = np.array([0.205, 0.505] + [0.505, 1.505] * 9)
HAND_ISSAME = np.array([False, True] + [True, False] * 9)


def test_the_fold_count_reaches_accuracy_and_tar():
    """5 folds of 4 pairs: fold 0 holds the stray different pair, so it scores 3/4 and the others 4/4
    (std = sqrt((0.2^2 + 4 * 0.05^2) / 5) = 0.1). TAR@FAR=1e-3: only fold 0's training set has no
    different pair below the same pairs, so only fold 0 accepts its genuine pairs: 1/5 of the folds
    (1/10 with ten folds)."""
    emb = embeddings_at(HAND_DIST)
    five = evaluate_pairs(emb, HAND_ISSAME, nrof_folds=5)
    assert five["fold_accuracies"] == pytest.approx([0.75, 1.0, 1.0, 1.0, 1.0])
    assert five["accuracy"] == pytest.approx(0.95) and five["std"] == pytest.approx(0.1)
    assert five["best_threshold"] == pytest.approx(0.51)
    assert five["best_threshold_cosine"] == pytest.approx(1 - 0.51 / 2)
    assert five["tar_at_far_1e-3"] == pytest.approx(0.2)
    assert five["tar_at_far_1e-3_std"] == pytest.approx(0.4)  # std of (1, 0, 0, 0, 0)
    assert five["far_at_far_1e-3"] == pytest.approx(0.1)  # fold 0 also accepts its stray: 1 of its 2 impostors
    assert len(evaluate_pairs(emb, HAND_ISSAME, nrof_folds=2)["fold_accuracies"]) == 2  # the fewest folds
    ten = evaluate_pairs(emb, HAND_ISSAME)
    assert len(ten["fold_accuracies"]) == 10 and ten["tar_at_far_1e-3"] == pytest.approx(0.1)


def test_features_without_flips_are_normalised_and_their_norm_reported():
    """(features, None): each row is made unit length before the distances; mean_norm is the mean
    row norm of the features as given (rows scaled by 2 and 4 -> 3)."""
    unit = embeddings_at(HAND_DIST)
    scales = np.where(np.arange(len(unit)) % 2 == 0, 2.0, 4.0)[:, None].astype(np.float32)
    got = evaluate_pairs((unit * scales, None), HAND_ISSAME)
    assert got["fold_accuracies"] == pytest.approx([0.5] + [1.0] * 9)
    assert got["best_threshold"] == pytest.approx(0.51)
    assert got["mean_norm"] == pytest.approx(3.0)
    assert got["pairs"] == 20


def test_final_embeddings_are_used_as_given_and_their_norm_reported():
    """Plain (2N, D) embeddings are not re-normalised: at norm 1.5 every squared distance is 2.25
    times the unit one (same pairs at 1.13625), so the best split moves to the first threshold above: 1.14."""
    got = evaluate_pairs(1.5 * embeddings_at(HAND_DIST), HAND_ISSAME)
    assert got["mean_norm"] == pytest.approx(1.5)
    assert got["best_threshold"] == pytest.approx(1.14)
    assert got["accuracy"] == pytest.approx(0.95)


def test_average_of_every_reported_metric_over_the_standard_sets():
    res = {
        "lfw": {"accuracy": 0.9, "best_threshold": 1.2, "tar_at_far_1e-3": 0.6, "mean_norm": 20.0},
        "calfw": {"accuracy": 0.7, "best_threshold": 1.4, "tar_at_far_1e-3": 0.2, "mean_norm": 30.0},
        "cfp_ff": {"accuracy": 0.0, "best_threshold": 0.0, "tar_at_far_1e-3": 0.0, "mean_norm": 0.0},
    }
    avg = average_over_standard_sets(res)
    assert avg["sets"] == ["lfw", "calfw"]
    assert avg["accuracy"] == pytest.approx(0.8) and avg["best_threshold"] == pytest.approx(1.3)
    assert avg["tar_at_far_1e-3"] == pytest.approx(0.4) and avg["mean_norm"] == pytest.approx(25.0)
    assert avg["best_threshold_cosine"] == pytest.approx(1 - 1.3 / 2)


def test_average_with_no_standard_set_is_empty_and_nan():
    avg = average_over_standard_sets({"cfp_ff": {"accuracy": 0.9, "best_threshold": 1.0,
                                                 "tar_at_far_1e-3": 0.5, "mean_norm": 10.0}})
    assert set(avg) == {"sets", "accuracy"} and avg["sets"] == []
    assert math.isnan(avg["accuracy"])


def test_non_finite_embeddings_are_an_error():
    class Named:
        source = "lfw.ckpt"

    model = Named()
    features = np.ones((4, 3), np.float32)
    refuse_non_finite([features], model, "images")
    refuse_non_finite([features, features.copy()], model, "images")
    bad = features.copy()
    bad[1, 2] = np.nan
    with pytest.raises(ConfigError, match=r"^lfw.ckpt: the model gives non-finite \(NaN/inf\) embeddings for 1 of 4 images"):
        refuse_non_finite([bad, None], model, "images")
    flip = features.copy()
    flip[[0, 3], 0] = np.inf
    with pytest.raises(ConfigError, match=r"^lfw.ckpt: .* for 2 of 4 images"):
        refuse_non_finite([features, torch.from_numpy(flip)], model, "images")
    with pytest.raises(ConfigError, match="for 3 of 4 images"):  # rows bad in either array count once each
        refuse_non_finite([bad, flip], model, "images")


def _rates_loop(dist, issame, thresholds, folds=10):
    """insightface's calculate_roc: per held-out fold and threshold, tp / (tp + fn) and fp / (fp + tn)
    (0 when the fold has no such pairs), averaged over the folds."""
    n = len(dist)
    sizes = [n // folds + (1 if i < n % folds else 0) for i in range(folds)]
    starts = np.cumsum([0] + sizes)
    tprs, fprs = np.zeros((folds, len(thresholds))), np.zeros((folds, len(thresholds)))
    for k in range(folds):
        d, s = dist[starts[k]:starts[k + 1]], issame[starts[k]:starts[k + 1]]
        for j, t in enumerate(thresholds):
            pred = d < t
            tp, fp = np.sum(pred & s), np.sum(pred & ~s)
            fn, tn = np.sum(~pred & s), np.sum(~pred & ~s)
            tprs[k, j] = 0 if tp + fn == 0 else tp / (tp + fn)
            fprs[k, j] = 0 if fp + tn == 0 else fp / (fp + tn)
    return tprs.mean(0), fprs.mean(0)


def test_kfold_accuracy_reports_insightfaces_mean_roc():
    rng = np.random.default_rng(5)
    dist = rng.uniform(0, 4, 60)
    issame = rng.random(60) < 0.5
    issame[:6] = False  # fold 0 (pairs 0-5) has no genuine pair: its TPR counts as 0
    issame[6:12] = True  # fold 1 (pairs 6-11) has no impostor: its FPR counts as 0
    thresholds = np.arange(0, 4, 0.1)
    got = kfold_accuracy(dist, issame, thresholds=thresholds)
    tpr, fpr = _rates_loop(dist, issame, thresholds)
    np.testing.assert_allclose(got["tpr"], tpr, atol=1e-12)
    np.testing.assert_allclose(got["fpr"], fpr, atol=1e-12)


def test_too_few_pairs_for_the_folds():
    with pytest.raises(ValueError, match="need at least 10 pairs for 10 folds, got 9"):
        kfold_accuracy(np.zeros(9), np.zeros(9, bool))
    with pytest.raises(ValueError, match="need at least 1 pairs for 1 folds"):
        kfold_accuracy(np.zeros(9), np.zeros(9, bool), nrof_folds=1)


def test_flip_features_are_fused_with_the_method_asked_for():
    """(features, flips): the pair distances are those of the fused features, by `fusion`."""
    rng = np.random.default_rng(8)
    feat = rng.standard_normal((80, 4)).astype(np.float32) * rng.uniform(0.5, 3, (80, 1)).astype(np.float32)
    flip = rng.standard_normal((80, 4)).astype(np.float32) * rng.uniform(0.5, 3, (80, 1)).astype(np.float32)
    issame = rng.random(40) < 0.5

    def unit(x):
        return x / np.linalg.norm(x, axis=1, keepdims=True)

    for fusion, fused in (("pre_norm_vector_add", unit(feat + flip)), ("average", unit(unit(feat) + unit(flip)))):
        got = evaluate_pairs((feat, flip), issame, fusion=fusion)
        want = evaluate_pairs(fused, issame)
        assert got["fold_accuracies"] == want["fold_accuracies"] and got["best_threshold"] == want["best_threshold"]
    assert evaluate_pairs((feat, flip), issame, fusion="average")["best_threshold"] != evaluate_pairs(
        (feat, flip), issame)["best_threshold"]  # the two fusions differ on this data
    assert evaluate_pairs((feat, flip), issame)["mean_norm"] == pytest.approx(
        (np.linalg.norm(feat, axis=1).mean() + np.linalg.norm(flip, axis=1).mean()) / 2, rel=1e-6)


class _LeftHalf(torch.nn.Module):
    """(unit embedding, norm) of the mean colour of the left 56 columns; NaN when that mean is above
    0.9 (nearly white), so a photo white on the right only gives NaN for its flip."""

    def forward(self, x):
        feat = x[:, :, :, :56].mean((2, 3)) + torch.tensor([1.0, 0.5, -0.25])
        feat = torch.where(x[:, :, :, :56].mean((1, 2, 3))[:, None] > 0.9, float("nan"), feat)
        norm = feat.norm(dim=1, keepdim=True)
        return feat / norm, norm


def _images(rng, n):
    """Photos of two flat colours (left and right half, below 200): embeddings that vary."""
    left, right = rng.integers(0, 200, (n, 1, 1, 3)), rng.integers(0, 200, (n, 1, 1, 3))
    halves = [np.broadcast_to(left, (n, 112, 56, 3)), np.broadcast_to(right, (n, 112, 56, 3))]
    return np.concatenate(halves, 2).astype(np.uint8)


def test_verification_sets_fuse_as_asked_and_report_the_norm_of_what_was_embedded():
    rng = np.random.default_rng(9)
    images = _images(rng, 40)
    issame = rng.random(20) < 0.5
    sets = {"lfw": VerificationSet("lfw", images, issame)}
    x = (images.astype(np.float64) / 255 - 0.5) / 0.5
    shift = np.array([1.0, 0.5, -0.25])
    feat, flip = x[:, :, :56].mean((1, 2)) + shift, x[:, :, 56:].mean((1, 2)) + shift
    alone = evaluate_verification_sets(_LeftHalf(), sets, fusion="none", progress=False)["lfw"]
    assert alone["mean_norm"] == pytest.approx(np.linalg.norm(feat, axis=1).mean(), rel=1e-5)  # no flips embedded
    got = evaluate_verification_sets(_LeftHalf(), sets, fusion="average", progress=False)["lfw"]
    want = evaluate_pairs((feat.astype(np.float32), flip.astype(np.float32)), issame, fusion="average")
    assert got["fold_accuracies"] == want["fold_accuracies"] and got["best_threshold"] == pytest.approx(
        want["best_threshold"], abs=1e-12)
    other = evaluate_pairs((feat.astype(np.float32), flip.astype(np.float32)), issame)  # pre_norm_vector_add
    assert other["best_threshold"] != pytest.approx(want["best_threshold"], abs=0.05)  # the fusions differ here


def test_verification_sets_refuse_non_finite_flip_embeddings():
    rng = np.random.default_rng(10)
    images = _images(rng, 20)
    images[3, :, 56:] = 255  # its flip's left half is white: NaN
    sets = {"cplfw": VerificationSet("cplfw", images, rng.random(10) < 0.5)}
    with pytest.raises(ConfigError, match=r"^_LeftHalf: the model gives non-finite \(NaN/inf\) embeddings for 1 of 20 images \(cplfw\)"):
        evaluate_verification_sets(_LeftHalf(), sets, progress=False)


class _Linear(torch.nn.Module):
    """A linear map of the mean colour: under bf16 autocast its matmul runs in bfloat16."""

    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(3, 8)

    def forward(self, x):
        feat = self.fc(x.mean((2, 3)))
        norm = feat.float().norm(dim=1, keepdim=True)
        return feat.float() / norm, norm


def test_verification_sets_embed_at_the_precision_asked_for():
    from facetrain.eval.embed import extract_features

    torch.manual_seed(0)
    model = _Linear()
    rng = np.random.default_rng(11)
    images = _images(rng, 20)
    sets = {"lfw": VerificationSet("lfw", images, rng.random(10) < 0.5)}
    norms = {}
    for precision in ("fp32", "bf16"):
        got = evaluate_verification_sets(model, sets, precision=precision, progress=False)["lfw"]["mean_norm"]
        feat, flip = extract_features(model, images, precision=precision, progress=False)
        norms[precision] = (np.linalg.norm(feat, axis=1).mean() + np.linalg.norm(flip, axis=1).mean()) / 2
        assert got == pytest.approx(norms[precision], rel=1e-6)
    assert norms["bf16"] != pytest.approx(norms["fp32"], rel=1e-5)


def test_pair_labels_as_integers_or_a_column_and_the_count_check():
    emb = embeddings_at(HAND_DIST)
    want = evaluate_pairs(emb, HAND_ISSAME)
    for labels in (HAND_ISSAME.astype(int), HAND_ISSAME[:, None]):
        got = evaluate_pairs(emb, labels)
        assert got["fold_accuracies"] == want["fold_accuracies"] and got["tar_at_far_1e-3"] == want["tar_at_far_1e-3"]
    direct = kfold_accuracy(HAND_DIST, HAND_ISSAME.astype(int))  # 0/1 labels, not row numbers
    assert direct["fold_accuracies"].tolist() == want["fold_accuracies"]
    with pytest.raises(ValueError, match=r"^38 embeddings for 20 pairs \(need exactly 2 per pair\)$"):
        evaluate_pairs(emb[:38], HAND_ISSAME)


def test_tar_at_far_by_hand_at_other_targets():
    """20 pairs, folds of 2, genuine pairs at 0.5. Training FAR = impostors below t / training impostors.
    (a) one impostor (pair 0, at 0.3), target 0.6: fold 0 trains without impostors (any t passes: t = 3.999,
    its genuine and impostor accepted); folds 1-9 have FAR 1 above 0.3, so t <= 0.3 rejects their
    genuine pairs: TAR 1/10, FAR 1/10.
    (b) impostors at 0.3 (pair 0) and 2.0 (pair 2), target 0.5: folds 2-9 see FAR 1/2 between them,
    which is <= 0.5, so t ~ 2.0 accepts their genuine pairs; fold 1 (FAR 1 above 0.3) rejects its
    one: TAR 9/10; only fold 0 accepts an impostor: FAR 1/10."""
    dist = np.full(20, 0.5)
    issame = np.ones(20, bool)
    dist[0], issame[0] = 0.3, False
    a = kfold_tar_at_far(dist, issame, far_target=0.6)
    assert a["tar"] == pytest.approx(0.1) and a["far"] == pytest.approx(0.1)
    dist[2], issame[2] = 2.0, False
    b = kfold_tar_at_far(dist, issame, far_target=0.5)
    assert b["tar"] == pytest.approx(0.9) and b["far"] == pytest.approx(0.1)
    as_ints = kfold_tar_at_far(dist, issame.astype(int), far_target=0.5)  # 0/1 labels, not row numbers
    assert as_ints == b
    # (c) every distance exactly 1.0 (a grid value), one impostor: folds 1-9 choose t = 1.0, and
    # "same" needs distance < t strictly, so their genuine pairs are rejected; fold 0 accepts (t = 3.999)
    c = kfold_tar_at_far(np.ones(20), np.r_[False, np.ones(19, bool)])
    assert c["tar"] == pytest.approx(0.1)


class _Terminal(io.StringIO):
    """stderr as a terminal: tqdm's `disable=None` shows bars only there."""

    def isatty(self):
        return True


def test_embedding_progress_is_named_after_the_set_and_shown_by_default(monkeypatch):
    rng = np.random.default_rng(12)
    sets = {"calfw": VerificationSet("calfw", _images(rng, 20), rng.random(10) < 0.5)}
    terminal = _Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    evaluate_verification_sets(_LeftHalf(), sets, progress=False)
    assert terminal.getvalue() == ""
    evaluate_verification_sets(_LeftHalf(), sets)
    assert terminal.getvalue().startswith("\rcalfw:   0%|")
