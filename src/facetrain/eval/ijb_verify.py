"""IJB 1:1 verification: image features for a mode, template pooling, chunked scoring, TAR@FAR.

Modes. AdaFace (validate_IJB_BC.py, the default): fuse image and flip with `fusion_method`; the
fused unit feature is multiplied back by its norm only for `pre_norm_vector_add`; the faceness
score is not used. insightface (ijb_11.py, "N1D1F2"): the un-normalised image + flip sum (=
pre_norm_vector_add with the norm kept), `use_norm_score` keeps the norm (N1) or not (N0),
`use_detector_score` multiplies by the faceness score (D1).
Template = mean of the images of each media, summed over media, L2-normalised; score = cosine.
"""
from __future__ import annotations

import numpy as np
from tqdm import tqdm

from facetrain.errors import DataError
from facetrain.eval.fusion import fuse_flip
from facetrain.eval.roc import FAR_TARGETS, auc, roc_curve, tar_at_far


def mode_name(fusion_method: str, use_flip_test: bool, use_norm_score: bool | None, use_detector_score: bool) -> str:
    """E.g. 'pre_norm_vector_add-F1N1D0': fusion, flip (F), norm kept (N), detector score (D)."""
    norm = resolve_norm_score(fusion_method, use_norm_score)
    return f"{fusion_method}-F{int(use_flip_test)}N{int(norm)}D{int(use_detector_score)}"


def resolve_norm_score(fusion_method: str, use_norm_score: bool | None) -> bool:
    """None = AdaFace's rule: the norm is kept only for pre_norm_vector_add."""
    return fusion_method == "pre_norm_vector_add" if use_norm_score is None else use_norm_score


def mode_features(features: np.ndarray, flip_features: np.ndarray | None, faceness: np.ndarray,
                  fusion_method: str = "pre_norm_vector_add", use_flip_test: bool = True,
                  use_norm_score: bool | None = None, use_detector_score: bool = False) -> np.ndarray:
    """Per-image features to pool into templates, for one evaluation mode (float32, as the references)."""
    if use_flip_test and flip_features is None:
        raise ValueError("flip test requested but no flip features were extracted")
    unit, norm = fuse_flip(features, flip_features if use_flip_test else None,
                           fusion_method if use_flip_test else "none")
    out = unit * norm if resolve_norm_score(fusion_method, use_norm_score) else unit
    if use_detector_score:
        out = out * faceness[:, None]
    return out.astype(np.float32, copy=False)


def template_features(img_feats: np.ndarray, templates: np.ndarray, medias: np.ndarray,
                      chunk_images: int = 65536) -> tuple[np.ndarray, np.ndarray]:
    """(L2-normalised template features float64 (T, D), sorted unique template ids).

    Sums run in float64 (insightface averages media in float32): equal to float32 precision.
    """
    order = np.lexsort((medias, templates))
    t_sorted, m_sorted = templates[order], medias[order]
    new_media = np.r_[True, (np.diff(t_sorted) != 0) | (np.diff(m_sorted) != 0)]
    media_starts = np.flatnonzero(new_media)
    media_counts = np.diff(np.r_[media_starts, len(order)])
    media_sum = np.empty((len(media_starts), img_feats.shape[1]), np.float64)
    # reduce in chunks of whole media so no float64 copy of all image features is ever made
    bounds = media_starts[:: max(1, chunk_images // max(1, int(media_counts.mean())))]
    bounds = np.r_[bounds, len(order)]
    done = 0
    for lo, hi in zip(bounds[:-1], bounds[1:]):
        starts = media_starts[(media_starts >= lo) & (media_starts < hi)]
        chunk = img_feats[order[lo:hi]].astype(np.float64)
        media_sum[done : done + len(starts)] = np.add.reduceat(chunk, starts - lo, axis=0)
        done += len(starts)
    media_mean = media_sum / media_counts[:, None]
    media_template = t_sorted[media_starts]
    template_starts = np.flatnonzero(np.r_[True, np.diff(media_template) != 0])
    feats = np.add.reduceat(media_mean, template_starts, axis=0)
    norms = np.linalg.norm(feats, axis=1, keepdims=True)
    return feats / np.where(norms > 0, norms, 1), media_template[template_starts]


def template_rows(unique_templates: np.ndarray, ids: np.ndarray, source: str = "pairs") -> np.ndarray:
    """Row index of each template id; DataError for ids that have no images."""
    rows = np.searchsorted(unique_templates, ids)
    rows = np.minimum(rows, len(unique_templates) - 1)
    bad = unique_templates[rows] != ids
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise DataError(f"{source}: entry {i + 1} refers to template {int(ids[i])}, which has no images")
    return rows


def score_pairs(feats: np.ndarray, rows1: np.ndarray, rows2: np.ndarray, block: int = 1024,
                progress: bool = True) -> np.ndarray:
    """Cosine of template pairs (rows of unit `feats`), computed as blocked matrix products.

    Pairs are grouped by their smaller row; each block of `block` rows is multiplied with only the
    columns its pairs use, so memory stays at block x templates and the work runs in BLAS.
    """
    lo, hi = np.minimum(rows1, rows2), np.maximum(rows1, rows2)
    order = np.argsort(lo, kind="stable")
    starts = np.searchsorted(lo[order], np.arange(0, len(feats) + block, block))
    scores = np.empty(len(lo), np.float64)
    used = np.zeros(len(feats), bool)
    for k in tqdm(range(len(starts) - 1), desc="scoring", disable=None if progress else True, leave=False):
        if starts[k] == starts[k + 1]:
            continue
        sel = order[starts[k] : starts[k + 1]]
        cols = hi[sel]
        used[:] = False
        used[cols] = True
        columns = np.flatnonzero(used)
        position = np.cumsum(used) - 1
        sims = feats[k * block : (k + 1) * block] @ feats[columns].T
        scores[sel] = sims[lo[sel] - k * block, position[cols]]
    return scores


def verification_metrics(scores: np.ndarray, labels: np.ndarray, far_targets=FAR_TARGETS) -> dict:
    """TAR at each FAR target (nearest-FPR rule), AUC and the ROC arrays."""
    fpr, tpr, _ = roc_curve(labels, scores)
    return {"tar_at_far": tar_at_far(fpr, tpr, far_targets), "auc": auc(fpr, tpr), "fpr": fpr, "tpr": tpr,
            "pairs": int(len(scores)), "genuine": int(np.sum(labels != 0))}
