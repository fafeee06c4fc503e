"""IJB image features: loose crops aligned by their 5 points, embedded with their flips, cached on disk.

The cache holds the raw (un-normalised) image and flip features, so every fusion / norm /
detector-score mode is recomputed from it instantly. Its key is the checkpoint (path, size,
mtime), architecture, dataset, image count, precision and flip setting.
"""
from __future__ import annotations

import hashlib
import json
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
import numpy as np
import torch

from facetrain.align.transform import align_face
from facetrain.errors import DataError
from facetrain.eval.embed import extract_features
from facetrain.eval.ijb_data import IJBProtocol
from facetrain.io_utils import atomic_path


class AlignedCrops:
    """Image source for `extract_features`: slices read loose crops (cv2, BGR) and warp them to 112x112."""

    def __init__(self, paths: list[Path], landmarks: np.ndarray, workers: int = 4):
        if len(paths) != len(landmarks):
            raise ValueError(f"{len(paths)} images but {len(landmarks)} landmark sets")
        self.paths, self.landmarks = paths, landmarks
        self.pool = ThreadPoolExecutor(max_workers=workers)  # cv2 releases the GIL while decoding/warping

    def __len__(self) -> int:
        return len(self.paths)

    def _load(self, i: int) -> np.ndarray:
        image = cv2.imread(str(self.paths[i]), cv2.IMREAD_COLOR)
        if image is None:
            raise DataError(f"{self.paths[i]}: unreadable or missing loose crop (image {i} of the landmark list)")
        return align_face(image, self.landmarks[i])

    def __getitem__(self, index: slice) -> np.ndarray:
        indices = range(*index.indices(len(self)))
        return np.stack(list(self.pool.map(self._load, indices))) if len(indices) else np.empty((0, 112, 112, 3), np.uint8)


def checkpoint_key(ckpt_path: str | os.PathLike | None, arch: str | None) -> str:
    """Identity of a checkpoint file for the cache: absolute path, size and modification time."""
    if ckpt_path is None:
        return f"model:{arch}"
    stat = Path(ckpt_path).stat()
    return f"{Path(ckpt_path).resolve()}|{stat.st_size}|{stat.st_mtime_ns}|{arch}"


def cache_path(output_dir: Path, protocol: IJBProtocol, model_key: str, precision: str, flip: bool) -> Path:
    spec = json.dumps([model_key, protocol.name, len(protocol.image_paths), precision, flip])
    digest = hashlib.sha1(spec.encode()).hexdigest()[:16]
    return output_dir / f"features_{protocol.prefix}_{'flip' if flip else 'noflip'}_{digest}.npz"


def image_features(model: torch.nn.Module, protocol: IJBProtocol, output_dir: str | os.PathLike, model_key: str,
                   use_flip_test: bool = True, batch_size: int = 128, device: str | None = None, precision: str = "fp32",
                   channels_last: bool = False, workers: int = 4, progress: bool = True) -> tuple[np.ndarray, np.ndarray | None, Path]:
    """(features, flip_features or None, cache file); reads the cache when one matches (a flip cache
    also serves a no-flip request)."""
    output_dir = Path(output_dir)
    candidates = [cache_path(output_dir, protocol, model_key, precision, True)]
    if not use_flip_test:
        candidates.append(cache_path(output_dir, protocol, model_key, precision, False))
    for path in candidates:
        if path.exists():
            with np.load(path) as cached:
                flips = cached["flip_features"] if use_flip_test else None
                return cached["features"], flips, path
    crops = AlignedCrops(protocol.image_paths, protocol.landmarks, workers=workers)
    try:
        features, flips = extract_features(model, crops, batch_size=batch_size, device=device, precision=precision,
                                           channels_last=channels_last, flip=use_flip_test, progress=progress,
                                           desc=f"{protocol.name} images")
    finally:
        crops.pool.shutdown()
    path = candidates[-1] if not use_flip_test else candidates[0]
    arrays = {"features": features} | ({"flip_features": flips} if flips is not None else {})
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)
    return features, flips, path
