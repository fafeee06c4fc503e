"""The sections of `audit.json` (strict JSON: plain numbers, no NaN), built from embeddings-derived results."""
from __future__ import annotations

import numpy as np

from facetrain.audit.identities import IdentityStats, centroid_cosine, mean_cosine, mean_pair_cosine
from facetrain.audit.neighbours import Neighbours
from facetrain.audit.sources import AuditSet

COSINE_BINS = np.linspace(-1.0, 1.0, 101)


def distribution(values: np.ndarray) -> dict:
    values = np.asarray(values, np.float64)
    if not len(values):
        return {"count": 0}
    p05, p50, p95 = np.percentile(values, [5, 50, 95])
    return {"count": int(len(values)), "mean": float(values.mean()), "min": float(values.min()), "p05": float(p05),
            "p50": float(p50), "p95": float(p95), "max": float(values.max())}


def histogram(values: np.ndarray, bins: np.ndarray = COSINE_BINS) -> dict:
    counts, edges = np.histogram(np.clip(values, bins[0], bins[-1]), bins)
    return {"edges": [round(float(e), 6) for e in edges], "counts": counts.tolist()}


def summary_section(data: AuditSet, stats: IdentityStats) -> dict:
    counts = stats.counts
    edges = np.unique(np.r_[1, np.geomspace(1, max(counts.max(), 1) + 1, 16).astype(int)])
    hist, edges = np.histogram(counts, edges)
    return {"data": data.description, "identities": int(len(counts)), "images": int(len(data)),
            "identities_without_images": int(len(data.classes) - len(counts)) if data.classes is not None else 0,
            "images_per_identity": {"min": int(counts.min()), "median": float(np.median(counts)), "max": int(counts.max()),
                                    "histogram": {"edges": edges.tolist(), "counts": hist.tolist()}}}


def mean_pair_angles(embeddings: np.ndarray, labels: np.ndarray, stats: IdentityStats) -> np.ndarray:
    """Mean angle (degrees) over the pairs of distinct images of each identity (NaN for one image): diversity,
    the spread a cosine mean hides (angles add up where cosines saturate). Identity by identity."""
    order = np.argsort(labels, kind="stable")
    bounds = np.r_[0, np.cumsum(stats.counts)]
    out = np.full(len(stats.counts), np.nan)
    for r in np.flatnonzero(stats.counts > 1):
        e = np.asarray(embeddings[order[bounds[r] : bounds[r + 1]]], np.float32)
        i, j = np.triu_indices(len(e), 1)
        out[r] = float(np.degrees(np.arccos(np.clip((e @ e.T)[i, j], -1.0, 1.0))).mean())
    return out


def uniqueness(stats: IdentityStats, clusters: list[list[int]]) -> float:
    """Share of identities in no collision cluster."""
    return 1.0 - sum(len(c) for c in clusters) / len(stats.labels)


def intra_section(data: AuditSet, stats: IdentityStats, top: int, embeddings: np.ndarray) -> dict:
    consistency, pair_mean = stats.consistency, mean_pair_cosine(stats)
    angles = mean_pair_angles(embeddings, data.labels, stats)
    order = np.argsort(consistency, kind="stable")[:top]
    per_identity = [{"identity": data.class_name(label), "images": int(n), "consistency": round(float(c), 6),
                     "mean_pair_cosine": round(float(p), 6)}
                    for label, n, c, p in zip(stats.labels, stats.counts, consistency, pair_mean)]
    return {"definition": "consistency = mean cosine of an identity's images to their normalised centroid",
            "distribution": distribution(consistency), "mean_pair_cosine": distribution(pair_mean[stats.counts > 1]),
            "diversity_degrees": distribution(angles[np.isfinite(angles)]),
            "least_consistent": [per_identity[k] for k in order], "per_identity": per_identity}


SIMILARITY = ("similarity between identities a and b = cosine between their normalised centroids divided by both "
              "identities' reliability (sqrt(mean pair cosine) / consistency); cosine = between normalised centroids; "
              "mean_cosine = mean cosine over all (image of a, image of b) pairs")


def inter_section(data: AuditSet, stats: IdentityStats, found: Neighbours) -> dict:
    rows = np.flatnonzero(found.best_key >= 0)
    cross = mean_cosine(stats, rows, found.best_key[rows])
    cosine = centroid_cosine(stats, rows, stats, found.best_key[rows])
    nearest = [{"identity": data.class_name(stats.labels[r]), "nearest": data.class_name(stats.labels[found.best_key[r]]),
                "similarity": round(float(found.best_score[r]), 6), "cosine": round(float(c), 6),
                "mean_cosine": round(float(m), 6)} for r, c, m in zip(rows, cosine, cross)]
    return {"definition": SIMILARITY, "nearest_distribution": distribution(found.best_score[rows]),
            "nearest_histogram": histogram(found.best_score[rows]), "nearest": nearest}


def collisions_section(data: AuditSet, stats: IdentityStats, found: Neighbours, clusters: list[list[int]]) -> dict:
    order = np.argsort(-found.score, kind="stable")
    cross = mean_cosine(stats, found.query, found.key)
    cosine = centroid_cosine(stats, found.query, stats, found.key)
    pairs = [{"a": data.class_name(stats.labels[found.query[k]]), "b": data.class_name(stats.labels[found.key[k]]),
              "similarity": round(float(found.score[k]), 6), "cosine": round(float(cosine[k]), 6),
              "mean_cosine": round(float(cross[k]), 6)} for k in order]
    groups = []
    for members in clusters:
        keep = max(members, key=lambda r: (stats.counts[r], -r))  # most images, then the first label
        groups.append({"identities": [data.class_name(stats.labels[r]) for r in members],
                       "images": int(stats.counts[members].sum()), "keep": data.class_name(stats.labels[keep])})
    return {"pairs": pairs, "clusters": groups,
            "identities_involved": int(sum(len(c) for c in clusters)),
            "identities_to_drop": int(sum(len(c) - 1 for c in clusters))}
