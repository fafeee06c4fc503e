"""Demographic fairness of a verification model: the figures papers print for RFW, and NIST's
demographic differentials at one global threshold.

Per group (its own pair set), with the five sets' protocol (flip-fused features, squared L2,
10 contiguous folds, thresholds arange(0, 4, 0.01)): mean accuracy and its std over folds (ddof 0);
TAR at FAR 1e-4 and 1e-3 by the literature's nearest-ROC-point rule on the group's cosine scores.
Across groups: the mean accuracy, STD = the standard deviation of the group accuracies (ddof 0, as
RFW papers print it), and SER = skewed error ratio = highest group error / lowest group error
(None when the lowest error is 0).
At one global threshold, as a deployed system runs: the cosine threshold where the impostor pairs
of all groups pooled reach the target FMR (default 1e-3; `facetrain.eval.calibration`'s rule: accept
when similarity >= threshold, achieved FMR <= target). Per group its FMR (impostors accepted) and
FNMR (genuine pairs rejected), and the max/min ratio of each across groups (None when a minimum is 0):
per-group 10-fold accuracy picks each group's own threshold and hides that one group may get ten
times the false matches of another at the threshold actually deployed.
"""
from __future__ import annotations

from typing import Mapping

import numpy as np

from facetrain.errors import DataError
from facetrain.eval.calibration import threshold_at_far
from facetrain.eval.roc import roc_curve, tar_at_far
from facetrain.eval.verification import kfold_accuracy

GROUP_FARS = (1e-4, 1e-3)
DEFAULT_FMR = 1e-3


def _ratio(values: list[float]) -> float | None:
    low = min(values)
    return None if low <= 0 else max(values) / low


def fairness_metrics(scores: Mapping[str, tuple[np.ndarray, np.ndarray]], fmr: float = DEFAULT_FMR,
                     nrof_folds: int = 10) -> dict:
    """`scores`: {group: (cosine similarity per pair, issame per pair)}, pairs in their file order.
    Returns {"groups": {...}, "summary": {...}, "global_threshold": {...}} (see the module)."""
    if len(scores) < 2:
        raise DataError(f"fairness needs at least two groups, got {sorted(scores)}")
    groups: dict[str, dict] = {}
    pooled_genuine, pooled_impostor = [], []
    for name, (cosine, issame) in scores.items():
        cosine, issame = np.asarray(cosine, np.float64).reshape(-1), np.asarray(issame, bool).reshape(-1)
        if issame.all() or not issame.any():
            raise DataError(f"group {name}: needs genuine and impostor pairs, got {int(issame.sum())} genuine of "
                            f"{len(issame)}")
        folds = kfold_accuracy(2.0 - 2.0 * cosine, issame, nrof_folds)["fold_accuracies"]
        fpr, tpr, _ = roc_curve(issame, cosine)
        tars = tar_at_far(fpr, tpr, GROUP_FARS)
        groups[name] = {"accuracy": float(folds.mean()), "std": float(folds.std()), "pairs": int(len(issame)),
                        **{f"tar_at_far_{far:g}": tars[far] for far in GROUP_FARS}}
        pooled_genuine.append(cosine[issame])
        pooled_impostor.append(cosine[~issame])
    calibration = threshold_at_far(np.concatenate(pooled_genuine), np.concatenate(pooled_impostor), fmr)
    for (name, entry), genuine, impostor in zip(groups.items(), pooled_genuine, pooled_impostor):
        entry["fmr"] = float((impostor >= calibration.threshold).mean())
        entry["fnmr"] = float((genuine < calibration.threshold).mean())
    accuracies = [g["accuracy"] for g in groups.values()]
    errors = [1.0 - a for a in accuracies]
    return {
        "groups": groups,
        "summary": {
            "mean_accuracy": float(np.mean(accuracies)),
            "std": float(np.std(accuracies)),
            "ser": _ratio(errors),
            "best_group": max(groups, key=lambda g: groups[g]["accuracy"]),
            "worst_group": min(groups, key=lambda g: groups[g]["accuracy"]),
        },
        "global_threshold": {
            "fmr_target": fmr,
            "threshold_cosine": calibration.threshold,
            "achieved_fmr": calibration.achieved_far,
            "impostor_pairs": calibration.impostor_pairs,
            "fmr_ratio": _ratio([g["fmr"] for g in groups.values()]),
            "fnmr_ratio": _ratio([g["fnmr"] for g in groups.values()]),
        },
        "protocol": "per group: 10-fold accuracy (squared L2, thresholds arange(0,4,0.01)), TAR at the nearest ROC "
                    "point; STD ddof 0; SER = max error / min error; FMR/FNMR at one threshold set on all groups' "
                    "impostors pooled",
    }


def group_scores(model, sets: Mapping[str, object], batch_size: int = 256, device=None, precision: str = "fp32",
                 progress: bool = True) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """{group: (cosine per pair, issame)} of each group's `VerificationSet`, flip-fused features."""
    from facetrain.eval.calibration import pair_similarities

    out = {}
    for name, vset in sets.items():
        out[name] = (pair_similarities(model, vset.images, batch_size, device, precision, progress, name),
                     np.asarray(vset.issame, bool))
    return out


def format_fairness(result: dict) -> str:
    """The per-group table, the summary line and the global-threshold line."""
    header = f"{'group':<12}{'accuracy':>10}{'std':>8}{'TAR@1e-4':>10}{'TAR@1e-3':>10}{'FMR':>10}{'FNMR':>9}"
    lines = [header, "-" * len(header)]
    for name, g in result["groups"].items():
        lines.append(f"{name:<12}{g['accuracy'] * 100:>9.2f}%{g['std'] * 100:>7.2f}%{g['tar_at_far_0.0001']:>10.4f}"
                     f"{g['tar_at_far_0.001']:>10.4f}{g['fmr']:>10.2e}{g['fnmr']:>9.4f}")
    s, t = result["summary"], result["global_threshold"]
    ser = "n/a (a group makes no error)" if s["ser"] is None else f"{s['ser']:.2f}"
    lines.append(f"mean {s['mean_accuracy'] * 100:.2f}%  STD {s['std'] * 100:.2f}  SER {ser}")

    def ratio(value: float | None) -> str:
        return "n/a (a group at 0)" if value is None else f"{value:.2f}"

    lines.append(f"global threshold {t['threshold_cosine']:.4f} (FMR {t['fmr_target']:g} on {t['impostor_pairs']} pooled "
                 f"impostors): FMR max/min {ratio(t['fmr_ratio'])}, FNMR max/min {ratio(t['fnmr_ratio'])}")
    return "\n".join(lines)
