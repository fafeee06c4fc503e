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

import inspect
import math
import os
from dataclasses import dataclass
from typing import Any, Iterable, Sequence, Union

import numpy as np
import torch
from PIL import Image
from torch import nn

from facetrain.errors import ConfigError, DataError
from facetrain.infer import load_model  # the public loader, re-exported as facetrain.load_model

FaceLike = Union[str, os.PathLike, Image.Image, np.ndarray]


def align(image: FaceLike, select: str = "score", device: str | torch.device = "cpu",
          detector: str = "adaface", landmarks: Any = None) -> Image.Image | None:
    """The aligned 112x112 RGB face of a photo (path, PIL image or RGB array): the seed's
    `get_aligned_face`, so None (with a warning naming the image) when no face is found.
    `detector`: "adaface" (AdaFace's own crop) or "facenet" (finds more faces in group photos).
    `landmarks`: the face's 5 points, (5, 2) or x1, y1, ..., x5, y5 (image-left eye, image-right eye,
    nose, image-left and image-right mouth corners): warped with `detector`'s template and fit, no detection."""
    from facetrain.alignment.aligner import get_aligned_face, read_rgb

    if landmarks is not None:
        from facetrain.alignment.landmarks import as_points
        from facetrain.geometry.similarity import WARPS

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


def embed(model: nn.Module, faces: FaceLike | Sequence[FaceLike], batch_size: int = 256,
          device: str | torch.device | None = None, flip: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """(unit-length features (N, D) float32, feature norms (N,)) of faces (a list, or one face: N = 1),
    in fp32 on `device` (default: where the model is). `flip=True` fuses each face with its mirror
    image as the evaluation does."""
    from facetrain.eval.embed import extract_features
    from facetrain.eval.fusion import fuse_flip

    _check_model(model, "embed")
    if not _finite_number(batch_size) or isinstance(batch_size, (float, np.floating)) or batch_size < 1:
        raise ConfigError(f"embed: batch_size must be a positive whole number, got {batch_size!r}")
    faces = _face_list(faces)
    if not faces:
        raise DataError("embed needs at least one face")
    bgr = np.stack([_aligned_bgr(face, k) for k, face in enumerate(faces)])
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
    if threshold is not None and not _finite_number(threshold):  # NaN would answer "different" to every pair
        raise ConfigError(f"verify: threshold must be a finite number (a cosine similarity), got "
                          f"{type(threshold).__name__} {threshold!r}")
    features, _ = embed(model, [a, b], device=device)
    similarity = float(features[0] @ features[1])
    if threshold is not None:
        threshold, source = float(threshold), "given"
    else:
        threshold, source = getattr(model, "threshold_cosine", None), getattr(model, "threshold_source", None)
    return Verification(similarity, threshold, None if threshold is None else similarity >= threshold,
                        None if threshold is None else source)


def train(config: Any) -> Any:
    """Train from a `TrainConfig`, a dict of its fields, or a config file (JSON/YAML; see `--config`)."""
    from facetrain.training.launch import train_from

    return train_from(config)


def evaluate(checkpoint: str | os.PathLike, val_data_path: str | os.PathLike, **options: Any) -> dict[str, dict]:
    """Five-set verification (docs/evaluation.md) of a checkpoint: {set: metrics} plus "average"."""
    from facetrain.eval.verification import evaluate_checkpoint

    accepted = [name for name in inspect.signature(evaluate_checkpoint).parameters][2:]
    unknown = sorted(set(options) - set(accepted))
    if unknown:  # named for this function, with what it takes (not the library function it calls)
        raise TypeError(f"evaluate() got unexpected keyword argument(s) {', '.join(map(repr, unknown))}; "
                        f"it takes: {', '.join(accepted)}")
    return evaluate_checkpoint(checkpoint, val_data_path, **options)


def _finite_number(value: Any) -> bool:
    return (isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)
            and math.isfinite(value))


def _check_model(model: Any, caller: str) -> None:
    if not isinstance(model, nn.Module):
        raise ConfigError(f"{caller}: model must be a backbone (facetrain.load_model(...)), got "
                          f"{type(model).__name__}")


def _face_list(faces: Any) -> list:
    """`faces` as a list: one face (a path, a PIL image, an HxWx3 array) or a list/tuple of them, or an
    (N, H, W, 3) array. Anything else is refused, a string above all (its characters are no faces) and
    an iterator (read once, it could not be told from an empty list afterwards)."""
    if isinstance(faces, (str, os.PathLike, Image.Image)):
        return [faces]
    if isinstance(faces, np.ndarray):
        return [faces] if faces.ndim == 3 else list(faces) if faces.ndim == 4 else _refuse_faces(faces)
    if isinstance(faces, (list, tuple)):
        return list(faces)
    return _refuse_faces(faces)


def _refuse_faces(faces: Any) -> list:
    what = f"array of shape {faces.shape}" if isinstance(faces, np.ndarray) else type(faces).__name__
    hint = "; pass a list (list(faces))" if hasattr(faces, "__next__") else ""
    raise ConfigError(f"embed: faces must be a face (a path, a PIL image, an HxWx3 RGB array) or a list of them, "
                      f"got {what}{hint}")


def _as_pil(image: Image.Image | np.ndarray) -> Image.Image:
    if isinstance(image, Image.Image):
        return image.convert("RGB")
    array = np.asarray(image)
    if array.dtype != np.uint8 or array.ndim != 3 or array.shape[2] != 3:
        raise DataError(f"expected an HxWx3 uint8 RGB image, got {array.dtype} {array.shape}")
    return Image.fromarray(array)


def _aligned_bgr(face: FaceLike, index: int) -> np.ndarray:
    """112x112 BGR uint8 (the models' input order) of an aligned face, aligning photos first."""
    from facetrain.alignment.aligner import read_rgb, shared_aligner

    if face is None:
        raise DataError(f"face {index} is None (where `align` found no face, it returns None)")
    if not isinstance(face, (str, os.PathLike, Image.Image, np.ndarray)):
        raise ConfigError(f"face {index} is of type {type(face).__name__}, not a path, a PIL image or an RGB array")
    name = str(face) if isinstance(face, (str, os.PathLike)) else f"<face {index}>"
    rgb = read_rgb(face) if isinstance(face, (str, os.PathLike)) else np.asarray(_as_pil(face))
    if rgb.shape[:2] != (112, 112):
        rgb = shared_aligner("cpu").align(rgb, name)  # NoFaceError names the image
    return np.ascontiguousarray(rgb[:, :, ::-1])
