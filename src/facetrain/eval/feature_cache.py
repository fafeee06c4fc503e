"""Image features cached on disk (IJB, TinyFace): embed once, re-score every fusion mode instantly.

The cache holds the raw (un-normalised) image and flip features. Its file name carries a digest
of what produced them: the checkpoint (path, size, mtime) and architecture, the dataset, the
image count, the precision and the flip setting; anything else gives another file.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import torch

from facetrain.eval.embed import ImageSource, extract_features
from facetrain.io_utils import atomic_path, open_write


def checkpoint_key(ckpt_path: str | os.PathLike | None, arch: str | None) -> str:
    """Identity of a checkpoint file for the cache: absolute path, size and modification time."""
    if ckpt_path is None:
        return f"model:{arch}"
    stat = Path(ckpt_path).stat()
    return f"{Path(ckpt_path).resolve()}|{stat.st_size}|{stat.st_mtime_ns}|{arch}"


def cache_path(output_dir: str | os.PathLike, prefix: str, dataset: str, count: int, model_key: str, precision: str,
               flip: bool) -> Path:
    """`<output_dir>/features_<prefix>_<flip|noflip>_<digest>.npz`."""
    spec = json.dumps([model_key, dataset, count, precision, flip])
    digest = hashlib.sha1(spec.encode()).hexdigest()[:16]
    return Path(output_dir) / f"features_{prefix}_{'flip' if flip else 'noflip'}_{digest}.npz"


def cached_features(model: torch.nn.Module, images: ImageSource, output_dir: str | os.PathLike, prefix: str,
                    dataset: str, model_key: str, use_flip_test: bool = True, batch_size: int = 128,
                    device: str | None = None, precision: str = "fp32", channels_last: bool = False,
                    progress: bool = True, desc: str | None = None) -> tuple[np.ndarray, np.ndarray | None, Path]:
    """(features, flip_features or None, cache file) of `images`; read from the cache when one matches
    (a flip cache also serves a no-flip request), else embedded and written atomically. `images` is
    only read on a miss, so a lazy source costs nothing when the cache hits."""
    flip_cache = cache_path(output_dir, prefix, dataset, len(images), model_key, precision, True)
    candidates = [flip_cache] if use_flip_test else [flip_cache, cache_path(output_dir, prefix, dataset, len(images),
                                                                             model_key, precision, False)]
    for path in candidates:
        if path.exists():
            with np.load(path) as cached:
                return cached["features"], cached["flip_features"] if use_flip_test else None, path
    features, flips = extract_features(model, images, batch_size=batch_size, device=device, precision=precision,
                                       channels_last=channels_last, flip=use_flip_test, progress=progress,
                                       desc=desc or f"{dataset} images")
    path = candidates[-1]
    arrays = {"features": features} | ({"flip_features": flips} if flips is not None else {})
    with atomic_path(path) as tmp:
        with open_write(tmp, "wb") as f:
            np.savez(f, **arrays)
    return features, flips, path
