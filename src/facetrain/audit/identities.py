"""Per-identity statistics of the audited dataset from its unit embeddings.

- consistency (intra-class): the mean cosine of an identity's images to their normalised centroid,
  which equals the norm of the mean of its unit embeddings;
- similarity between identities a and b: the cosine between their normalised centroids. Averaging removes
  most of the per-image noise, so two folders of one person score near 1 even with a model whose single
  genuine pairs often fall below the threshold, while two people keep the similarity of their identities.
  `mean_cosine`, the mean cosine over all (image of a, image of b) pairs (the dot product of the
  unnormalised mean embeddings), is reported next to it.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from facetrain.audit.neighbours import Neighbours, search


@dataclass
class IdentityStats:
    labels: np.ndarray  # (C,) identity labels that have images
    counts: np.ndarray  # (C,) images per identity
    means: np.ndarray  # (C, D) mean unit embedding (not renormalised)
    image_to_centroid: np.ndarray  # (N,) cosine of each image to its identity's normalised centroid

    @property
    def consistency(self) -> np.ndarray:
        return np.linalg.norm(self.means, axis=1)

    def index_of(self) -> np.ndarray:
        """label -> row in these arrays (-1 for labels without images)."""
        index = np.full(int(self.labels.max()) + 1, -1, np.int64)
        index[self.labels] = np.arange(len(self.labels))
        return index


def identity_stats(embeddings: np.ndarray, labels: np.ndarray) -> IdentityStats:
    present, counts = np.unique(labels, return_counts=True)
    row = np.full(int(present.max()) + 1, -1, np.int64)
    row[present] = np.arange(len(present))
    image_row = torch.from_numpy(row[labels])
    emb = torch.from_numpy(np.ascontiguousarray(embeddings, dtype=np.float32))
    sums = torch.zeros(len(present), emb.shape[1]).index_add_(0, image_row, emb)
    means = (sums / torch.from_numpy(counts).float()[:, None]).numpy()
    unit = means / np.maximum(np.linalg.norm(means, axis=1, keepdims=True), 1e-12)
    to_centroid = np.einsum("ij,ij->i", embeddings, unit[row[labels]]).astype(np.float32)
    return IdentityStats(present, counts, means, to_centroid)


def identity_neighbours(stats: IdentityStats, threshold: float, device: str = "cpu", progress: bool = False) -> Neighbours:
    """Nearest other identity of each identity and the identity pairs (a < b, as rows of `stats`) whose centroid
    cosine is >= threshold."""
    unit = centroids(stats)
    found = search(unit, unit, threshold, exclude_self=True, device=device, progress=progress,
                   desc="identities")
    once = found.query < found.key
    found.query, found.key, found.score = found.query[once], found.key[once], found.score[once]
    return found


def centroids(stats: IdentityStats) -> np.ndarray:
    """(C, D) normalised identity centroids."""
    return stats.means / np.maximum(stats.consistency[:, None], 1e-12)


def reference_identity_matches(reference: IdentityStats, train: IdentityStats, threshold: float, device: str = "cpu",
                               progress: bool = False, desc: str = "reference identities") -> Neighbours:
    """(reference identity row, training identity row) pairs whose centroid cosine is >= threshold: leakage at the
    identity level, which averages away the per-image noise that makes single genuine pairs miss the threshold."""
    return search(centroids(reference), centroids(train), threshold, device=device, progress=progress, desc=desc)


def mean_cosine(stats: IdentityStats, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Mean cosine over all (image of a, image of b) pairs, for rows a[k], b[k]."""
    return np.einsum("ij,ij->i", stats.means[a], stats.means[b])
