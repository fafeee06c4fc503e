"""The Python API: what a user reaches for first, thin over the library.

    import facetrain
    model = facetrain.load_model("ir_50")                   # or a path, or hf://owner/repo/file
    face = facetrain.align("photo.jpg")                     # aligned 112x112 RGB PIL image (None: no face)
    features, norms = facetrain.embed(model, [face])        # unit-length (N, 512) float32, (N,) norms
    result = facetrain.verify(model, "a.jpg", "b.jpg")      # cosine similarity, threshold, decision

Faces are RGB (PIL images, or HxWx3 uint8 arrays in RGB order, as `align` returns them); an image
that is not already an aligned 112x112 face is detected and aligned first. Thresholds are cosine
similarities (the evaluation protocol's squared-L2 threshold d is the cosine 1 - d/2).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Iterable, Sequence, Union

import numpy as np
import torch
from PIL import Image
from torch import nn

from facetrain.devices import resolve_device
from facetrain.errors import ConfigError, DataError

FaceLike = Union[str, os.PathLike, Image.Image, np.ndarray]


def load_model(name_or_path: str | os.PathLike, device: str | torch.device | None = None, sha256: str | None = None,
               download: bool = False) -> nn.Module:
    """A backbone in eval mode: a released AdaFace name (`ir_50`, `ir101_webface12m`), a checkpoint
    path, or `hf://owner/repo/file` (from the local cache unless `download`). `model.threshold_cosine`
    is its decision threshold: the one `facetrain calibrate --save` stored at a chosen FAR, else the one
    its training run measured on validation, else None; `model.threshold_source` says which."""
    from facetrain.calibration_store import describe, stored_calibration
    from facetrain.checkpoint import load_backbone
    from facetrain.models.released import resolve_checkpoint

    path, arch = resolve_checkpoint(name_or_path, sha256=sha256, download=download)
    model, info = load_backbone(path, arch=arch)
    calibrated = stored_calibration(path, info["facetrain"])
    best = info["facetrain"].get("extra", {}).get("best", {}) if info["facetrain"] else {}
    if calibrated is not None:
        model.threshold_cosine, model.threshold_source = float(calibrated["threshold"]), describe(calibrated)
    elif best.get("threshold_cosine") is not None:
        model.threshold_cosine = best["threshold_cosine"]
        model.threshold_source = "the training run's best validation accuracy (10-fold mean threshold)"
    else:
        model.threshold_cosine, model.threshold_source = None, None
    return model.to(resolve_device(device)).eval()


def align(image: FaceLike, select: str = "score", device: str | torch.device = "cpu",
          detector: str = "adaface", landmarks: Any = None) -> Image.Image | None:
    """The aligned 112x112 RGB face of a photo (path, PIL image or RGB array): the seed's
    `get_aligned_face`, so None (with a warning naming the image) when no face is found.
    `detector`: "adaface" (AdaFace's own crop) or "facenet" (finds more faces in group photos).
    `landmarks`: the face's 5 points, (5, 2) or x1, y1, ..., x5, y5 (image-left eye, image-right eye,
    nose, image-left and image-right mouth corners): warped with `detector`'s template and fit, no detection."""
    from facetrain.align.aligner import get_aligned_face, read_rgb

    if landmarks is not None:
        from facetrain.align.landmarks import as_points
        from facetrain.align.transform import WARPS

        if detector not in WARPS:
            raise ConfigError(f"detector must be one of {tuple(WARPS)}, got {detector!r}")
        name = str(image) if isinstance(image, (str, os.PathLike)) else "<image>"
        rgb = read_rgb(image) if isinstance(image, (str, os.PathLike)) else np.asarray(_as_pil(image))
        return Image.fromarray(WARPS[detector](rgb, as_points(landmarks, name), 112))
    if isinstance(image, (str, os.PathLike)):
        return get_aligned_face(image, select=select, device=str(device), detector=detector)
    return get_aligned_face(None, _as_pil(image), select=select, device=str(device), detector=detector)


def align_all(images: Iterable[FaceLike], select: str = "score", device: str | torch.device = "cpu",
              detector: str = "adaface") -> list[Image.Image | None]:
    """`align` for each image, in order (None where no face was found)."""
    return [align(image, select=select, device=device, detector=detector) for image in images]


def embed(model: nn.Module, faces: Sequence[FaceLike], batch_size: int = 256, device: str | torch.device | None = None,
          flip: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """(unit-length features (N, D) float32, feature norms (N,)) of faces, in fp32 on `device` (default:
    where the model is). `flip=True` fuses each face with its mirror image as the evaluation does."""
    from facetrain.eval.embed import extract_features
    from facetrain.eval.fusion import fuse_flip

    bgr = np.stack([_aligned_bgr(face, k) for k, face in enumerate(faces)]) if len(faces) else None
    if bgr is None:
        raise DataError("embed needs at least one face")
    features, flipped = extract_features(model, bgr, batch_size=batch_size, device=device, flip=flip, progress=False)
    unit, norms = fuse_flip(features, flipped, "pre_norm_vector_add" if flip else "none")
    return unit.astype(np.float32), norms.reshape(-1).astype(np.float32)


@dataclass(frozen=True)
class Verification:
    similarity: float  # cosine similarity of the two faces' features
    threshold: float | None  # cosine threshold used for the decision
    same: bool | None  # similarity >= threshold; None without a threshold
    threshold_source: str | None = None  # where the threshold came from ("given", calibrated, validation)


def verify(model: nn.Module, a: FaceLike, b: FaceLike, threshold: float | None = None,
           device: str | torch.device | None = None) -> Verification:
    """Are `a` and `b` the same person? `threshold` (cosine) defaults to the model's own
    (`model.threshold_cosine`: calibrated at a FAR by `facetrain calibrate --save`, else measured by its
    training run); with neither, `same` is None."""
    features, _ = embed(model, [a, b], device=device)
    similarity = float(features[0] @ features[1])
    if threshold is not None:
        source = "given"
    else:
        threshold, source = getattr(model, "threshold_cosine", None), getattr(model, "threshold_source", None)
    return Verification(similarity, threshold, None if threshold is None else similarity >= threshold,
                        None if threshold is None else source)


def train(config: Any) -> Any:
    """Train from a `TrainConfig`, a dict of its fields, or a config file (JSON/YAML; see `--config`)."""
    from facetrain.train.config import TrainConfig, load_config_file
    from facetrain.train.launch import run

    if isinstance(config, (str, os.PathLike)):
        config = TrainConfig.from_dict(load_config_file(config), strict=True)
    elif isinstance(config, dict):
        config = TrainConfig.from_dict(config, strict=True)
    config.validate()
    return run(config)


def evaluate(checkpoint: str | os.PathLike, val_data_path: str | os.PathLike, **options: Any) -> dict[str, dict]:
    """Five-set verification (docs/evaluation.md) of a checkpoint: {set: metrics} plus "average"."""
    from facetrain.eval.verification_report import evaluate_checkpoint

    return evaluate_checkpoint(checkpoint, val_data_path, **options)


def _as_pil(image: Image.Image | np.ndarray) -> Image.Image:
    if isinstance(image, Image.Image):
        return image.convert("RGB")
    array = np.asarray(image)
    if array.dtype != np.uint8 or array.ndim != 3 or array.shape[2] != 3:
        raise DataError(f"expected an HxWx3 uint8 RGB image, got {array.dtype} {array.shape}")
    return Image.fromarray(array)


def _aligned_bgr(face: FaceLike, index: int) -> np.ndarray:
    """112x112 BGR uint8 (the models' input order) of an aligned face, aligning photos first."""
    from facetrain.align.aligner import read_rgb, shared_aligner

    name = str(face) if isinstance(face, (str, os.PathLike)) else f"<face {index}>"
    rgb = read_rgb(face) if isinstance(face, (str, os.PathLike)) else np.asarray(_as_pil(face))
    if rgb.shape[:2] != (112, 112):
        rgb = shared_aligner("cpu").align(rgb, name)  # NoFaceError names the image
    return np.ascontiguousarray(rgb[:, :, ::-1])
