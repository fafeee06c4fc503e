"""A grid of 112x112 BGR faces written as one image file (PNG or JPEG by the file's extension)."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import cv2
import numpy as np

from facetrain.io_utils import atomic_write_bytes


def write_image_grid(images: Sequence[np.ndarray], path: str | Path, cols: int = 8) -> Path:
    """Row-major grid of equally sized uint8 BGR images, black where the last row is short; atomic."""
    path = Path(path)
    h, w = images[0].shape[:2]
    rows = -(-len(images) // cols)
    grid = np.zeros((rows * h, cols * w, 3), np.uint8)
    for k, img in enumerate(images):
        r, c = divmod(k, cols)
        grid[r * h : (r + 1) * h, c * w : (c + 1) * w] = img
    ok, encoded = cv2.imencode(path.suffix or ".png", grid)
    if not ok:
        raise OSError(f"could not encode {path}")
    atomic_write_bytes(path, encoded.tobytes())
    return path
