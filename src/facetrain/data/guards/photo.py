"""Read a photo for face detection: uint8 RGB, upright, at its full bit depth, within the pixel limit.

PIL opens a file lazily (header only), so the size is checked before anything is decoded.
16-bit images are scaled to 8 bits (65535 -> 255): PIL's `convert("RGB")` clips them
instead, turning a 16-bit grey photo almost white. EXIF orientation is applied, as phone
photos are often stored sideways.
"""
from __future__ import annotations

import os
import warnings

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from facetrain.data.guards.pixel_limit import check_pixels, max_pixels
from facetrain.errors import DataError

_SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N")


def _to_rgb8(img: Image.Image) -> np.ndarray:
    if img.mode in _SIXTEEN_BIT_MODES or img.mode == "I":
        grey = np.asarray(img, dtype=np.float64)
        # mode "I" holds 16-bit data in 32-bit integers when PIL widens it; full 32-bit range otherwise
        scale = 257.0 if img.mode != "I" or grey.max(initial=0) <= 65535 else 16843009.0
        grey = np.clip(np.rint(grey / scale), 0, 255).astype(np.uint8)
        return np.repeat(grey[:, :, None], 3, axis=2)
    if img.mode == "F":
        grey = np.asarray(img, dtype=np.float64)
        top = 1.0 if grey.max(initial=0) <= 1.0 else 255.0
        grey = np.clip(np.rint(grey * (255.0 / top)), 0, 255).astype(np.uint8)
        return np.repeat(grey[:, :, None], 3, axis=2)
    return np.asarray(img.convert("RGB"))


def read_photo_rgb(path: str | os.PathLike) -> np.ndarray:
    """HxWx3 uint8 RGB; DataError naming the file when it cannot be read or is over the pixel limit."""
    limit = max_pixels()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            if Image.MAX_IMAGE_PIXELS is not None and limit > Image.MAX_IMAGE_PIXELS:
                Image.MAX_IMAGE_PIXELS = limit  # ours is checked below; PIL's must not be lower than the user's
            with Image.open(path) as img:
                check_pixels(img.size[0], img.size[1], str(path))
                return _to_rgb8(ImageOps.exif_transpose(img))
    except DataError:
        raise
    except Image.DecompressionBombError as exc:
        raise DataError(f"{path}: image is over the pixel limit of {limit} pixels ({exc})") from None
    except (OSError, UnidentifiedImageError, ValueError, SyntaxError) as exc:
        raise DataError(f"{path}: cannot read image ({exc})") from None
