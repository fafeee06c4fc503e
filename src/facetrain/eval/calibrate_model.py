"""Calibrating a model file on pair sets: load, embed every pair, pool, and set the threshold."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import numpy as np

from facetrain.eval.calibration import Calibration, check_far, pair_similarities, threshold_at_far
from facetrain.fingerprint import tree_sha256


def load_pair_sets(path: str | os.PathLike, sets: Sequence[str] | None = None) -> dict:
    """{name: VerificationSet} of a .bin file, or of the .bin files / memfiles in a folder."""
    from facetrain.data.formats.bin import read_bin
    from facetrain.data.formats.memfile import load_validation_sets

    path = Path(path)
    if path.is_file():
        vset = read_bin(path)
        return {vset.name: vset}
    return load_validation_sets(path, list(sets) if sets else None)


def calibrate_model(ckpt: str | os.PathLike, pairs: str | os.PathLike, far: float = 1e-4,
                    sets: Sequence[str] | None = None, level: float = 0.95, batch_size: int = 256, device=None,
                    precision: str = "fp32", progress: bool = True) -> tuple[dict, Calibration, Path]:
    """(the record to store, the calibration, the model file) of `ckpt` at `far` on the pooled pairs."""
    from facetrain.checkpoint import load_backbone
    from facetrain.models.released import resolve_checkpoint

    check_far(far, level)
    model_path, arch = resolve_checkpoint(ckpt)
    model, _ = load_backbone(model_path, arch=arch)
    pair_sets = load_pair_sets(pairs, sets)
    genuine, impostor = [], []
    for name, vset in pair_sets.items():
        similarity = pair_similarities(model, vset.images, batch_size, device, precision, progress, name)
        issame = np.asarray(vset.issame, bool)
        genuine.append(similarity[issame])
        impostor.append(similarity[~issame])
    result = threshold_at_far(np.concatenate(genuine), np.concatenate(impostor), far, level)
    record = {**result.as_dict(), "pairs": {"path": str(pairs), "sets": sorted(pair_sets),
                                            "sha256": tree_sha256(pairs)},
              "protocol": "cosine of flip-fused features; same person when similarity >= threshold"}
    return record, result, Path(model_path)
