"""Per-identity statistics of the audited dataset from its unit embeddings.

- consistency (intra-class): the mean cosine of an identity's images to their normalised centroid,
  which equals the norm of the mean of its unit embeddings;
- similarity between identities a and b: the cosine between their normalised centroids, corrected for
  attenuation (Spearman's correction): divided by each identity's reliability, sqrt(mean cosine of its
  distinct image pairs) / consistency, the part of its normalised centroid that is the person's own direction
  rather than the average of its images' spread. Equivalently, the mean cross-image cosine of a and b over the
  geometric mean of their within-identity mean pair cosines. Two folders of one person therefore score near 1
  whatever their images' spread (an uncorrected centroid cosine drops with it: a varied identity's two halves
  look less alike than a uniform one's, and a varied leaked identity is missed), and two people keep the
  similarity of their identities. The correction is at most 1 / RELIABILITY_FLOOR per identity (an identity whose
  images barely agree is no evidence of anything); single-image identities are not corrected.
  `cosine` (normalised centroids) and `mean_cosine` (all cross-image pairs) are reported next to it.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from facetrain.audit.neighbours import Neighbours, search


# an identity's similarities are divided by its reliability, taken as at least this: the correction never more
# than doubles one identity's side (a reliability of 0.5 is a within-identity mean pair cosine of 0.25 x consistency^2)
RELIABILITY_FLOOR = 0.5
SIMILARITY_SCALE = 2.0  # 1 / RELIABILITY_FLOOR: the largest norm of a similarity row, a power of two (exact scaling)


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


def mean_pair_cosine(stats: IdentityStats) -> np.ndarray:
    """Mean cosine over the pairs of distinct images of each identity: (n^2 |mean|^2 - n) / (n (n - 1)); 1 for one image."""
    n = stats.counts.astype(np.float64)
    squared = np.einsum("ij,ij->i", stats.means, stats.means).astype(np.float64)
    return np.where(n > 1, (n * n * squared - n) / np.maximum(n * (n - 1), 1), 1.0)


def reliability(stats: IdentityStats) -> np.ndarray:
    """(C,) sqrt(mean pair cosine) / consistency, in [RELIABILITY_FLOOR, 1] (1 for a single image)."""
    within = np.sqrt(np.clip(mean_pair_cosine(stats), 0.0, None))
    return np.clip(within / np.maximum(stats.consistency.astype(np.float64), 1e-12), RELIABILITY_FLOOR, 1.0)


def similarity_rows(stats: IdentityStats) -> np.ndarray:
    """(C, D) rows whose inner products are the identity similarities (norm <= SIMILARITY_SCALE)."""
    return (centroids(stats) / reliability(stats)[:, None]).astype(np.float32)


def _similarity_search(queries: np.ndarray, keys: np.ndarray, threshold: float, **kwargs) -> Neighbours:
    """`search` of similarity rows, scaled to its norm <= 1 and back by a power of two (exact)."""
    square = SIMILARITY_SCALE * SIMILARITY_SCALE
    found = search(queries / SIMILARITY_SCALE, keys / SIMILARITY_SCALE, threshold / square, **kwargs)
    found.score, found.best_score = found.score * square, found.best_score * square
    return found


def identity_neighbours(stats: IdentityStats, threshold: float, device: str = "cpu", progress: bool = False) -> Neighbours:
    """Most similar other identity of each identity and the identity pairs (a < b, as rows of `stats`) whose
    similarity is >= threshold."""
    rows = similarity_rows(stats)
    found = _similarity_search(rows, rows, threshold, exclude_self=True, device=device, progress=progress,
                               desc="identities")
    once = found.query < found.key
    found.query, found.key, found.score = found.query[once], found.key[once], found.score[once]
    return found


def centroids(stats: IdentityStats) -> np.ndarray:
    """(C, D) normalised identity centroids."""
    return stats.means / np.maximum(stats.consistency[:, None], 1e-12)


def reference_identity_matches(reference: IdentityStats, train: IdentityStats, threshold: float, device: str = "cpu",
                               progress: bool = False, desc: str = "reference identities") -> Neighbours:
    """(reference identity row, training identity row) pairs whose similarity is >= threshold: leakage at the
    identity level, which averages away the per-image noise that makes single genuine pairs miss the threshold."""
    return _similarity_search(similarity_rows(reference), similarity_rows(train), threshold, device=device,
                              progress=progress, desc=desc)


def centroid_cosine(a: IdentityStats, rows_a: np.ndarray, b: IdentityStats, rows_b: np.ndarray) -> np.ndarray:
    """Cosine between the normalised centroids of identities a[rows_a[k]] and b[rows_b[k]]."""
    return np.einsum("ij,ij->i", centroids(a)[rows_a], centroids(b)[rows_b])


def mean_cosine(stats: IdentityStats, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Mean cosine over all (image of a, image of b) pairs, for rows a[k], b[k]."""
    return np.einsum("ij,ij->i", stats.means[a], stats.means[b])
