"""IJB image features: loose crops aligned by their 5 points, embedded with their flips, cached on disk
(`facetrain.eval.feature_cache`), so every fusion / norm / detector-score mode is recomputed instantly."""
from __future__ import annotations

import hashlib
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch

from facetrain.data.formats.image_codec import imread_bgr
from facetrain.errors import DataError
from facetrain.eval.feature_cache import cached_features
from facetrain.eval.ijb_data import IJBProtocol
from facetrain.geometry.similarity import align_face


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
        image = imread_bgr(self.paths[i])
        if image is None:
            raise DataError(f"{self.paths[i]}: unreadable or missing loose crop (image {i} of the landmark list)")
        return align_face(image, self.landmarks[i])

    def __getitem__(self, index: slice) -> np.ndarray:
        indices = range(*index.indices(len(self)))
        return np.stack(list(self.pool.map(self._load, indices))) if len(indices) else np.empty((0, 112, 112, 3), np.uint8)


def image_features(model: torch.nn.Module, protocol: IJBProtocol, output_dir: str | os.PathLike, model_key: str,
                   use_flip_test: bool = True, batch_size: int = 128, device: str | None = None, precision: str = "fp32",
                   channels_last: bool = False, workers: int = 4, progress: bool = True) -> tuple[np.ndarray, np.ndarray | None, Path]:
    """(features, flip_features or None, cache file) of the protocol's aligned crops, through the feature cache."""
    crops = AlignedCrops(protocol.image_paths, protocol.landmarks, workers=workers)  # threads start on first use
    try:
        # the crops are aligned by the landmarks: they shape every feature as much as the image files
        dataset = f"{protocol.name}:landmarks {hashlib.sha256(np.ascontiguousarray(protocol.landmarks).tobytes()).hexdigest()}"
        return cached_features(model, crops, output_dir, protocol.prefix, dataset, model_key, use_flip_test,
                               batch_size, device, precision, channels_last, progress, desc=f"{protocol.name} images",
                               files=protocol.image_paths)
    finally:
        crops.pool.shutdown()
