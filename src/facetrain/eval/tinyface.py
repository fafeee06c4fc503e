"""TinyFace rank-k identification (AdaFace's `validation_lq/validate_tinyface.py` + `tinyface_helper.py`).

Every aligned image is read as cv2 reads it (BGR, as AdaFace's default `prepare_dataloader`) and
embedded with its horizontal flip; image and flip features are fused (`facetrain.eval.fusion`,
AdaFace's default `pre_norm_vector_add`). The gallery is the gallery-match images followed by the
distractors (label -100). A probe's score against each gallery image is the inner product of the
fused unit features; as in the helper's `DIR_FAR` with FAR 1.0 (closed set), only probes with a
mate in the gallery count, and rank-k is the fraction of them with a mate among their k best
scores. Ties between the best mate and other gallery images count against the probe.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from facetrain.data.formats.image_codec import parallel_map, read_file_bgr
from facetrain.eval.feature_cache import cached_features
from facetrain.eval.fusion import fuse_flip
from facetrain.eval.tinyface_data import TinyFaceProtocol

RANKS = (1, 5, 20)


class ImageFiles:
    """Image source for `extract_features`: slices decode files (cv2, BGR) in threads. The aligned
    release is 112x112 and used as it is; other sizes are resized bilinearly (AdaFace would fail on them)."""

    def __init__(self, paths: Sequence[Path]):
        self.paths = list(paths)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: slice) -> np.ndarray:
        chosen = self.paths[index]
        if not chosen:
            return np.empty((0, 112, 112, 3), np.uint8)
        return np.stack(list(parallel_map(read_file_bgr, chosen)))


def best_mate_ranks(probe: torch.Tensor, probe_labels: torch.Tensor, gallery: torch.Tensor, gallery_labels: torch.Tensor,
                    chunk: int = 256) -> torch.Tensor:
    """For each probe, 1 + the number of non-mates scoring at least as high as its best mate (inner
    products), or 0 when the gallery holds no mate. Computed on the tensors' device, `chunk` probes at a time."""
    ranks = torch.empty(len(probe), dtype=torch.int64, device=probe.device)
    for start in range(0, len(probe), chunk):
        scores = probe[start:start + chunk] @ gallery.T
        mates = probe_labels[start:start + chunk, None] == gallery_labels[None, :]
        best = torch.where(mates, scores, torch.full_like(scores, -torch.inf)).amax(dim=1)
        above = ((scores >= best[:, None]) & ~mates).sum(dim=1)
        ranks[start:start + chunk] = torch.where(mates.any(dim=1), above + 1, torch.zeros_like(above))
    return ranks


def identification_accuracy(probe: np.ndarray, probe_labels: np.ndarray, gallery: np.ndarray, gallery_labels: np.ndarray,
                            ranks: Sequence[int] = RANKS, device: str | torch.device = "cpu") -> dict:
    """Closed-set rank-k accuracy over the probes that have a mate: {"rank_<k>": fraction, ..., counts}."""
    dev = torch.device(device)
    best = best_mate_ranks(torch.as_tensor(probe, device=dev), torch.as_tensor(probe_labels, device=dev),
                           torch.as_tensor(gallery, device=dev), torch.as_tensor(gallery_labels, device=dev))
    mated = best > 0
    counts = {"mated_probes": int(mated.sum()), "probes_without_mate": int((~mated).sum())}
    if counts["mated_probes"] == 0:
        raise ValueError("no probe has a mate in the gallery: rank-k accuracy is undefined")
    hits = {f"rank_{k}": (mated & (best <= k)).sum() for k in ranks}
    return {name: float(count) / counts["mated_probes"] for name, count in hits.items()} | counts


def evaluate_tinyface_features(protocol: TinyFaceProtocol, features: np.ndarray, flip_features: np.ndarray | None,
                               fusion: str = "pre_norm_vector_add", ranks: Sequence[int] = RANKS,
                               device: str | torch.device = "cpu") -> dict:
    """Rank-k accuracies from the features of `protocol.image_paths` (and their flips)."""
    fused, _ = fuse_flip(features, flip_features, fusion)
    result = identification_accuracy(fused[protocol.probe_rows], protocol.probe_labels, fused[protocol.gallery_rows],
                                     protocol.gallery_labels, ranks, device)
    return result | {"probes": len(protocol.probe_labels), "gallery_match": len(protocol.match_labels),
                     "distractors": protocol.num_distractors}


def run_tinyface(model: torch.nn.Module, protocol: TinyFaceProtocol, cache_dir: str | os.PathLike, model_key: str,
                 fusion: str = "pre_norm_vector_add", batch_size: int = 128, device: str | None = None,
                 precision: str = "fp32", channels_last: bool = False, progress: bool = True) -> dict:
    """Embed the protocol's images (or read cached features from `cache_dir`) and score them.
    `model_key` identifies the model for the cache (`feature_cache.checkpoint_key`)."""
    use_flip = fusion != "none"
    features, flips, cache = cached_features(model, ImageFiles(protocol.image_paths), cache_dir, "tinyface",
                                             f"TinyFace:{protocol.aligned_dir.resolve()}", model_key, use_flip,
                                             batch_size, device, precision, channels_last, progress, "TinyFace images",
                                             files=protocol.image_paths)
    result = evaluate_tinyface_features(protocol, features, flips, fusion, RANKS, device or "cpu")
    return {"dataset": "TinyFace", "fusion": fusion, "use_flip_test": use_flip, "precision": precision} | result \
        | {"aligned_dir": str(protocol.aligned_dir), "mat_lists_checked": protocol.mat_lists_checked,
           "feature_cache": str(cache)}
