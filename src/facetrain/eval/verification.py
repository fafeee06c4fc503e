"""The five high-quality verification sets (LFW, CFP-FP, CPLFW, CALFW, AgeDB-30; also CFP-FF), docs/evaluation.md.

Protocol of insightface's / AdaFace's `evaluate` (Sandberg's facenet code):
- distance = squared L2 between the fused unit features of the two pair members (0..4);
  a pair is predicted "same" when distance < threshold (strictly);
- thresholds `np.arange(0, 4, 0.01)`; 10 contiguous folds (sklearn KFold, no shuffle); per fold
  the threshold with the best accuracy on the other nine (first maximum, np.argmax) scores the
  held-out fold; accuracy = mean over folds, std = np.std over folds (ddof 0), best threshold =
  mean of the chosen thresholds.

TAR@FAR=1e-3 (insightface's `calculate_val`, decided here): insightface interpolates the
training-fold FAR curve with `scipy.interp1d(kind="slinear")`, which current scipy refuses
(the curve has repeated values) and old scipy resolved arbitrarily. We take, per fold, the
largest threshold of `np.arange(0, 4, 0.001)` whose FAR on the other nine folds is <= 1e-3
(0.0 when none), and report the held-out TAR (and FAR) averaged over the folds.

Everything is vectorised: per fold, distances of same / different pairs are sorted once and
`searchsorted` counts the pairs below every threshold; the integers, and so the accuracies and
argmax, are exactly those of the threshold-by-threshold loop.
"""
from __future__ import annotations

import os
from typing import Mapping, Sequence

import numpy as np

from facetrain.errors import DataError
from facetrain.eval.fusion import fuse_flip

ACCURACY_THRESHOLDS = np.arange(0, 4, 0.01)
VAL_THRESHOLDS = np.arange(0, 4, 0.001)
STANDARD_SETS = ("lfw", "cfp_fp", "cplfw", "calfw", "agedb_30")


def kfold_bounds(n: int, nrof_folds: int) -> np.ndarray:
    """Fold boundaries of sklearn's KFold(shuffle=False): the first n % k folds get one extra item."""
    if nrof_folds < 2 or n < nrof_folds:
        raise ValueError(f"need at least {nrof_folds} pairs for {nrof_folds} folds, got {n}")
    sizes = np.full(nrof_folds, n // nrof_folds)
    sizes[: n % nrof_folds] += 1
    return np.concatenate([[0], np.cumsum(sizes)])


def l2_to_cosine(squared_l2: float) -> float:
    """The cosine similarity threshold equivalent to a squared-L2 distance threshold between unit
    vectors: ||a - b||^2 = 2 - 2 cos(a, b), so cos = 1 - d / 2 (d in [0, 4] -> cos in [1, -1])."""
    return 1.0 - squared_l2 / 2.0


def pair_distances(embeddings: np.ndarray) -> np.ndarray:
    """Squared L2 distance between rows 2i and 2i+1."""
    diff = np.subtract(embeddings[0::2], embeddings[1::2])
    return np.sum(np.square(diff), 1)


def _counts_below(dist: np.ndarray, issame: np.ndarray, bounds: np.ndarray, thresholds: np.ndarray):
    """Per fold: (#same with dist < t, #diff with dist < t, #same, #diff), the first two as (folds, T)."""
    folds = len(bounds) - 1
    same_below = np.empty((folds, len(thresholds)), dtype=np.int64)
    diff_below = np.empty_like(same_below)
    n_same = np.empty(folds, dtype=np.int64)
    n_diff = np.empty(folds, dtype=np.int64)
    for k in range(folds):
        d, s = dist[bounds[k] : bounds[k + 1]], issame[bounds[k] : bounds[k + 1]]
        same_below[k] = np.searchsorted(np.sort(d[s]), thresholds, side="left")
        diff_below[k] = np.searchsorted(np.sort(d[~s]), thresholds, side="left")
        n_same[k], n_diff[k] = s.sum(), (~s).sum()
    return same_below, diff_below, n_same, n_diff


def kfold_accuracy(dist: np.ndarray, issame: np.ndarray, nrof_folds: int = 10,
                   thresholds: np.ndarray = ACCURACY_THRESHOLDS) -> dict:
    """10-fold accuracy (docs/evaluation.md) on pair distances; returns per-fold accuracies and thresholds."""
    dist = np.asarray(dist, dtype=np.float64)  # exact upcast: the same comparisons as float32 < float64
    issame = np.asarray(issame, dtype=bool)
    bounds = kfold_bounds(len(dist), nrof_folds)
    same_below, diff_below, n_same, n_diff = _counts_below(dist, issame, bounds, thresholds)
    sizes = np.diff(bounds)
    correct = same_below + (n_diff[:, None] - diff_below)  # (folds, T): tp + tn per fold
    train_correct = correct.sum(0, keepdims=True) - correct
    train_acc = train_correct / (len(dist) - sizes)[:, None]
    best = np.argmax(train_acc, axis=1)
    rows = np.arange(nrof_folds)
    fold_acc = correct[rows, best] / sizes
    tp_all, fp_all = same_below.astype(np.float64), diff_below.astype(np.float64)
    tpr = np.divide(tp_all, n_same[:, None], out=np.zeros_like(tp_all), where=n_same[:, None] > 0)
    fpr = np.divide(fp_all, n_diff[:, None], out=np.zeros_like(fp_all), where=n_diff[:, None] > 0)
    return {
        "fold_accuracies": fold_acc,
        "fold_thresholds": thresholds[best],
        "tpr": tpr.mean(0),
        "fpr": fpr.mean(0),
    }


def kfold_tar_at_far(dist: np.ndarray, issame: np.ndarray, far_target: float = 1e-3, nrof_folds: int = 10,
                     thresholds: np.ndarray = VAL_THRESHOLDS) -> dict:
    """TAR at a FAR target, threshold chosen on the other nine folds (see the module docstring)."""
    dist = np.asarray(dist, dtype=np.float64)
    issame = np.asarray(issame, dtype=bool)
    bounds = kfold_bounds(len(dist), nrof_folds)
    same_below, diff_below, n_same, n_diff = _counts_below(dist, issame, bounds, thresholds)
    train_diff = n_diff.sum() - n_diff
    train_far = (diff_below.sum(0, keepdims=True) - diff_below) / np.maximum(train_diff, 1)[:, None]
    tars, fars = np.zeros(nrof_folds), np.zeros(nrof_folds)
    for k in range(nrof_folds):
        ok = np.flatnonzero(train_far[k] <= far_target)
        threshold = thresholds[ok[-1]] if len(ok) else 0.0
        d, s = dist[bounds[k] : bounds[k + 1]], issame[bounds[k] : bounds[k + 1]]
        accepted = d < threshold
        tars[k] = (accepted & s).sum() / max(n_same[k], 1)
        fars[k] = (accepted & ~s).sum() / max(n_diff[k], 1)
    return {"tar": float(tars.mean()), "tar_std": float(tars.std()), "far": float(fars.mean())}


def evaluate_pairs(embeddings: np.ndarray | tuple[np.ndarray, np.ndarray | None], issame: np.ndarray,
                   nrof_folds: int = 10, fusion: str = "pre_norm_vector_add") -> dict:
    """Metrics of one verification set.

    `embeddings` is either the final (2N, D) pair embeddings, used as given (insightface's
    `evaluate`), or `(features, flip_features)` un-normalised as `extract_features` returns them,
    fused with `fusion` (flip_features may be None). Returns accuracy, std, best_threshold (squared
    L2, the protocol's unit) and best_threshold_cosine (the same threshold as a cosine), tar_at_far_1e-3 (+ tar_std, far), pairs, mean_norm, fold_accuracies.
    """
    if isinstance(embeddings, tuple):
        features, flip_features = embeddings
        fused, _ = fuse_flip(np.asarray(features, np.float32),
                             None if flip_features is None else np.asarray(flip_features, np.float32), fusion)
        raw = [features] if flip_features is None else [features, flip_features]
        mean_norm = float(np.mean([np.linalg.norm(f, axis=1).mean() for f in raw]))
    else:
        fused = np.asarray(embeddings)
        mean_norm = float(np.linalg.norm(fused, axis=1).mean())
    issame = np.asarray(issame, dtype=bool).reshape(-1)
    if fused.shape[0] != 2 * len(issame):
        raise ValueError(f"{fused.shape[0]} embeddings for {len(issame)} pairs (need exactly 2 per pair)")
    dist = pair_distances(fused)
    acc = kfold_accuracy(dist, issame, nrof_folds)
    val = kfold_tar_at_far(dist, issame, 1e-3, nrof_folds)
    return {
        "accuracy": float(acc["fold_accuracies"].mean()),
        "std": float(acc["fold_accuracies"].std()),
        "best_threshold": float(acc["fold_thresholds"].mean()),
        "best_threshold_cosine": l2_to_cosine(float(acc["fold_thresholds"].mean())),
        "tar_at_far_1e-3": val["tar"],
        "tar_at_far_1e-3_std": val["tar_std"],
        "far_at_far_1e-3": val["far"],
        "pairs": int(len(issame)),
        "mean_norm": mean_norm,
        "fold_accuracies": [float(a) for a in acc["fold_accuracies"]],
    }


def average_over_standard_sets(results: Mapping[str, dict]) -> dict:
    """Mean accuracy (and threshold, TAR) over the five standard sets present; cfp_ff is not averaged
    (AdaFace's `val_acc`). The list of sets averaged is part of the result."""
    names = [n for n in STANDARD_SETS if n in results]
    if not names:
        return {"sets": [], "accuracy": float("nan")}
    keys = ("accuracy", "best_threshold", "tar_at_far_1e-3", "mean_norm")
    avg = {k: float(np.mean([results[n][k] for n in names])) for k in keys}
    return {"sets": names, **avg, "best_threshold_cosine": l2_to_cosine(avg["best_threshold"])}


def check_pair_counts(sets: Mapping[str, object], nrof_folds: int = 10) -> None:
    """DataError naming the first set with fewer pairs than folds (each fold needs its own pairs)."""
    for name, vset in sets.items():
        if len(vset.issame) < nrof_folds:
            raise DataError(f"{name}: {len(vset.issame)} pairs; the {nrof_folds}-fold protocol needs at least "
                            f"{nrof_folds}")


def evaluate_verification_sets(model, sets: Mapping[str, object], batch_size: int = 256, device: str | None = None,
                               precision: str = "fp32", fusion: str = "pre_norm_vector_add", channels_last: bool = False,
                               nrof_folds: int = 10, progress: bool = True) -> dict[str, dict]:
    """Embed each `VerificationSet` (image + flip), evaluate it; adds `"average"` over the standard sets.

    The model's train/eval mode and placement are restored afterwards (training-time validation).
    """
    from facetrain.eval.embed import extract_features

    check_pair_counts(sets, nrof_folds)  # before any embedding: a set too small fails fast
    results: dict[str, dict] = {}
    for name, vset in sets.items():
        features, flip_features = extract_features(
            model, vset.images, batch_size=batch_size, device=device, precision=precision,
            channels_last=channels_last, flip=fusion != "none", progress=progress, desc=name,
        )
        results[name] = evaluate_pairs((features, flip_features), vset.issame, nrof_folds, fusion)
    results["average"] = average_over_standard_sets(results)
    return results


def evaluate_checkpoint(ckpt: str | os.PathLike, val_data_path: str | os.PathLike, sets: Sequence[str] | None = None,
                        arch: str | None = None, batch_size: int = 256, device: str | None = None,
                        precision: str = "fp32", fusion: str = "pre_norm_vector_add", channels_last: bool = False,
                        progress: bool = True) -> dict[str, dict]:
    """Load a backbone checkpoint and the validation sets (.bin or memfiles) and evaluate (docs/evaluation.md).

    Returns {set name: metrics} plus "average" (over the five standard sets present).
    """
    from facetrain.checkpoint import load_backbone
    from facetrain.data.formats.memfile import load_validation_sets

    model, _ = load_backbone(ckpt, arch)
    val_sets = load_validation_sets(val_data_path, list(sets) if sets else None)
    return evaluate_verification_sets(model, val_sets, batch_size=batch_size, device=device, precision=precision,
                                      fusion=fusion, channels_last=channels_last, progress=progress)
