"""Use a trained backbone: load it (`load_model`: AdaFace's released files or ours), turn an aligned face
into its input (`to_input`), and embed a whole folder of faces.

Nothing is downloaded unless asked: released checkpoints are looked up in `./pretrained/`, then
`$FACETRAIN_HOME/pretrained/` (see `facetrain.models.released` and pretrained/README.md).
"""
from __future__ import annotations

import os
import threading
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import torch
from PIL import Image
from torch import nn

from facetrain.alignment.aligner import FaceAligner, read_rgb
from facetrain.checkpoint import load_backbone
from facetrain.data.formats.image_codec import IMAGE_EXTENSIONS, parallel_map, read_file_bgr
from facetrain.data.transforms import to_tensor
from facetrain.devices import resolve_device
from facetrain.errors import ConfigError, DataError
from facetrain.io_utils import atomic_path
from facetrain.models.released import resolve_checkpoint


def load_model(name_or_path: str | os.PathLike, device: str | torch.device | None = None, sha256: str | None = None,
               download: bool = False) -> nn.Module:
    """A backbone in eval mode: a released AdaFace name (`ir_50`, `ir101_webface12m`), a checkpoint
    path, or `hf://owner/repo/file` (from the local cache unless `download`). `model.threshold_cosine`
    is its decision threshold: the one `facetrain calibrate --save` stored at a chosen FAR, else the one
    its training run measured on validation, else None; `model.threshold_source` says which, and
    `model.calibration` holds the stored calibration record (None without one)."""
    from facetrain.calibration_store import describe, stored_calibration

    path, arch = resolve_checkpoint(name_or_path, sha256=sha256, download=download)
    model, info = load_backbone(path, arch=arch)
    calibrated = stored_calibration(path, info["facetrain"])
    model.calibration = calibrated
    best = info["facetrain"].get("extra", {}).get("best", {}) if info["facetrain"] else {}
    if calibrated is not None:
        model.threshold_cosine, model.threshold_source = float(calibrated["threshold"]), describe(calibrated)
    elif best.get("threshold_cosine") is not None:
        model.threshold_cosine = best["threshold_cosine"]
        model.threshold_source = "the training run's best validation accuracy (10-fold mean threshold)"
    else:
        model.threshold_cosine, model.threshold_source = None, None
    return model.to(resolve_device(device)).eval()


def load_pretrained_model(arch_or_path: str | os.PathLike = "ir_50", device: str | torch.device = "cpu",
                          sha256: str | None = None, download: bool = False) -> nn.Module:
    """The seed's name for `load_model`, with its defaults (`ir_50`, on the CPU)."""
    return load_model(arch_or_path, device=device, sha256=sha256, download=download)


def to_input(rgb_face: Image.Image | np.ndarray) -> torch.Tensor:
    """Aligned RGB face (PIL or HxWx3 uint8) -> (1,3,112,112) BGR float tensor, (x/255 - 0.5) / 0.5."""
    if rgb_face is None:
        raise DataError("to_input got None: no face was found in the image (get_aligned_face returned None)")
    rgb = np.asarray(rgb_face.convert("RGB") if isinstance(rgb_face, Image.Image) else rgb_face)
    if rgb.shape != (112, 112, 3):
        raise DataError(f"to_input expects an aligned 112x112 RGB face, got shape {rgb.shape}")
    return to_tensor(np.ascontiguousarray(rgb[:, :, ::-1]))[None]


def list_images(folder: str | os.PathLike) -> list[str]:
    """Image files under `folder`, recursively, as sorted paths relative to it."""
    root = Path(folder)
    if not root.is_dir():
        raise DataError(f"{root}: folder not found")
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        found += [os.path.relpath(os.path.join(dirpath, f), root) for f in filenames
                  if not f.startswith(".") and os.path.splitext(f)[1].lower() in IMAGE_EXTENSIONS]
    return sorted(found)


class _FolderFaces:
    """Slices of a folder's images as uint8 BGR 112x112 batches, decoded in threads (optionally
    detected and aligned). An image that fails becomes a black face and is recorded in `failed`."""

    def __init__(self, root: Path, names: list[str], aligner: FaceAligner | None = None):
        self.root, self.names, self.aligner = root, names, aligner
        self.failed: dict[int, str] = {}
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self.names)

    def _read(self, index: int) -> np.ndarray:
        path = self.root / self.names[index]
        try:
            if self.aligner is None:
                return read_file_bgr(path)
            return cv2.cvtColor(self.aligner.align(read_rgb(path), str(path)), cv2.COLOR_RGB2BGR)
        except DataError as exc:
            with self._lock:
                self.failed[index] = str(exc)
            return np.zeros((112, 112, 3), np.uint8)

    def __getitem__(self, index: slice) -> np.ndarray:
        # MTCNN shares its nets: one thread when aligning, threaded decoding otherwise.
        threads = 1 if self.aligner is not None else None
        return np.stack(list(parallel_map(self._read, range(len(self))[index], threads=threads)))


@dataclass
class FolderEmbeddings:
    paths: list[str]  # relative to the folder, in the order of the rows
    embeddings: np.ndarray  # (N, D) float32, unit length
    norms: np.ndarray  # (N,) float32, the feature norms (AdaFace's quality proxy)
    failed: list[tuple[str, str]] = field(default_factory=list)  # (path, error naming it), not in the rows


def embed_folder(
    model: nn.Module,
    folder: str | os.PathLike,
    batch_size: int = 256,
    device: str | torch.device = "cpu",
    precision: str = "fp32",
    align: bool = False,
    progress: bool = True,
    detector: str = "adaface",
) -> FolderEmbeddings:
    """Embed every image under `folder`: aligned 112x112 faces, or raw photos with `align=True`
    (MTCNN with `detector` "adaface" or "facenet", see `FaceAligner`)."""
    from facetrain.eval.embed import extract_features

    root = Path(folder)
    names = list_images(root)
    if not names:
        raise DataError(f"{root}: no images found")
    aligner = FaceAligner(device=device, detector=detector) if align else None
    source = _FolderFaces(root, names, aligner)
    features, _ = extract_features(model, source, batch_size=batch_size, device=device, precision=precision,
                                   flip=False, progress=progress)
    ok = np.array([i not in source.failed for i in range(len(names))], dtype=bool)
    norms = np.linalg.norm(features[ok], axis=1)
    return FolderEmbeddings(
        paths=[n for n, good in zip(names, ok) if good],
        embeddings=(features[ok] / np.maximum(norms, 1e-12)[:, None]).astype(np.float32),
        norms=norms.astype(np.float32),
        failed=[(names[i], reason) for i, reason in sorted(source.failed.items())],
    )


def save_embeddings(path: str | os.PathLike, result: FolderEmbeddings) -> None:
    """Write a `.npz`: embeddings (N,D), norms (N,), paths (N,); failed_paths, failed_errors (M,)."""
    path = Path(path)
    if path.suffix != ".npz":
        raise ConfigError(f"{path}: embeddings are written as .npz (embeddings, norms, paths, failed_*)")
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.savez(f, embeddings=result.embeddings, norms=result.norms, paths=np.array(result.paths, dtype=str),
                 failed_paths=np.array([p for p, _ in result.failed], dtype=str),
                 failed_errors=np.array([error for _, error in result.failed], dtype=str))
