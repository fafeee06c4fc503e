"""The pixel limit: images larger than it are refused from their header, before any decoding.

Decoding allocates width x height x channels bytes (and the aligner's image pyramid several
times that), however small the file: a 1 MB PNG can declare 20000 x 20000 pixels. So every
image is measured from its header first (PNG and JPEG parsed here, other formats through
PIL's lazy open, which reads only the header) and refused with a DataError when it has more
than `max_pixels()` pixels: 50 million by default (8660 x 8660, above any common camera's full
resolution), raised with `FACETRAIN_MAX_PIXELS=N` or a command's `--max_pixels N`.
"""
from __future__ import annotations

import io
import os
import struct
import warnings

from facetrain.errors import ConfigError, DataError

MAX_PIXELS_ENV = "FACETRAIN_MAX_PIXELS"
DEFAULT_MAX_PIXELS = 50_000_000

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# JPEG start-of-frame markers (hold the size): C0-CF except DHT (C4), JPG (C8) and DAC (CC)
_SOF_MARKERS = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}


def max_pixels() -> int:
    value = os.environ.get(MAX_PIXELS_ENV)
    if not value:
        return DEFAULT_MAX_PIXELS
    try:
        limit = int(float(value))
    except ValueError:
        limit = 0
    if limit < 1:
        raise ConfigError(f"{MAX_PIXELS_ENV}={value!r}: expected a positive number of pixels")
    return limit


def set_max_pixels(limit: int | None) -> None:
    """Set the limit for this process and the workers it starts (None keeps the current one)."""
    if limit is None:
        return
    if limit < 1:
        raise ConfigError(f"--max_pixels must be a positive number of pixels, got {limit}")
    os.environ[MAX_PIXELS_ENV] = str(int(limit))


def _jpeg_size(data: bytes) -> tuple[int, int] | None:
    pos = 2
    while pos + 4 <= len(data):
        if data[pos] != 0xFF:
            return None
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker == 0x01 or 0xD0 <= marker <= 0xD8:  # markers without a length
            pos += 2
            continue
        if marker in (0xD9, 0xDA):  # end of image / start of scan before any frame header
            return None
        if marker in _SOF_MARKERS and pos + 9 <= len(data):
            height, width = struct.unpack_from(">HH", data, pos + 5)
            return width, height
        pos += 2 + struct.unpack_from(">H", data, pos + 2)[0]
    return None


def image_size(data: bytes | memoryview) -> tuple[int, int] | None:
    """(width, height) declared by an encoded image's header, or None when it cannot be told."""
    head = bytes(data[:64]) if len(data) > 64 else bytes(data)
    if head.startswith(_PNG_SIGNATURE) and head[12:16] == b"IHDR" and len(head) >= 24:
        return struct.unpack_from(">II", head, 16)
    if head.startswith(b"\xff\xd8"):
        return _jpeg_size(bytes(data[:1 << 20]) if len(data) > 1 << 20 else bytes(data))
    from PIL import Image

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with Image.open(io.BytesIO(bytes(data))) as img:  # lazy: reads the header only
                return img.size
    except Image.DecompressionBombError:
        return (Image.MAX_IMAGE_PIXELS or 0) * 2 + 1, 1
    except Exception:  # not an image PIL knows: the decoder reports it
        return None


def check_pixels(width: int, height: int, where: str) -> None:
    limit = max_pixels()
    if width * height > limit:
        raise DataError(f"{where}: image of {width}x{height} pixels is over the limit of {limit} pixels "
                        f"(raise it with --max_pixels or {MAX_PIXELS_ENV})")


def check_encoded(data: bytes | memoryview, where: str) -> None:
    """DataError when the encoded image declares more pixels than the limit."""
    size = image_size(data)
    if size is not None:
        check_pixels(size[0], size[1], where)
