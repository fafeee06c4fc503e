"""Five-set verification metrics against a straightforward sklearn-KFold loop, fusion, and embedding."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.model_selection import KFold

from facetrain.eval.embed import extract_features
from facetrain.eval.fusion import fuse_flip
from facetrain.eval.verification import average_over_standard_sets, evaluate_pairs, kfold_accuracy, kfold_tar_at_far
from pair_embeddings import noisy_pairs

# insightface's grids, typed in (not imported from the module under test)
ACCURACY_THRESHOLDS = np.arange(0, 4, 0.01)
VAL_THRESHOLDS = np.arange(0, 4, 0.001)


def pair_distances(emb):
    """Squared L2 distance of rows 2i and 2i+1 (float32, as insightface)."""
    return np.square(emb[0::2] - emb[1::2]).sum(1)


def _accuracy(threshold, dist, issame):
    pred = np.less(dist, threshold)
    tp = np.sum(pred & issame)
    tn = np.sum(~pred & ~issame)
    return float(tp + tn) / dist.size


def _loop_reference(dist, issame, folds=10):
    """The threshold-by-threshold loop of insightface's calculate_roc."""
    accs, best_ts = [], []
    for train, test in KFold(n_splits=folds, shuffle=False).split(np.arange(len(dist))):
        train_acc = [_accuracy(t, dist[train], issame[train]) for t in ACCURACY_THRESHOLDS]
        best = int(np.argmax(train_acc))
        best_ts.append(ACCURACY_THRESHOLDS[best])
        accs.append(_accuracy(ACCURACY_THRESHOLDS[best], dist[test], issame[test]))
    return np.array(accs), np.array(best_ts)


def _tar_loop_reference(dist, issame, far_target=1e-3, folds=10):
    tars = []
    for train, test in KFold(n_splits=folds, shuffle=False).split(np.arange(len(dist))):
        diff = ~issame[train]
        fars = [np.sum((dist[train] < t) & diff) / diff.sum() for t in VAL_THRESHOLDS]
        ok = [t for t, f in zip(VAL_THRESHOLDS, fars) if f <= far_target]
        threshold = ok[-1] if ok else 0.0
        same = issame[test]
        tars.append(np.sum((dist[test] < threshold) & same) / same.sum())
    return float(np.mean(tars))


def _pair_embeddings(rng, n_pairs, dim=32, noise=0.9):
    return noisy_pairs(rng, n_pairs, dim, noise)


@pytest.mark.parametrize("n_pairs", [600, 607])  # 607: uneven folds as sklearn splits them
def test_kfold_accuracy_equals_straightforward_loop(n_pairs):
    rng = np.random.default_rng(n_pairs)
    emb, issame = _pair_embeddings(rng, n_pairs)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    dist = pair_distances(emb)
    # put some distances exactly on thresholds: strict "<" must match the loop
    dist[:20] = ACCURACY_THRESHOLDS[rng.integers(50, 250, 20)]
    ref_acc, ref_t = _loop_reference(dist, issame)
    got = kfold_accuracy(dist, issame)
    assert np.array_equal(got["fold_accuracies"], ref_acc)
    assert np.array_equal(got["fold_thresholds"], ref_t)
    assert 0.6 < ref_acc.mean() < 1.0  # a real, imperfect signal


def test_tar_at_far_equals_loop():
    rng = np.random.default_rng(1)
    emb, issame = _pair_embeddings(rng, 3000, noise=0.6)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    dist = pair_distances(emb)
    got = kfold_tar_at_far(dist, issame)["tar"]
    assert got == pytest.approx(_tar_loop_reference(dist, issame), abs=1e-12)
    assert 0.0 < got < 1.0


def test_evaluate_pairs_keys_and_perfect_separation():
    rng = np.random.default_rng(2)
    emb, issame = _pair_embeddings(rng, 400, noise=0.05)
    res = evaluate_pairs((emb * 3, emb * 3), issame)
    assert res["accuracy"] == 1.0 and res["std"] == 0.0 and res["pairs"] == 400
    assert res["tar_at_far_1e-3"] == 1.0
    assert res["mean_norm"] == pytest.approx(np.linalg.norm(emb * 3, axis=1).mean(), rel=1e-5)
    with pytest.raises(ValueError, match="2 per pair"):
        evaluate_pairs(emb[:-2], issame)


def test_fusion_methods():
    rng = np.random.default_rng(3)
    a, b = rng.standard_normal((5, 8)), rng.standard_normal((5, 8))
    unit, norm = fuse_flip(a, b, "pre_norm_vector_add")
    assert np.allclose(unit * norm, a + b)
    default_unit, default_norm = fuse_flip(a, b)  # AdaFace's default fusion
    assert np.array_equal(default_unit, unit) and np.array_equal(default_norm, norm)
    unit_w, norm_w = fuse_flip(a, b, "norm_weighted_avg")
    assert np.allclose(unit_w, unit)  # same direction, norm = mean of the two
    assert np.allclose(norm_w[:, 0], (np.linalg.norm(a, axis=1) + np.linalg.norm(b, axis=1)) / 2)
    avg, _ = fuse_flip(a, b, "average")
    expected = a / np.linalg.norm(a, axis=1, keepdims=True) + b / np.linalg.norm(b, axis=1, keepdims=True)
    assert np.allclose(avg, expected / np.linalg.norm(expected, axis=1, keepdims=True))
    cat, _ = fuse_flip(a, b, "concat")
    assert cat.shape == (5, 16) and np.allclose(np.linalg.norm(cat, axis=1), 1)
    alone, n = fuse_flip(a, None, "pre_norm_vector_add")
    assert np.allclose(alone * n, a)
    with pytest.raises(ValueError, match="unknown fusion"):
        fuse_flip(a, b, "max")


def test_average_only_over_standard_sets():
    res = {"lfw": {"accuracy": 1.0, "best_threshold": 1.0, "tar_at_far_1e-3": 1.0, "mean_norm": 2.0},
           "cfp_ff": {"accuracy": 0.0, "best_threshold": 0.0, "tar_at_far_1e-3": 0.0, "mean_norm": 0.0},
           "agedb_30": {"accuracy": 0.5, "best_threshold": 1.0, "tar_at_far_1e-3": 0.0, "mean_norm": 2.0}}
    avg = average_over_standard_sets(res)
    assert avg["sets"] == ["lfw", "agedb_30"] and avg["accuracy"] == 0.75


class _ColourNet(torch.nn.Module):
    """(emb, norm) from the mean colour of the left half: flips change it, batches must not."""

    def __init__(self):
        super().__init__()
        self.scale = torch.nn.Parameter(torch.tensor(2.0))

    def forward(self, x):
        feat = torch.stack([x[:, c, :, :56].mean((1, 2)) for c in range(3)], 1) * self.scale + 3.0
        norm = feat.norm(dim=1, keepdim=True)
        return feat / norm, norm


def test_extract_features_batches_flip_and_restores_mode():
    rng = np.random.default_rng(4)
    images = rng.integers(0, 256, (37, 112, 112, 3), dtype=np.uint8)
    model = _ColourNet().train()
    feats, flips = extract_features(model, images, batch_size=8, progress=False)
    assert model.training and feats.dtype == np.float32 and feats.shape == (37, 3)
    x = (images.astype(np.float32) / 255 - 0.5) / 0.5
    assert np.allclose(feats, x[:, :, :56].mean((1, 2)) * 2 + 3, atol=1e-5)
    assert np.allclose(flips, x[:, :, 56:].mean((1, 2)) * 2 + 3, atol=1e-5)
    bf16, none = extract_features(model, images, batch_size=16, precision="bf16", channels_last=True,
                                  flip=False, progress=False)
    assert none is None and np.allclose(bf16, feats, atol=0.1)
    assert next(model.parameters()).is_contiguous()


def _conv_net() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.AdaptiveAvgPool2d(1),
                               torch.nn.Flatten())


@pytest.mark.parametrize("found", [torch.channels_last, torch.contiguous_format])
@pytest.mark.parametrize("channels_last", [True, False])
def test_extract_features_hands_the_model_back_in_the_memory_format_it_found(found, channels_last):
    """A model trained NHWC stays NHWC after validation (the trainer no longer repairs it), and an
    NCHW model asked to run NHWC comes back NCHW."""
    images = np.random.default_rng(5).integers(0, 256, (6, 112, 112, 3), dtype=np.uint8)
    model = _conv_net().to(memory_format=found)
    reference, _ = extract_features(_conv_net(), images, batch_size=4, flip=False, progress=False)
    feats, _ = extract_features(model, images, batch_size=4, flip=False, progress=False, channels_last=channels_last)
    weight = model[0].weight
    assert weight.is_contiguous(memory_format=found)
    assert weight.is_contiguous() == (found == torch.contiguous_format)
    assert np.allclose(feats, reference, atol=1e-5)


def test_unknown_precision_is_refused_before_the_model_moves():
    model = _conv_net().train()
    with pytest.raises(ValueError, match="fp64"):
        extract_features(model, np.zeros((2, 112, 112, 3), np.uint8), precision="fp64", progress=False)
    assert model.training
