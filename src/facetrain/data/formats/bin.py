"""InsightFace `.bin` verification sets: a pickle of `(bins, issame_list)`, pair i = bins[2i], bins[2i+1].

`bins` holds 2N encoded images (bytes, or numpy uint8 arrays of the encoded bytes);
`issame_list` N Python or numpy booleans. Loaded with a restricted unpickler (see safe_pickle).
"""
from __future__ import annotations

import os
import pickle
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import numpy as np
from tqdm import tqdm

from facetrain.data.formats.image_codec import decode_bgr, encode_image, parallel_map
from facetrain.data.guards.safe_pickle import safe_loads
from facetrain.data.formats.verification_set import VerificationSet, check_issame
from facetrain.errors import DataError
from facetrain.io_utils import atomic_write_bytes


# the encoded images (references counted) may add up to this many times the file (check_decoded_size)
MAX_REPEAT = 2
# names whose outputs would collide with other files of a converted folder (train.dat is the training memfile)
_RESERVED_NAMES = frozenset({"train", "imgs"})


def set_name(path: str | os.PathLike) -> str:
    """The set's name is the whole file name without `.bin`: `lfw.old.bin` is "lfw.old", not "lfw"."""
    name = Path(path).name
    stem = name[: -len(".bin")] if name.lower().endswith(".bin") else name
    if not stem or stem.startswith(".") or stem in _RESERVED_NAMES:
        raise DataError(f"{path}: {stem!r} cannot name a verification set (its outputs would be hidden or overwrite "
                        f"other files); rename the file, e.g. to lfw.bin")
    return stem


def unique_set_names(paths: Sequence[Path]) -> dict[str, Path]:
    """name -> file; two files whose names differ only by case would write the same outputs on
    case-insensitive file systems, so that is an error naming both."""
    names: dict[str, Path] = {}
    for path in paths:
        name = set_name(path)
        for other_name, other in names.items():
            if other_name.lower() == name.lower():
                raise DataError(f"{other} and {path} both map to verification set {name!r}; rename one of them")
        names[name] = path
    return names


def load_encoded(path: str | os.PathLike) -> tuple[list, np.ndarray]:
    """(encoded images, issame) without decoding; checks the structure, names the file on any problem."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise DataError(f"{path}: cannot read ({exc.strerror})") from None
    obj = safe_loads(data, str(path))
    if not (isinstance(obj, (tuple, list)) and len(obj) == 2):
        raise DataError(f"{path}: expected a pickled (bins, issame_list) pair, got {type(obj).__name__}")
    bins, issame = obj
    if not isinstance(bins, (list, tuple)) or not isinstance(issame, (list, tuple, np.ndarray)):
        raise DataError(f"{path}: expected lists (bins, issame_list), got ({type(bins).__name__}, {type(issame).__name__})")
    for i, b in enumerate(bins):
        if not isinstance(b, (bytes, bytearray)) and not (isinstance(b, np.ndarray) and b.dtype == np.uint8):
            raise DataError(f"{path}: image {i} is a {type(b).__name__}, expected encoded bytes")
    check_decoded_size(path, bins, len(data))
    issame = check_issame(issame, str(path))  # a zero-itemsize array of 10^12 labels is refused unexpanded
    if len(bins) != 2 * len(issame):
        raise DataError(f"{path}: {len(bins)} images for {len(issame)} pairs (expected 2 images per pair)")
    return list(bins), issame


def check_decoded_size(path: Path, bins: Sequence, file_size: int) -> None:
    """Memory bounded by the file: the encoded images, each reference counted (a pickle can name one
    object many times), add up to at most `MAX_REPEAT` times the file. A set stores each image once, or
    shares a few between pairs; one that repeats an image by reference decodes to far more than it
    holds (200,000 x 37 KB from 500 KB)."""
    total = sum(len(b) if isinstance(b, (bytes, bytearray)) else b.nbytes for b in bins)
    if total > MAX_REPEAT * file_size:
        decoded = len(bins) * 112 * 112 * 3
        raise DataError(f"{path}: its {len(bins)} images add up to {total} encoded bytes, more than {MAX_REPEAT} "
                        f"times the file's {file_size} (the pickle repeats images by reference); refusing to "
                        f"decode them ({decoded / 2**30:.1f} GiB)")


def decode_into(out: np.ndarray, bins: Sequence, source: str, threads: int | None = None,
                progress: bool | None = False, offset: int = 0) -> None:
    """Decode `bins` into the preallocated (len(bins),112,112,3) array `out`; errors name image `offset + i`."""
    def one(i: int) -> None:
        out[i] = decode_bgr(bins[i], f"{source} image {offset + i}")

    for _ in tqdm(parallel_map(one, range(len(bins)), threads), total=len(bins), desc=f"decode {Path(source).name}",
                  disable=None if progress else True, unit="img"):
        pass


def iter_decoded(bins: Sequence, source: str, threads: int | None = None, block: int = 256,
                 progress: bool | None = False) -> Iterator[np.ndarray]:
    """Decoded (<=block,112,112,3) uint8 BGR blocks in order: streams a large set into a file."""
    buf = np.empty((block, 112, 112, 3), dtype=np.uint8)
    with tqdm(total=len(bins), desc=f"decode {Path(source).name}", disable=None if progress else True,
              unit="img") as bar:
        for start in range(0, len(bins), block):
            stop = min(start + block, len(bins))
            decode_into(buf, bins[start:stop], source, threads, offset=start)
            bar.update(stop - start)
            yield buf[: stop - start]


def find_unreadable(bins: Sequence, source: str, threads: int | None = None) -> list[str]:
    """Every image that does not decode, as '<file> image <i>'."""
    def ok(i: int) -> bool:
        try:
            decode_bgr(bins[i], "")
            return True
        except DataError:
            return False

    return [f"{source} image {i}" for i, good in enumerate(parallel_map(ok, range(len(bins)), threads)) if not good]


def read_bin(path: str | os.PathLike, threads: int | None = None, progress: bool | None = False) -> VerificationSet:
    """Load and decode a `.bin` to BGR uint8 (non-112x112 faces are resized, as InsightFace's loader does)."""
    bins, issame = load_encoded(path)
    images = np.empty((len(bins), 112, 112, 3), dtype=np.uint8)
    decode_into(images, bins, str(path), threads, progress)
    return VerificationSet(set_name(path), images, issame)


def write_bin(path: str | os.PathLike, images: Iterable[np.ndarray], issame: Iterable[bool],
              ext: str = ".jpg", quality: int = 95) -> None:
    """Write an InsightFace-format `.bin`: a list of encoded bytes and a list of Python bools, pickle protocol 4
    (readable by insightface's and AdaFace's `pickle.load(f, encoding="bytes")`)."""
    encoded = [encode_image(np.asarray(img), ext, quality) for img in images]
    flags = [bool(s) for s in issame]
    if len(encoded) != 2 * len(flags):
        raise ValueError(f"write_bin: {len(encoded)} images for {len(flags)} pairs")
    atomic_write_bytes(path, pickle.dumps((encoded, flags), protocol=4))
