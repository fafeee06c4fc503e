"""Which impostor pairs set each of the audit's thresholds (see `audit.chance` for the fit).

- Collisions (training identity vs training identity, identity similarities: `audit.identities`): a fit on
  the training set's own identity pairs. A robust fit is not moved by the few collisions among them, which an empirical quantile
  is (in a dataset of 30 identities, one person split in two folders makes 25 of its ~44k image "impostor"
  pairs and sets the threshold at FAR 1e-4 by itself). It needs `MIN_FIT_IDENTITIES` identities; below
  that the threshold comes from `--calibration`, else from the dataset's image impostors with the
  collisions found left out (`DatasetImpostors`), with a notice.
- Leakage, image level (reference image vs training image): impostor pairs of identities the model has not
  seen, whose cosines run higher than those of the training identities it was trained to separate: a
  verification set's non-matching pairs, the different-identity pairs of a labelled reference folder, all
  pairs of a flat folder (identities unknown: any same-person pairs widen the fit), or `--calibration`'s.
- Leakage, identity level (reference identity vs training identity, identity similarities): a fit on all
  those identity pairs, which the few leaked identities among them do not move.
"""
from __future__ import annotations

import sys
from typing import Callable

import numpy as np

from facetrain.audit.chance import ImpostorFit, fit_impostors
from facetrain.audit.identities import IdentityStats, similarity_rows
from facetrain.audit.sources import AuditSet
from facetrain.audit.threshold import Threshold, cross_scores, pair_scores, within_pairs

MIN_FIT_IDENTITIES = 20  # 190 centroid pairs: enough to fit their spread; fewer fall back (with a notice)


def notice(message: str) -> None:
    print(f"notice: {message}", file=sys.stderr)


def threshold_from_fit(fit: ImpostorFit, far: float, given: float | None) -> Threshold:
    value = float(given) if given is not None else fit.threshold(far)
    return Threshold(value, "given" if given is not None else fit.source, None if given is not None else far,
                     fit.as_json() | {"fitted_far": fit.far(value)})


def verification_impostors(embeddings: np.ndarray, issame: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(genuine, impostor) cosines of a verification set's pairs (pair k = images 2k, 2k+1)."""
    scores = pair_scores(embeddings, np.arange(0, 2 * len(issame), 2), np.arange(1, 2 * len(issame), 2))
    return scores[issame], scores[~issame]


def collision_fit(stats: IdentityStats) -> ImpostorFit | None:
    """The fit on the similarities of the training set's identity pairs; None below MIN_FIT_IDENTITIES identities."""
    if len(stats.labels) < MIN_FIT_IDENTITIES:
        return None
    return fit_impostors(within_pairs(similarity_rows(stats), None)["scores"], "training centroid pairs")


def reference_fit(ref: AuditSet, embeddings: np.ndarray) -> ImpostorFit | None:
    """The fit on a reference set's own impostor pairs (identities the model has not seen); None when too few."""
    if ref.issame is not None:
        return fit_impostors(verification_impostors(embeddings, ref.issame)[1], f"non-matching pairs of {ref.name}")
    if ref.labels is not None:
        pairs = within_pairs(embeddings, ref.labels)
        return fit_impostors(pairs["scores"][~pairs["same"]], f"different-identity image pairs of {ref.name}")
    return fit_impostors(within_pairs(embeddings, None)["scores"],
                         f"image pairs of {ref.name} (identities unknown)")


def identity_leak_fit(ref_stats: IdentityStats, train_stats: IdentityStats, name: str) -> ImpostorFit | None:
    return fit_impostors(cross_scores(similarity_rows(ref_stats), similarity_rows(train_stats)),
                         f"{name} centroid x training centroid pairs")


def image_leak_fit(ref: AuditSet, embeddings: np.ndarray, calibration: ImpostorFit | None,
                   training: Callable[[], ImpostorFit | None]) -> ImpostorFit | None:
    """`--calibration`'s fit, else the reference's own, else (too few pairs) the training set's image impostors,
    which understate chance for unseen identities: said in a notice."""
    fit = calibration or reference_fit(ref, embeddings)
    if fit is None:
        fit = training()
        if fit is not None:
            fit.source = "training image impostors (seen identities: chance is understated)"
        notice(f"{ref.name}: too few impostor pairs of its own to calibrate leakage; using the training set's "
               "image impostors, which understate chance (pass --calibration VAL.bin)")
    return fit
