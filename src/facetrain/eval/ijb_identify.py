"""IJB 1:N identification (insightface's ijb_1n.py protocol): mixed probes against G1+G2 galleries.

- Rank-k (top-1/5/10): the probe's mated gallery template is among its k most similar.
  Computed as "fewer than k gallery templates score strictly higher than the mate" (equal to
  insightface's argsort except for exactly tied scores).
- TPIR at FPIR (insightface's definition, kept for comparability): over all non-mated
  probe-gallery scores, the threshold is the ceil(n_probes * fpir)-th largest; TPIR is the
  fraction of probes whose mated score exceeds it.
"""
from __future__ import annotations

import math

import numpy as np

from facetrain.errors import DataError
from facetrain.eval.ijb_data import IdentificationLists
from facetrain.eval.ijb_verify import template_features, template_rows

RANKS = (1, 5, 10)
FPIRS = (0.01, 0.1)


def unique_template_subjects(templates: np.ndarray, subjects: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sorted unique templates of a list and the subject of each (first occurrence, as insightface)."""
    unique, first = np.unique(templates, return_index=True)
    return unique, subjects[first]


def mate_indices(probe_subjects: np.ndarray, gallery_subjects: np.ndarray, source: str) -> np.ndarray:
    """Index of the one gallery template of each probe's subject; DataError when none or several."""
    order = np.argsort(gallery_subjects, kind="stable")
    sorted_subjects = gallery_subjects[order]
    left = np.searchsorted(sorted_subjects, probe_subjects, side="left")
    right = np.searchsorted(sorted_subjects, probe_subjects, side="right")
    bad = (right - left) != 1
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise DataError(f"{source}: probe subject {int(probe_subjects[i])} has {int(right[i] - left[i])} "
                        "gallery templates (exactly one expected)")
    return order[left]


def identification_metrics(probe_feats: np.ndarray, gallery_feats: np.ndarray, mates: np.ndarray,
                           ranks=RANKS, fpirs=FPIRS, chunk: int = 2048) -> dict[str, float]:
    """Rank-k accuracy and TPIR@FPIR of unit probe / gallery features; `mates[i]` = gallery row of probe i."""
    n = len(probe_feats)
    keep = max(math.ceil(n * f) for f in fpirs)
    hits = {k: 0 for k in ranks}
    mated = np.empty(n, np.float64)
    top_negatives = np.empty(0, np.float64)
    for s in range(0, n, chunk):
        sims = probe_feats[s : s + chunk] @ gallery_feats.T
        rows = np.arange(len(sims))
        mate_sims = sims[rows, mates[s : s + chunk]]
        mated[s : s + chunk] = mate_sims
        higher = (sims > mate_sims[:, None]).sum(1)
        for k in ranks:
            hits[k] += int((higher < k).sum())
        sims[rows, mates[s : s + chunk]] = -np.inf
        negatives = sims.reshape(-1)
        if len(negatives) > keep:
            negatives = np.partition(negatives, len(negatives) - keep)[-keep:]
        top_negatives = np.concatenate([top_negatives, negatives])
        if len(top_negatives) > keep:
            top_negatives = np.partition(top_negatives, len(top_negatives) - keep)[-keep:]
    top_negatives = np.sort(top_negatives)[::-1]
    result = {f"top{k}": hits[k] / n for k in ranks}
    for fpir in fpirs:
        threshold = top_negatives[math.ceil(n * fpir) - 1]
        result[f"tpir@fpir={fpir:g}"] = float(np.sum(mated > threshold) / n)
    return result


def evaluate_identification(img_feats: np.ndarray, templates: np.ndarray, medias: np.ndarray,
                            lists: IdentificationLists) -> dict[str, float]:
    """Template features for gallery and probes from the same image features as 1:1, then the metrics."""
    source = ", ".join(str(p) for p in lists.files)
    feats, unique = template_features(img_feats, templates, medias)
    gal_t, gal_s = unique_template_subjects(lists.gallery_templates, lists.gallery_subjects)
    probe_t, probe_s = unique_template_subjects(lists.probe_templates, lists.probe_subjects)
    gallery = feats[template_rows(unique, gal_t, source)]
    probes = feats[template_rows(unique, probe_t, source)]
    mates = mate_indices(probe_s, gal_s, source)
    result = identification_metrics(probes, gallery, mates)
    return {"probes": int(len(probe_t)), "gallery": int(len(gal_t)), **result}
