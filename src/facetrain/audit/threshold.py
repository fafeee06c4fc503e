"""The audit's cosine threshold: given, or the cosine at a false-accept rate on impostor pairs.

Impostor pairs come from a calibration `.bin` (its non-matching pairs), or else from the audited dataset
itself: every pair of images with different identity labels among all its images, or, for datasets of
more than `SUBSET_IMAGES` images, among that many images drawn with a fixed seed (same data, same
threshold; ~8.4 M impostor pairs, enough for FAR 1e-6). The
threshold is the lowest cosine at which at most FAR of the impostor pairs score at or above it. A
dataset's own impostors include its undetected collisions; they are rare among millions of pairs, but
a dataset with many collisions raises its own threshold, so a clean calibration set is the stronger choice.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np
import torch

from facetrain.errors import ConfigError
from facetrain.eval.roc import roc_curve

DEFAULT_FAR = 1e-4
SUBSET_IMAGES = 4096  # all pairs among at most this many images: ~8.4 M pairs, one matrix product
MAX_GENUINE_PAIRS = 200_000
SAMPLING_SEED = 0


@dataclass
class Threshold:
    value: float
    source: str  # "given" | "calibration" | "dataset impostors"
    far: float | None = None
    details: dict = field(default_factory=dict)

    def as_json(self) -> dict:
        out = asdict(self)
        out.update(out.pop("details"))
        return out


def pair_scores(embeddings: np.ndarray, first: np.ndarray, second: np.ndarray, chunk: int = 1 << 16) -> np.ndarray:
    """Cosine of each (first[k], second[k]) pair of unit rows, in chunks (no (P, D) copies of all pairs)."""
    out = np.empty(len(first), np.float32)
    for s in range(0, len(first), chunk):
        out[s : s + chunk] = np.einsum("ij,ij->i", embeddings[first[s : s + chunk]], embeddings[second[s : s + chunk]])
    return out


def threshold_at_far(genuine: np.ndarray, impostor: np.ndarray, far: float) -> dict:
    """The lowest threshold at which at most `far` of the impostor pairs score >= it (an impostor score, or just
    above the highest one), and the share of genuine pairs accepted there."""
    if not len(impostor):
        raise ConfigError("no impostor pairs to set a threshold at a false-accept rate")
    fpr, _, thresholds = roc_curve(np.zeros(len(impostor), bool), impostor.astype(np.float64), drop_intermediate=False)
    k = int(np.flatnonzero(fpr <= far)[-1])
    value = (float(np.float32(thresholds[k])) if np.isfinite(thresholds[k])
             else float(np.nextafter(np.float32(impostor.max()), np.float32(np.inf))))
    return {"value": value, "achieved_far": float(fpr[k]),
            "tar": float(np.mean(genuine >= value)) if len(genuine) else None,
            "impostor_pairs": int(len(impostor)), "genuine_pairs": int(len(genuine)),
            "far_resolution": 1.0 / len(impostor)}


def _sampled_genuine(labels: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Up to MAX_GENUINE_PAIRS pairs: an anchor from an identity with >= 2 images, then another image of it."""
    n = len(labels)
    order = np.argsort(labels, kind="stable")
    _, starts, counts = np.unique(labels[order], return_index=True, return_counts=True)
    position = np.empty(n, np.int64)
    position[order] = np.arange(n)
    class_of = np.repeat(np.arange(len(counts)), counts)[position]
    anchors = np.flatnonzero(counts[class_of] >= 2)
    if not len(anchors):
        return np.empty(0, np.int64), np.empty(0, np.int64)
    a = rng.choice(anchors, MAX_GENUINE_PAIRS)
    start, count = starts[class_of[a]], counts[class_of[a]]
    offset = (position[a] - start + 1 + (rng.random(len(a)) * (count - 1)).astype(np.int64)) % count
    return a, order[start + offset]


def dataset_threshold(embeddings: np.ndarray, labels: np.ndarray, far: float) -> Threshold:
    """The cosine at `far` on the dataset's own impostor pairs (see the module note)."""
    if len(np.unique(labels)) < 2:
        raise ConfigError("the dataset has a single identity: no impostor pairs to set a threshold; "
                          "pass --threshold or --calibration")
    rng = np.random.default_rng(SAMPLING_SEED)
    n = len(labels)
    exhaustive = n <= SUBSET_IMAGES
    subset = np.arange(n) if exhaustive else np.sort(rng.choice(n, SUBSET_IMAGES, replace=False))
    emb = torch.from_numpy(np.ascontiguousarray(embeddings[subset], dtype=np.float32))
    scores = (emb @ emb.T).numpy()
    i, j = np.triu_indices(len(subset), 1)
    same = labels[subset][i] == labels[subset][j]
    impostor = scores[i[~same], j[~same]]
    genuine = scores[i[same], j[same]] if exhaustive else pair_scores(embeddings, *_sampled_genuine(labels, rng))
    stats = threshold_at_far(genuine, impostor, far)
    stats["pairs"] = ("all image pairs" if exhaustive else
                      f"all pairs among {SUBSET_IMAGES} images drawn with seed {SAMPLING_SEED}; genuine pairs sampled")
    return Threshold(stats.pop("value"), "dataset impostors", far, stats)


def calibration_threshold(embeddings: np.ndarray, issame: np.ndarray, far: float, name: str) -> Threshold:
    """The cosine at `far` on the non-matching pairs of a verification set (pair k = images 2k, 2k+1)."""
    scores = pair_scores(embeddings, np.arange(0, 2 * len(issame), 2), np.arange(1, 2 * len(issame), 2))
    stats = threshold_at_far(scores[issame], scores[~issame], far)
    stats["calibration"] = name
    return Threshold(stats.pop("value"), "calibration", far, stats)
