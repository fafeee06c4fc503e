"""Channel order: the models take BGR (as cv2 reads); a copy stored as RGB loses points silently. With a
model, score the set as stored and with blue and red swapped, and warn when the swapped order is better
beyond chance (one-sided p < `SIGNIFICANCE`).

An untrained or unrelated model also prefers one order, for no reason that says anything about the
data; so a verdict is given only when the model separates the set's identities in one of the orders
beyond chance (p < `SIGNIFICANCE`). Otherwise the check says it could not tell.

Pair sets: each pair is decided at its fold's 10-fold threshold (the accuracy protocol), each order.
The model is useful when the better order's correct pairs are beyond chance (binomial, p = 1/2); the
swapped order is better when it decides more pairs right than the stored one, by McNemar's exact test
on the pairs the two orders decide differently.
Labelled folders: per identity, the mean cosine to its other images minus the mean cosine to other
identities' images (a margin), each way; normal one-sided tests on the mean margin (useful when above
zero) and on the mean per-identity difference (swapped better when above zero).
"""
from __future__ import annotations

import math

import numpy as np

from facetrain.eval.binomial import binomial_cdf

SIGNIFICANCE = 1e-3


def _features(model, images: np.ndarray, batch_size: int, device, progress: bool) -> np.ndarray:
    from facetrain.eval.embed import extract_features
    from facetrain.eval.fusion import fuse_flip

    features, flipped = extract_features(model, images, batch_size=batch_size, device=device, flip=True,
                                         progress=progress, desc="channels")
    return fuse_flip(features, flipped, "pre_norm_vector_add")[0]


def _at_least(k: int, n: int) -> float:
    """P(Binomial(n, 1/2) >= k)."""
    return 1.0 - binomial_cdf(k - 1, n, 0.5)


def _normal_above_zero(values: np.ndarray) -> float:
    """One-sided p of mean(values) > 0 (normal approximation; 1.0 when it cannot be told)."""
    if len(values) < 2 or values.std(ddof=1) == 0:
        return 0.0 if len(values) > 1 and values.mean() > 0 else 1.0
    z = values.mean() / (values.std(ddof=1) / math.sqrt(len(values)))
    return 0.5 * math.erfc(z / math.sqrt(2))


def _verdict(stored: float, swapped: float, p_useful: float, p_swapped: float, what: str) -> dict:
    useful = p_useful < SIGNIFICANCE
    swapped_better = useful and p_swapped < SIGNIFICANCE
    if not useful:
        verdict = ("not checked: the model does not separate this sample's identities beyond chance in either "
                   "order (an untrained or unrelated model, or too few pairs)")
    elif swapped_better:
        verdict = "channels look swapped: the set scores better with blue and red exchanged (RGB stored where BGR is expected?)"
    else:
        verdict = "channel order as the model expects"
    return {"stored": stored, "swapped": swapped, "gain_if_swapped": swapped - stored, "measure": what,
            "p_model_beyond_chance": p_useful, "p_swapped_better": p_swapped, "verdict": verdict,
            "swapped_better": swapped_better}


def check_pair_channels(model, images: np.ndarray, issame: np.ndarray, batch_size: int = 256, device=None,
                        progress: bool = False) -> dict:
    from facetrain.eval.verification import kfold_accuracy, kfold_bounds, pair_distances

    issame = np.asarray(issame, bool)
    bounds = kfold_bounds(len(issame), 10)
    right = {}
    for order, batch in (("stored", images), ("swapped", images[..., ::-1])):
        dist = pair_distances(_features(model, np.ascontiguousarray(batch), batch_size, device, progress))
        thresholds = np.repeat(kfold_accuracy(dist, issame)["fold_thresholds"], np.diff(bounds))
        right[order] = (dist < thresholds) == issame
    n = len(issame)
    best = max(int(right["stored"].sum()), int(right["swapped"].sum()))
    only_swapped = int((right["swapped"] & ~right["stored"]).sum())
    discordant = only_swapped + int((right["stored"] & ~right["swapped"]).sum())
    return _verdict(float(right["stored"].mean()), float(right["swapped"].mean()), _at_least(best, n),
                    _at_least(only_swapped, discordant) if discordant else 1.0, "10-fold accuracy")


def check_folder_channels(model, images: np.ndarray, labels: np.ndarray, batch_size: int = 256, device=None,
                          progress: bool = False) -> dict:
    labels = np.asarray(labels)
    margins = {}
    for order, batch in (("stored", images), ("swapped", images[..., ::-1])):
        unit = _features(model, np.ascontiguousarray(batch), batch_size, device, progress).astype(np.float64)
        similarity = unit @ unit.T
        per_identity = []
        for label in np.unique(labels):
            own = labels == label
            if own.sum() < 2 or own.all():
                continue
            block = similarity[np.ix_(own, own)]
            genuine = (block.sum() - np.trace(block)) / (own.sum() * (own.sum() - 1))
            per_identity.append(genuine - similarity[np.ix_(own, ~own)].mean())
        margins[order] = np.array(per_identity)
    if len(margins["stored"]) == 0:
        return {"verdict": "not checked: no identity with two images in the sample"}
    p_useful = min(_normal_above_zero(margins["stored"]), _normal_above_zero(margins["swapped"]))
    return _verdict(float(margins["stored"].mean()), float(margins["swapped"].mean()), p_useful,
                    _normal_above_zero(margins["swapped"] - margins["stored"]), "genuine minus impostor cosine")
