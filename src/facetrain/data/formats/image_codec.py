"""Decode/encode face images with OpenCV (BGR), in threads: cv2 releases the GIL, so threads scale."""
from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Iterator, Sequence

import cv2
import numpy as np

from facetrain.data.guards.pixel_limit import check_encoded
from facetrain.errors import DataError

FACE_SIZE = 112
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")


def default_threads() -> int:
    return max(1, min(8, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1))


def decode_bgr(encoded: bytes | np.ndarray, where: str) -> np.ndarray:
    """Encoded JPEG/PNG -> uint8 BGR 112x112x3; `where` names the file (and index) in the error.

    Faces that are not 112x112 are resized to it (bilinear), as InsightFace's `load_bin` does
    for its verification sets; grey images become 3-channel (IMREAD_COLOR; 16-bit ones are
    scaled to 8 bits). Images over the pixel limit are refused before decoding (pixel_limit).
    """
    buf = np.frombuffer(encoded, dtype=np.uint8) if isinstance(encoded, (bytes, bytearray, memoryview)) else encoded
    buf = np.ascontiguousarray(buf, dtype=np.uint8).reshape(-1)
    check_encoded(buf, where)
    img = cv2.imdecode(buf, cv2.IMREAD_COLOR) if buf.size else None
    if img is None:
        raise DataError(f"{where}: cannot decode image ({buf.size} bytes; corrupt or not an image)")
    if img.shape[:2] != (FACE_SIZE, FACE_SIZE):
        img = cv2.resize(img, (FACE_SIZE, FACE_SIZE), interpolation=cv2.INTER_LINEAR)
    return img


def encode_image(bgr: np.ndarray, ext: str = ".jpg", quality: int = 95) -> bytes:
    params = [cv2.IMWRITE_JPEG_QUALITY, int(quality)] if ext.lower() in (".jpg", ".jpeg") else []
    ok, buf = cv2.imencode(ext, bgr, params)
    if not ok:
        raise ValueError(f"cv2 could not encode an image as {ext}")
    return buf.tobytes()


def is_jpeg(data: bytes) -> bool:
    return data[:3] == b"\xff\xd8\xff"


def imread_bgr(path: str | os.PathLike) -> np.ndarray | None:
    """`cv2.imread(path, cv2.IMREAD_COLOR)` (any size; None when missing or not an image) for any file
    name: the bytes are read by Python, since OpenCV crashes on a name that is not UTF-8."""
    try:
        data = np.fromfile(path, dtype=np.uint8)
    except OSError:
        return None
    return cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None


def read_file_bgr(path: str | os.PathLike) -> np.ndarray:
    try:
        data = np.fromfile(path, dtype=np.uint8)
    except OSError as exc:
        raise DataError(f"{path}: cannot read image ({exc.strerror})") from None
    return decode_bgr(data, str(path))


def parallel_map(fn: Callable, items: Sequence, threads: int | None = None, chunk: int = 256) -> Iterator:
    """Ordered map over `items` in a thread pool, submitted in chunks so memory stays bounded."""
    threads = threads or default_threads()
    if threads == 1:
        yield from map(fn, items)
        return
    with ThreadPoolExecutor(threads) as pool:
        for start in range(0, len(items), chunk):
            yield from pool.map(fn, items[start:start + chunk])
