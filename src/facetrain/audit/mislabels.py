"""Suspected mislabelled images: an image nearer another identity than its own.

For every image: the cosine to its own identity's centroid without it (leave-one-out: an image cannot
vouch for itself) and to the nearest other identity's centroid. Label noise (a web image filed under the
wrong name) and identity drift (a generated image that became someone else) both leave an image whose
nearest centroid is another identity's. An image is suspected when the other identity is nearer by more
than `MARGIN`, or when its own identity is no nearer than another identity's centroid typically is (its own
cosine below the median of (image, other identity's centroid) cosines: a stranger in the folder). Identities
with a single image have no leave-one-out centroid and are not judged.
"""
from __future__ import annotations

import numpy as np
import torch

from facetrain.audit.chance import ImpostorFit, fit_impostors
from facetrain.audit.identities import IdentityStats, centroids
from facetrain.audit.sources import AuditSet
from facetrain.audit.threshold import SAMPLING_SEED, sampled_rows

# how much nearer another identity must be: a trained model's own training images scatter around their
# centroid, and one in a hundred is nearer another by 0.28 (measured with the test model, 200 identities);
# an image filed under the wrong identity is nearer its true one by 0.9 (median)
MARGIN = 0.3
TILE_BYTES = 256 * 2**20


def own_and_nearest(embeddings: np.ndarray, labels: np.ndarray, stats: IdentityStats, device: str = "cpu"
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(leave-one-out own-centroid cosine (NaN for single images), nearest other centroid's row in `stats`,
    its cosine) per image; tiles of images against all centroids, in bounded memory."""
    rows = stats.index_of()[labels]
    counts = stats.counts[rows].astype(np.float64)
    loo = stats.means[rows] * counts[:, None] - embeddings
    norms = np.linalg.norm(loo, axis=1)
    own = np.where(counts > 1, np.einsum("ij,ij->i", embeddings, loo) / np.maximum(norms, 1e-12), np.nan)
    unit = torch.from_numpy(np.ascontiguousarray(centroids(stats), dtype=np.float32)).to(device)
    nearest = np.full(len(labels), -1, np.int64)
    nearest_cos = np.full(len(labels), -np.inf, np.float32)
    step = max(1, TILE_BYTES // (4 * max(len(unit), 1)))
    with torch.inference_mode():
        for s in range(0, len(labels), step):
            e = torch.from_numpy(np.ascontiguousarray(embeddings[s : s + step], dtype=np.float32)).to(device)
            scores = e @ unit.T
            scores[torch.arange(len(e), device=device), torch.from_numpy(rows[s : s + step]).to(device)] = -torch.inf
            best, arg = scores.max(1)
            nearest[s : s + step], nearest_cos[s : s + step] = arg.cpu().numpy(), best.cpu().numpy()
    return own.astype(np.float32), nearest, nearest_cos


def image_centroid_fit(embeddings: np.ndarray, labels: np.ndarray, stats: IdentityStats) -> ImpostorFit | None:
    """Normal fit of (image, another identity's centroid) cosines, among at most 4096 of each."""
    rng = np.random.default_rng(SAMPLING_SEED)
    images = sampled_rows(len(labels), rng)
    cols = sampled_rows(len(stats.labels), rng)
    scores = embeddings[images].astype(np.float32) @ centroids(stats)[cols].T.astype(np.float32)
    other = stats.index_of()[labels[images]][:, None] != cols[None, :]
    return fit_impostors(scores[other], "image x other identity's centroid pairs")


def suspected_mislabels(data: AuditSet, embeddings: np.ndarray, stats: IdentityStats, device: str = "cpu") -> dict:
    """The `intra_class` entries: the rule, its floor and the suspects, worst first (largest nearest - own)."""
    own, nearest, nearest_cos = own_and_nearest(embeddings, data.labels, stats, device)
    fit = image_centroid_fit(embeddings, data.labels, stats) if len(stats.labels) > 1 else None
    floor = fit.median_cosine if fit is not None else None
    judged = np.isfinite(own) & (nearest >= 0)
    suspect = judged & ((nearest_cos > own + MARGIN) | ((own < floor) if floor is not None else False))
    order = np.flatnonzero(suspect)
    order = order[np.argsort(-(nearest_cos[order] - own[order]), kind="stable")]
    entries = [{"image": data.image_name(i), "identity": data.class_name(data.labels[i]),
                "nearest_identity": data.class_name(stats.labels[nearest[i]]),
                "own_cosine": round(float(own[i]), 6), "nearest_cosine": round(float(nearest_cos[i]), 6)}
               for i in order]
    return {"mislabel_rule": f"nearest other identity's centroid cosine > own leave-one-out centroid cosine + "
                             f"{MARGIN}, or own cosine below the median of (image, other identity's centroid) cosines",
            "mislabel_floor": floor, "mislabel_floor_fit": fit.as_json() if fit is not None else None,
            "judged_images": int(judged.sum()), "suspected_mislabels": entries,
            "suspected_share": float(len(entries) / max(int(judged.sum()), 1))}
