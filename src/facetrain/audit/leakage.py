"""Leakage of one reference set into the training set, at the image and the identity level, with a verdict.

Each level has its own threshold (see `audit.calibrate`) and a chance count from the same impostor fit; the
verdict is `audit.chance.excess_test`'s. Only a significant excess counts as leakage: its pairs (those at or
above the level where the excess lies) are marked `"excess": true`, and only they are dropped by
`--write_filtered` and counted in the summary's leaked images.
"""
from __future__ import annotations

from typing import Callable

import numpy as np

from facetrain.audit.calibrate import identity_leak_fit, image_leak_fit, notice, threshold_from_fit
from facetrain.audit.chance import ChanceModel, ImpostorFit, excess_test, fit_tail
from facetrain.audit.identities import IdentityStats, centroid_cosine, identity_stats, reference_identity_matches
from facetrain.audit.neighbours import Neighbours, search
from facetrain.audit.sections import distribution, histogram
from facetrain.audit.sources import AuditSet
from facetrain.audit.threshold import Threshold, cross_scores
from facetrain.errors import ConfigError


def _level(given: float | None, far: float, fit: ImpostorFit | None, what: str) -> Threshold:
    if fit is not None:
        return threshold_from_fit(fit, far, given)
    if given is None:
        raise ConfigError(f"{what}: no impostor pairs to calibrate a threshold; pass --threshold or --calibration")
    return Threshold(float(given), "given")


def _test(scores: np.ndarray, compared: int, fit: ImpostorFit | None, threshold: Threshold,
          score: str = "cosine") -> dict | None:
    return None if fit is None else excess_test(scores, compared, fit, threshold.value, score=score)


def _flag(score: float, test: dict | None) -> bool:
    return bool(test and test["significant"] and score >= test["excess_level"])


def audit_reference(ref: AuditSet, ref_emb: np.ndarray, data: AuditSet, train_emb: np.ndarray, stats: IdentityStats,
                    given: float | None, far: float, calibration: ImpostorFit | None,
                    training_fit: Callable[[], ImpostorFit | None], device: str, progress: bool
                    ) -> tuple[dict, Neighbours]:
    """(the reference's `leakage` section, its image pairs above the threshold)."""
    fit = image_leak_fit(ref, ref_emb, calibration, training_fit)
    if fit is not None:
        fit = ChanceModel(fit, fit_tail(cross_scores(ref_emb, train_emb), f"{ref.name} x training image pairs"))
    threshold = _level(given, far, fit, ref.name)
    found = search(ref_emb, train_emb, threshold.value, device=device, progress=progress, desc=f"leakage {ref.name}")
    test = _test(found.score, len(ref) * len(data), fit, threshold)
    section = {"description": ref.description, "images": int(len(ref)), "threshold": threshold.as_json(),
               "pair_count": int(len(found.score)),
               "expected_by_chance": None if test is None else round(test["expected_by_chance"], 4),
               "chance": test, "verdict": test["verdict"] if test else "no impostor pairs: no verdict"}
    order = np.lexsort((found.key, found.query, -found.score))
    pairs = []
    for k in order:
        pair = {"reference": ref.image_name(found.query[k]), "train": data.image_name(found.key[k]),
                "train_identity": data.class_name(data.labels[found.key[k]]), "cosine": round(float(found.score[k]), 6),
                "excess": _flag(found.score[k], test)}
        if ref.labels is not None:
            pair["reference_identity"] = ref.class_name(ref.labels[found.query[k]])
        pairs.append(pair)
    ref_images, train_labels = set(found.query.tolist()), set(data.labels[found.key].tolist())
    ref_labels = set(ref.labels[list(ref_images)].tolist()) if ref.labels is not None else None
    identity_pairs, identity = None, None
    if ref.labels is not None:
        ref_stats = identity_stats(ref_emb, ref.labels)
        id_fit = identity_leak_fit(ref_stats, stats, ref.name)
        if id_fit is None and given is None:
            notice(f"{ref.name}: too few identity pairs to fit an identity-level threshold; using the image-level "
                   "one, which is stricter for identities")
        id_threshold = (threshold_from_fit(id_fit, far, given) if id_fit is not None
                        else Threshold(threshold.value, "image-level threshold"))
        matched = reference_identity_matches(ref_stats, stats, id_threshold.value, device, progress,
                                             f"leakage {ref.name} identities")
        id_test = _test(matched.score, len(ref_stats.labels) * len(stats.labels), id_fit, id_threshold, "similarity")
        identity_pairs = []
        cosine = centroid_cosine(ref_stats, matched.query, stats, matched.key)
        for k in np.lexsort((matched.key, matched.query, -matched.score)):
            ref_label, train_label = int(ref_stats.labels[matched.query[k]]), int(stats.labels[matched.key[k]])
            identity_pairs.append({"reference_identity": ref.class_name(ref_label),
                                   "train_identity": data.class_name(train_label),
                                   "similarity": round(float(matched.score[k]), 6), "cosine": round(float(cosine[k]), 6),
                                   "excess": _flag(matched.score[k], id_test)})
            ref_labels.add(ref_label)
            train_labels.add(train_label)
        identity = {"threshold": id_threshold.as_json(), "chance": id_test,
                    "verdict": id_test["verdict"] if id_test else "no centroid impostor fit: no verdict"}
    leaked_images = {p["train"] for p in pairs if p["excess"]}
    leaked_identities = {p["train_identity"] for p in (identity_pairs or []) if p["excess"]}
    section.update({
        "leak": bool((test and test["significant"]) or (identity and identity["chance"] and identity["chance"]["significant"])),
        "leaked_train_images": len(leaked_images), "leaked_train_identities": len(leaked_identities),
        "reference_images": len(ref_images), "reference_identities": len(ref_labels) if ref_labels is not None else None,
        "train_images": int(len(np.unique(found.key))), "train_identities": len(train_labels),
        "nearest_train_cosine": distribution(found.best_score), "nearest_histogram": histogram(found.best_score),
        "identity_level": identity, "pairs": pairs, "identity_pairs": identity_pairs})
    return section, found
