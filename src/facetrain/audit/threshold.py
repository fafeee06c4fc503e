"""The audit's cosine threshold: given, or the cosine at a false-accept rate on impostor pairs.

Impostor pairs come from a calibration `.bin` (its non-matching pairs), or else from the audited dataset
itself: every pair of images with different identity labels among all its images, or, for datasets of
more than `SUBSET_IMAGES` images, among that many images drawn with a fixed seed (same data, same
threshold; ~8.4 M impostor pairs, enough for FAR 1e-6). The threshold is the lowest cosine at which at
most FAR of the impostor pairs score at or above it. A dataset's own "impostors" include the image
pairs of its collisions (one person in two folders), which would raise its own threshold until it hides
them; the audit therefore leaves out the pairs of identity pairs it finds colliding and sets the
threshold again, until no new collision appears (`run_audit`). A clean `--calibration` set avoids the question.
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


def sampled_rows(n: int, rng: np.random.Generator, limit: int = SUBSET_IMAGES) -> np.ndarray:
    """All rows when there are at most `limit`, else `limit` of them drawn with `rng` (sorted)."""
    return np.arange(n) if n <= limit else np.sort(rng.choice(n, limit, replace=False))


def within_pairs(embeddings: np.ndarray, labels: np.ndarray | None, limit: int = SUBSET_IMAGES) -> dict:
    """Cosines of every pair of rows among at most `limit` rows (drawn with a fixed seed beyond that):
    "scores", the rows' "first"/"second" labels and "same" (labels equal; all False without labels)."""
    subset = sampled_rows(len(embeddings), np.random.default_rng(SAMPLING_SEED), limit)
    emb = torch.from_numpy(np.ascontiguousarray(embeddings[subset], dtype=np.float32))
    i, j = np.triu_indices(len(subset), 1)
    scores = (emb @ emb.T).numpy()[i, j]
    if labels is None:
        return {"scores": scores, "same": np.zeros(len(i), bool), "exhaustive": len(subset) == len(embeddings)}
    first, second = labels[subset][i], labels[subset][j]
    return {"scores": scores, "first": first, "second": second, "same": first == second,
            "exhaustive": len(subset) == len(embeddings)}


def cross_scores(a: np.ndarray, b: np.ndarray, limit: int = SUBSET_IMAGES) -> np.ndarray:
    """Cosines of every (row of a, row of b) pair among at most `limit` rows of each (drawn beyond that)."""
    rng = np.random.default_rng(SAMPLING_SEED)
    ta = torch.from_numpy(np.ascontiguousarray(a[sampled_rows(len(a), rng, limit)], dtype=np.float32))
    tb = torch.from_numpy(np.ascontiguousarray(b[sampled_rows(len(b), rng, limit)], dtype=np.float32))
    return (ta @ tb.T).numpy().ravel()


class DatasetImpostors:
    """The dataset's own impostor pairs (see the module note), scored once; `threshold` may leave out the pairs of
    identity pairs found to collide, so that a dataset's collisions do not raise its own threshold."""

    def __init__(self, embeddings: np.ndarray, labels: np.ndarray):
        if len(np.unique(labels)) < 2:
            raise ConfigError("the dataset has a single identity: no impostor pairs to set a threshold; "
                              "pass --threshold or --calibration")
        pairs = within_pairs(embeddings, labels)
        same = pairs["same"]
        self.exhaustive = pairs["exhaustive"]
        self.scores = pairs["scores"][~same]
        self.base = int(labels.max()) + 1
        self.codes = identity_pair_codes(pairs["first"][~same], pairs["second"][~same], self.base)
        self.genuine = (pairs["scores"][same] if self.exhaustive
                        else pair_scores(embeddings, *_sampled_genuine(labels, np.random.default_rng(SAMPLING_SEED + 1))))

    def kept(self, excluded: set[tuple[int, int]]) -> np.ndarray:
        """Mask of the impostor pairs whose identity pair is not in `excluded`."""
        if not excluded:
            return np.ones(len(self.scores), bool)
        pairs = np.array(sorted(excluded), np.int64)
        return ~np.isin(self.codes, identity_pair_codes(pairs[:, 0], pairs[:, 1], self.base))

    def threshold(self, far: float, excluded: set[tuple[int, int]] = frozenset()) -> Threshold:
        stats = threshold_at_far(self.genuine, self.scores[self.kept(excluded)], far)
        stats["pairs"] = ("all image pairs" if self.exhaustive else
                          f"all pairs among {SUBSET_IMAGES} images drawn with seed {SAMPLING_SEED}; genuine pairs sampled")
        stats["excluded_identity_pairs"] = len(excluded)
        return Threshold(stats.pop("value"), "dataset impostors", far, stats)


def identity_pair_codes(a: np.ndarray, b: np.ndarray, base: int) -> np.ndarray:
    """One int64 per unordered label pair."""
    a, b = np.asarray(a, np.int64), np.asarray(b, np.int64)
    return np.minimum(a, b) * base + np.maximum(a, b)
