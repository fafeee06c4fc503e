"""The audit's pictures as PNG files: face grids (rows of images with gaps) and cosine histograms (matplotlib)."""
from __future__ import annotations

import os
from typing import Sequence

import cv2
import numpy as np

from facetrain.io_utils import atomic_path, atomic_write_bytes



def face_rows(rows: Sequence[Sequence[np.ndarray | None]], path: str | os.PathLike, thumb: int = 80) -> None:
    """One grid row per entry; None leaves a blank gap (e.g. between the two sides of a pair)."""
    width = max(len(r) for r in rows)
    grid = np.full((len(rows) * (thumb + 4), width * (thumb + 4)), 255, np.uint8)
    grid = np.repeat(grid[:, :, None], 3, axis=2)
    for y, row in enumerate(rows):
        for x, face in enumerate(row):
            if face is not None:
                top, left = y * (thumb + 4) + 2, x * (thumb + 4) + 2
                grid[top : top + thumb, left : left + thumb] = cv2.resize(face, (thumb, thumb), interpolation=cv2.INTER_AREA)
    ok, png = cv2.imencode(".png", grid)
    if not ok:
        raise OSError(f"could not encode {path}")
    atomic_write_bytes(path, png.tobytes())


def cosine_histograms(series: dict[str, np.ndarray], threshold: float, path: str | os.PathLike, title: str,
                      xlabel: str) -> None:
    """Step histograms of several cosine series (density) on one axis, with the threshold as a vertical line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4), dpi=110)
    bins = np.linspace(-0.5, 1.0, 76)
    for label, values in series.items():
        if len(values):
            ax.hist(np.clip(values, bins[0], bins[-1]), bins, density=True, histtype="step", lw=1.5,
                    label=f"{label} (n={len(values)})")
    ax.axvline(threshold, color="crimson", ls="--", lw=1.2, label=f"threshold {threshold:.3f}")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("density")
    ax.set_title(title)
    ax.legend(fontsize=8)
    ax.grid(ls=":", lw=0.5)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
