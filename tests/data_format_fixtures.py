"""Small drawn faces for the data-format tests (no dependency on the synthetic generator)."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np


def draw_face(identity: int, variant: int) -> np.ndarray:
    """A 112x112 BGR 'face': background and ellipse colour by identity, features shifted by variant."""
    rng = np.random.default_rng(identity * 1000 + variant)
    img = np.full((112, 112, 3), (40 + 20 * (identity % 5), 60, 90 + 15 * (identity % 7)), np.uint8)
    cv2.ellipse(img, (56, 60), (34 + identity % 6, 44), 0, 0, 360, (120, 150 + identity % 50, 200), -1)
    dx = int(rng.integers(-4, 5))
    for x in (42 + dx, 70 + dx):
        cv2.circle(img, (x, 50), 5, (20, 20, 20), -1)
    cv2.line(img, (46 + dx, 84), (66 + dx, 84), (30, 30, 160), 3)
    return img


def faces(n: int, identities: int = 5) -> tuple[np.ndarray, np.ndarray]:
    labels = np.arange(n) % identities
    return np.stack([draw_face(int(l), i) for i, l in enumerate(labels)]), labels


def make_image_folder(root: Path, identities: dict[str, int]) -> Path:
    """`root/imgs/<identity>/<k>.jpg` with the given number of images per identity."""
    for i, (name, count) in enumerate(sorted(identities.items())):
        d = root / "imgs" / name
        d.mkdir(parents=True, exist_ok=True)
        for k in range(count):
            cv2.imwrite(str(d / f"{k}.jpg"), draw_face(i, k))
    return root / "imgs"
