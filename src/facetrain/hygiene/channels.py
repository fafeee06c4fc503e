"""Channel order: the models take BGR (as cv2 reads); a copy stored as RGB loses points silently. With a
model, score the set as stored and with blue and red swapped, and warn when the swapped order is better
by more than noise.

Pair sets: 10-fold accuracy each way; noise = 2 standard errors of the per-fold accuracy differences.
Labelled folders: per identity, the mean cosine to its other images minus the mean cosine to other
identities' images (a margin), each way; noise = 2 standard errors of the per-identity differences.
"""
from __future__ import annotations

import numpy as np


def _features(model, images: np.ndarray, batch_size: int, device, progress: bool) -> np.ndarray:
    from facetrain.eval.embed import extract_features
    from facetrain.eval.fusion import fuse_flip

    features, flipped = extract_features(model, images, batch_size=batch_size, device=device, flip=True,
                                         progress=progress, desc="channels")
    return fuse_flip(features, flipped, "pre_norm_vector_add")[0]


def _verdict(differences: np.ndarray, stored: float, swapped: float, what: str) -> dict:
    noise = float(2 * differences.std(ddof=1) / np.sqrt(len(differences))) if len(differences) > 1 else float("inf")
    gain = float(differences.mean())
    swapped_better = gain > noise
    return {"stored": stored, "swapped": swapped, "gain_if_swapped": gain, "noise": noise, "measure": what,
            "verdict": ("channels look swapped: the set scores better with blue and red exchanged (RGB stored "
                        "where BGR is expected?)") if swapped_better else "channel order as the model expects",
            "swapped_better": swapped_better}


def check_pair_channels(model, images: np.ndarray, issame: np.ndarray, batch_size: int = 256, device=None,
                        progress: bool = False) -> dict:
    from facetrain.eval.verification import kfold_accuracy, pair_distances

    folds = {}
    for order, batch in (("stored", images), ("swapped", images[..., ::-1])):
        unit = _features(model, np.ascontiguousarray(batch), batch_size, device, progress)
        folds[order] = kfold_accuracy(pair_distances(unit), np.asarray(issame, bool))["fold_accuracies"]
    return _verdict(folds["swapped"] - folds["stored"], float(folds["stored"].mean()), float(folds["swapped"].mean()),
                    "10-fold accuracy")


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
    return _verdict(margins["swapped"] - margins["stored"], float(margins["stored"].mean()),
                    float(margins["swapped"].mean()), "genuine minus impostor cosine")
