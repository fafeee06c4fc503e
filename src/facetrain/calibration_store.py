"""Where a model's calibrated threshold lives: inside our own checkpoints (`facetrain.extra.calibration`),
or beside any other model file (an official AdaFace `.ckpt`, an exported `.onnx` / `.safetensors`) as
`<file>.calibration.json` holding the model file's sha256, so a sidecar never applies to another model.

A record: {"threshold": cosine, "far": target, "achieved_far", "tar", intervals, "pairs": {"path", "sha256",
"sets"}, ...}. Loading prefers it to the validation threshold the training run measured.
"""
from __future__ import annotations

import json
import logging
import os
from pathlib import Path

from facetrain.checkpoint import load_checkpoint, write_checkpoint
from facetrain.errors import ConfigError
from facetrain.fingerprint import file_sha256
from facetrain.io_utils import atomic_write_json

log = logging.getLogger("facetrain.calibration")
SIDECAR_SUFFIX = ".calibration.json"


def sidecar_path(model_path: str | os.PathLike) -> Path:
    return Path(f"{model_path}{SIDECAR_SUFFIX}")


def _is_ours(checkpoint: dict) -> bool:
    return isinstance(checkpoint.get("facetrain"), dict)


def record_calibration(model_path: str | os.PathLike, record: dict) -> Path:
    """Store `record` in our checkpoint (rewritten atomically) or in the model file's sidecar; returns where."""
    path = Path(model_path)
    if path.suffix == ".ckpt" or path.suffix == ".pt":
        checkpoint = load_checkpoint(path)
        if _is_ours(checkpoint):
            checkpoint["facetrain"].setdefault("extra", {})["calibration"] = record
            write_checkpoint(path, checkpoint)
            return path
    sidecar = sidecar_path(path)
    atomic_write_json(sidecar, {**record, "model_sha256": file_sha256(path)})
    return sidecar


def stored_calibration(model_path: str | os.PathLike, facetrain_info: dict | None = None) -> dict | None:
    """The calibration recorded for this model file (in the checkpoint's own data, else a matching
    sidecar), or None. A sidecar written for another file (sha256 differs) is ignored with a warning."""
    recorded = (facetrain_info or {}).get("extra", {}).get("calibration")
    if recorded:
        return recorded
    sidecar = sidecar_path(model_path)
    if not sidecar.is_file():
        return None
    try:
        record = json.loads(sidecar.read_text())
        threshold = float(record["threshold"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ConfigError(f"{sidecar}: unreadable calibration ({exc})") from None
    if record.get("model_sha256") != file_sha256(model_path):
        log.warning("%s: written for another model file (sha256 differs); not used", sidecar)
        return None
    return {**record, "threshold": threshold}


def describe(record: dict) -> str:
    """Where a threshold came from, in one phrase."""
    pairs = record.get("pairs", {})
    return (f"calibrated at FAR {record['far']:g} on {pairs.get('path', '?')} "
            f"(sha256 {str(pairs.get('sha256', '?'))[:12]}, TAR {record.get('tar', float('nan')):.4f})")
