"""Detect -> choose one face -> similarity-warp its 5 landmarks onto the 112x112 template.

`detector="adaface"` (the default) reproduces AdaFace's `face_alignment` crop: its MTCNN
cascade, its cp2tform fit onto `get_reference_facial_points(default_square=True)`;
`detector="facenet"` is facenet-pytorch's cascade with the Umeyama fit onto insightface's
ArcFace template (finds more faces in group photos).

`FaceAligner.align` raises `NoFaceError` (a `DataError` naming the image) when MTCNN finds
nothing. The seed's `get_aligned_face` keeps AdaFace's contract instead: it returns `None`
and logs a warning that names the image, so existing scripts that test for `None` still work.
"""
from __future__ import annotations

import logging
import os

import numpy as np
import torch
from PIL import Image

from facetrain.alignment.mtcnn import MTCNN
from facetrain.alignment.styles import DETECTORS
from facetrain.data.guards.photo import read_photo_rgb
from facetrain.errors import ConfigError, DataError
from facetrain.geometry.similarity import WARPS

log = logging.getLogger("facetrain.alignment")

SELECT_MODES = ("score", "largest")


class NoFaceError(DataError):
    """MTCNN found no face in the image named in the message."""


def read_rgb(path: str | os.PathLike) -> np.ndarray:
    """HxWx3 uint8 RGB of a photo, read with PIL as AdaFace does (`facetrain.data.guards.photo`: upright by its
    EXIF orientation, 16-bit images at full depth, the pixel limit checked before decoding)."""
    return read_photo_rgb(path)


def choose_face(boxes: np.ndarray, scores: np.ndarray, select: str = "score") -> int:
    """Index of the face to keep: highest detection score (the first on a tie, so AdaFace's
    first face), or largest box area."""
    if select == "score":
        return int(np.argmax(scores))
    if select == "largest":
        area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
        return int(np.argmax(area))
    raise ConfigError(f"face selection must be one of {SELECT_MODES}, got {select!r}")


class FaceAligner:
    """MTCNN + similarity warp; one instance per process (it holds the three nets).

    `detector`: "adaface" or "facenet" (see the module docstring), or a ready `MTCNN` whose
    style then chooses the warp. `factor`: the pyramid step, None for the detector's own.
    """

    def __init__(
        self,
        device: str | torch.device = "cpu",
        select: str = "score",
        size: int = 112,
        detector: str | MTCNN = "adaface",
        factor: float | None = None,
    ) -> None:
        if select not in SELECT_MODES:
            raise ConfigError(f"face selection must be one of {SELECT_MODES}, got {select!r}")
        if isinstance(detector, str):
            if detector not in DETECTORS:
                raise ConfigError(f"detector must be one of {DETECTORS}, got {detector!r}")
            detector = MTCNN(device=device, style=detector, factor=factor)
        self.detector = detector
        self.warp = WARPS[detector.style]
        self.select = select
        self.size = size

    def align(self, rgb: np.ndarray, name: str = "<image>") -> np.ndarray:
        """Aligned size x size uint8 RGB face of an HxWx3 uint8 RGB image; NoFaceError naming `name`."""
        boxes, scores, landmarks = self.detector.detect(rgb)
        if len(boxes) == 0:
            raise NoFaceError(f"{name}: no face found by MTCNN (min face {self.detector.min_face_size:g} px)")
        return self.warp(rgb, landmarks[choose_face(boxes, scores, self.select)], self.size)

    def align_path(self, path: str | os.PathLike) -> np.ndarray:
        return self.align(read_rgb(path), str(path))


_shared: dict[tuple[str, str, str], FaceAligner] = {}


def shared_aligner(device: str = "cpu", select: str = "score", detector: str = "adaface") -> FaceAligner:
    """One aligner per (device, select, detector), built on first use so importing loads no weights."""
    key = (str(device), select, detector)
    if key not in _shared:
        _shared[key] = FaceAligner(device=device, select=select, detector=detector)
    return _shared[key]


def get_aligned_face(
    image_path: str | os.PathLike | None = None,
    rgb_pil_image: Image.Image | None = None,
    select: str = "score",
    device: str = "cpu",
    detector: str = "adaface",
) -> Image.Image | None:
    """The seed's API: aligned 112x112 RGB PIL face of an image path or an RGB PIL image,
    by default the crop AdaFace's own `face_alignment.align.get_aligned_face` returns.

    Returns None (with a warning naming the image) when no face is found, as AdaFace did;
    an unreadable file raises `DataError`.
    """
    if rgb_pil_image is None:
        if image_path is None:
            raise ValueError("get_aligned_face needs an image path or an RGB PIL image")
        name, rgb = str(image_path), read_rgb(image_path)
    else:
        if not isinstance(rgb_pil_image, Image.Image):
            raise TypeError(f"rgb_pil_image must be a PIL image, got {type(rgb_pil_image).__name__}")
        name = str(image_path) if image_path is not None else "<PIL image>"
        rgb = np.asarray(rgb_pil_image.convert("RGB"))
    try:
        face = shared_aligner(device, select, detector).align(rgb, name)
    except NoFaceError as exc:
        log.warning("face alignment failed: %s", exc)
        return None
    return Image.fromarray(face)

