"""Validation during training and the final test: the verification sets under `--val_data_path`,
evaluated with the shared protocol of `facetrain.eval.verification` (docs/evaluation.md)."""
from __future__ import annotations

import warnings
from typing import Mapping

import torch
from torch import nn

from facetrain.data.formats.memfile import find_validation_sets, load_validation_sets
from facetrain.data.guards.paths import resolve_data_path
from facetrain.data.formats.verification_set import VerificationSet
from facetrain.errors import DataError
from facetrain.eval.verification import check_pair_counts, evaluate_verification_sets, l2_to_cosine


def load_val_sets(data_root: str, val_data_path: str) -> dict[str, VerificationSet]:
    """Every set found; {} with a warning when there is none (training still runs, without a best
    checkpoint by accuracy). Sets that exist but are broken are errors."""
    try:
        root = resolve_data_path(data_root, val_data_path, "validation data (--val_data_path)")
    except DataError as exc:
        warnings.warn(f"{exc}: training without validation", stacklevel=2)
        return {}
    if not find_validation_sets(root):
        warnings.warn(f"{root}: no verification sets (.bin or memfiles) found: training without validation",
                      stacklevel=2)
        return {}
    sets = load_validation_sets(root)
    check_pair_counts(sets)  # now, not at the end of the first epoch
    return sets


def validate(model: nn.Module, sets: Mapping[str, VerificationSet], batch_size: int, precision: str,
             channels_last: bool, progress: bool, device: torch.device | None = None) -> dict[str, dict]:
    """Per-set metrics of the shared protocol (accuracy, std, best_threshold, TAR@FAR, ...) and 'average',
    computed on `device` (the training device: a checkpoint loaded to the CPU is moved there for the
    pass and back; None keeps the model where it is). On GPUs the batch is at least 512."""
    return evaluate_verification_sets(model, sets, batch_size=batch_size, device=device, precision=precision,
                                      channels_last=channels_last, progress=progress)


def mean_threshold(results: Mapping[str, Mapping[str, float]]) -> tuple[float, float]:
    """(squared-L2, cosine) decision threshold: the mean over the standard sets, else over all sets."""
    average = results["average"]
    if average.get("sets"):
        return average["best_threshold"], average["best_threshold_cosine"]
    names = [name for name in results if name != "average"]
    l2 = sum(results[n]["best_threshold"] for n in names) / len(names)
    return l2, l2_to_cosine(l2)


def validation_logs(results: Mapping[str, Mapping[str, float]]) -> dict[str, float]:
    """AdaFace's logged names: `<set>_val_acc`, `<set>_best_threshold`, `<set>_num_val_samples`, and
    `val_acc`, the mean over the standard sets present (over all sets when none is standard)."""
    names = [name for name in results if name != "average"]
    logs: dict[str, float] = {}
    for name in names:
        logs[f"{name}_val_acc"] = results[name]["accuracy"]
        logs[f"{name}_best_threshold"] = results[name]["best_threshold"]
        logs[f"{name}_num_val_samples"] = 2 * results[name]["pairs"]
    average = results["average"]["accuracy"]
    if average != average:  # NaN: none of the five standard sets, e.g. only cfp_ff or custom sets
        average = sum(results[n]["accuracy"] for n in names) / len(names)
    logs["val_acc"] = average
    return logs
