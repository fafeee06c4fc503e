"""Image features cached on disk (IJB, TinyFace): embed once, re-score every fusion mode instantly.

The cache holds the raw (un-normalised) image and flip features. Its file name carries a digest of
everything that determines them: the checkpoint's sha256 and architecture, the dataset (with whatever
besides the image files shapes a feature, e.g. IJB's landmarks), every image file's path, size and
modification time, the precision, the memory format, the device type and the flip setting; anything
else gives another file. A cache that cannot be read, or whose arrays do not fit the request (rows, width, non-finite
values), is embedded again after a one-line notice on stderr.
"""
from __future__ import annotations

import hashlib
import json
import os
import sys
import zipfile
from pathlib import Path
from typing import Iterable

import numpy as np
import torch

from facetrain.eval.embed import ImageSource, extract_features
from facetrain.fingerprint import file_sha256
from facetrain.io_utils import atomic_path, open_write


def checkpoint_key(ckpt_path: str | os.PathLike | None, arch: str | None) -> str:
    """Identity of a checkpoint for the cache: the sha256 of its bytes (a file replaced or retouched in
    place is another model, whatever its name and time stamp) and the architecture."""
    if ckpt_path is None:
        return f"model:{arch}"
    return f"sha256:{file_sha256(ckpt_path)}|{arch}"


def files_key(paths: Iterable[str | os.PathLike]) -> str:
    """Digest of each file's absolute path, size and modification time (in order): replacing an image
    under the same name changes it."""
    digest = hashlib.sha256()
    for path in paths:
        stat = os.stat(path)
        digest.update(f"{os.path.abspath(path)}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode("utf-8", "surrogateescape"))
    return digest.hexdigest()


def cache_path(output_dir: str | os.PathLike, prefix: str, spec: list, flip: bool) -> Path:
    """`<output_dir>/features_<prefix>_<flip|noflip>_<digest>.npz`."""
    digest = hashlib.sha256(json.dumps([*spec, flip]).encode()).hexdigest()[:16]
    return Path(output_dir) / f"features_{prefix}_{'flip' if flip else 'noflip'}_{digest}.npz"


def _read(path: Path, rows: int, width: int | None, flip: bool) -> tuple[np.ndarray, np.ndarray | None] | None:
    """The cached arrays when they fit the request, else None after a notice (the caller embeds again)."""
    try:
        with np.load(path, allow_pickle=False) as cached:
            features = cached["features"]
            flips = cached["flip_features"] if flip else None
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile) as exc:
        problem = f"unreadable ({' '.join(str(exc).split()) or type(exc).__name__})"
    else:
        problem = None
        for name, array in (("features", features), ("flip_features", flips)):
            if array is None:
                continue
            if array.ndim != 2 or len(array) != rows or (width is not None and array.shape[1] != width):
                problem = f"{name} of shape {array.shape}, expected ({rows}, {width if width is not None else 'D'})"
            elif not np.issubdtype(array.dtype, np.floating) or not np.isfinite(array).all():
                problem = f"{name} hold non-finite or non-float values"
        if problem is None:
            return features, flips
    print(f"note: {path}: feature cache {problem}; embedding the images again", file=sys.stderr)
    return None


def _device_type(model: torch.nn.Module | None, device: str | torch.device | None) -> str:
    """cpu or cuda: a GPU's "fp32" convolutions run in TF32, so its features differ from the CPU's."""
    if device is not None:
        return torch.device(device).type
    param = next(model.parameters(), None) if isinstance(model, torch.nn.Module) else None
    return param.device.type if param is not None else "cpu"


def cached_features(model: torch.nn.Module, images: ImageSource, output_dir: str | os.PathLike, prefix: str,
                    dataset: str, model_key: str, use_flip_test: bool = True, batch_size: int = 128,
                    device: str | None = None, precision: str = "fp32", channels_last: bool = False,
                    progress: bool = True, desc: str | None = None,
                    files: Iterable[str | os.PathLike] = ()) -> tuple[np.ndarray, np.ndarray | None, Path]:
    """(features, flip_features or None, cache file) of `images`; read from the cache when one matches
    (a flip cache also serves a no-flip request), else embedded and written atomically. `images` is
    only read on a miss, so a lazy source costs nothing when the cache hits. `files` are the files the
    images are read from; `dataset` names the data and anything else that shapes a feature."""
    spec = [model_key, dataset, len(images), files_key(files), precision, bool(channels_last),
            _device_type(model, device)]
    flip_cache = cache_path(output_dir, prefix, spec, True)
    candidates = [flip_cache] if use_flip_test else [flip_cache, cache_path(output_dir, prefix, spec, False)]
    width = getattr(model, "embedding_size", None)
    for path in candidates:
        if path.exists():
            found = _read(path, len(images), width if isinstance(width, int) else None, use_flip_test)
            if found is not None:
                return *found, path
    features, flips = extract_features(model, images, batch_size=batch_size, device=device, precision=precision,
                                       channels_last=channels_last, flip=use_flip_test, progress=progress,
                                       desc=desc or f"{dataset} images")
    path = candidates[-1]
    arrays = {"features": features} | ({"flip_features": flips} if flips is not None else {})
    with atomic_path(path) as tmp:
        with open_write(tmp, "wb") as f:
            np.savez(f, **arrays)
    return features, flips, path
