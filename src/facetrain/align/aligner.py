"""Detect -> choose one face -> similarity-warp its 5 landmarks onto the 112x112 template.

`FaceAligner.align` raises `NoFaceError` (a `DataError` naming the image) when MTCNN finds
nothing. The seed's `get_aligned_face` keeps AdaFace's contract instead: it returns `None`
and logs a warning that names the image, so existing scripts that test for `None` still work.
"""
from __future__ import annotations

import logging
import os

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from facetrain.align.mtcnn import MTCNN
from facetrain.align.transform import align_face
from facetrain.errors import ConfigError, DataError

log = logging.getLogger("facetrain.align")

SELECT_MODES = ("score", "largest")


class NoFaceError(DataError):
    """MTCNN found no face in the image named in the message."""


def read_rgb(path: str | os.PathLike) -> np.ndarray:
    """HxWx3 uint8 RGB of an image file, read with PIL as AdaFace does, and turned upright by its
    EXIF orientation (phone photos are often stored sideways; MTCNN does not find sideways faces)."""
    try:
        with Image.open(path) as img:
            return np.asarray(ImageOps.exif_transpose(img).convert("RGB"))
    except (OSError, UnidentifiedImageError, ValueError) as exc:
        raise DataError(f"{path}: cannot read image ({exc})") from exc


def choose_face(boxes: np.ndarray, scores: np.ndarray, select: str = "score") -> int:
    """Index of the face to keep: highest detection score, or largest box area."""
    if select == "score":
        return int(np.argmax(scores))
    if select == "largest":
        area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
        return int(np.argmax(area))
    raise ConfigError(f"face selection must be one of {SELECT_MODES}, got {select!r}")


class FaceAligner:
    """MTCNN + similarity transform; one instance per process (it holds the three nets)."""

    def __init__(
        self,
        device: str | torch.device = "cpu",
        select: str = "score",
        size: int = 112,
        detector: MTCNN | None = None,
        factor: float = 0.709,
    ) -> None:
        """`factor`: MTCNN's pyramid step (0.709 as in the paper; AdaFace used 0.85: more levels, slower)."""
        if select not in SELECT_MODES:
            raise ConfigError(f"face selection must be one of {SELECT_MODES}, got {select!r}")
        self.detector = detector if detector is not None else MTCNN(device=device, factor=factor)
        self.select = select
        self.size = size

    def align(self, rgb: np.ndarray, name: str = "<image>") -> np.ndarray:
        """Aligned size x size uint8 RGB face of an HxWx3 uint8 RGB image; NoFaceError naming `name`."""
        boxes, scores, landmarks = self.detector.detect(rgb)
        if len(boxes) == 0:
            raise NoFaceError(f"{name}: no face found by MTCNN (min face {self.detector.min_face_size:g} px)")
        return align_face(rgb, landmarks[choose_face(boxes, scores, self.select)], self.size)

    def align_path(self, path: str | os.PathLike) -> np.ndarray:
        return self.align(read_rgb(path), str(path))


_shared: dict[tuple[str, str], FaceAligner] = {}


def shared_aligner(device: str = "cpu", select: str = "score") -> FaceAligner:
    """One aligner per (device, select), built on first use so importing loads no weights."""
    key = (str(device), select)
    if key not in _shared:
        _shared[key] = FaceAligner(device=device, select=select)
    return _shared[key]


def get_aligned_face(
    image_path: str | os.PathLike | None = None,
    rgb_pil_image: Image.Image | None = None,
    select: str = "score",
    device: str = "cpu",
) -> Image.Image | None:
    """The seed's API: aligned 112x112 RGB PIL face of an image path or an RGB PIL image.

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
        face = shared_aligner(device, select).align(rgb, name)
    except NoFaceError as exc:
        log.warning("face alignment failed: %s", exc)
        return None
    return Image.fromarray(face)

