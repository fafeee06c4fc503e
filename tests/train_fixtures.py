"""Tiny face-like datasets for the training tests: per-identity colour patterns plus noise, written
as an image folder (`<root>/train/imgs/<id>/<n>.png`) and a `.bin` verification set of held-out
identities (`<root>/val/lfw.bin`). Fast to write and easy enough to learn in a few steps."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from facetrain.data.formats.bin import write_bin


def _pattern(rng: np.random.Generator) -> np.ndarray:
    return cv2.resize(rng.integers(0, 256, (6, 6, 3), dtype=np.uint8), (112, 112), interpolation=cv2.INTER_LINEAR)


def _sample(base: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    return np.clip(base.astype(np.int16) + rng.integers(-20, 21, base.shape), 0, 255).astype(np.uint8)


def make_dataset(root: Path, classes: int = 6, per_class: int = 8, val_pairs: int = 20, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    for c in range(classes):
        base, folder = _pattern(rng), root / "train" / "imgs" / f"id{c:03d}"
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            cv2.imwrite(str(folder / f"{i}.png"), _sample(base, rng))
    held_out = [_pattern(rng) for _ in range(10)]
    images, issame = [], []
    for k in range(val_pairs):
        a = k % 10
        b = a if k % 2 == 0 else (a + 1) % 10
        images += [_sample(held_out[a], rng), _sample(held_out[b], rng)]
        issame.append(a == b)
    (root / "val").mkdir(parents=True, exist_ok=True)
    write_bin(root / "val" / "lfw.bin", images, issame)
    return root


def train_args(root: Path, out: Path, *extra: str) -> list[str]:
    """Small CPU run: tinynet, 6 batches of 8 per epoch, no workers."""
    return ["--data_root", str(root), "--train_data_path", "train/imgs", "--val_data_path", "val",
            "--arch", "tinynet", "--batch_size", "8", "--num_workers", "0", "--gpus", "0",
            "--output_dir", str(out), "--no_progress", *extra]
