"""Similarity of a few face photos: align each, embed, cosine matrix; optionally a heatmap PNG with
the aligned faces along both axes (what `python inference.py` and `facetrain compare` show)."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from torch import nn

from facetrain.alignment.aligner import FaceAligner, read_rgb
from facetrain.errors import DataError
from facetrain.eval.finite import refuse_non_finite
from facetrain.infer import to_input
from facetrain.io_utils import atomic_path


def compare_images(
    model: nn.Module, paths: str | os.PathLike | list[str | os.PathLike], aligner: FaceAligner,
    device: str | torch.device = "cpu"
) -> tuple[list[np.ndarray], np.ndarray]:
    """(aligned RGB faces, (N,N) cosine similarity) of a list of photos (or one: 1x1). NoFaceError/DataError
    name the failing image."""
    if isinstance(paths, (str, os.PathLike)):  # one photo, not the characters of its name
        paths = [paths]
    if not isinstance(paths, (list, tuple)) or not paths:
        raise DataError(f"compare needs a list of at least one image path, got {type(paths).__name__} {paths!r}")
    faces = [aligner.align(read_rgb(p), str(p)) for p in paths]
    model = model.to(device).eval()
    with torch.inference_mode():
        embeddings = torch.cat([model(to_input(face).to(device))[0] for face in faces]).float().cpu()
    refuse_non_finite([embeddings], model, "images")
    return faces, (embeddings @ embeddings.T).numpy()


def format_matrix(similarity: np.ndarray, names: list[str | os.PathLike]) -> str:
    """The matrix as a text table whose rows and columns are numbered like the listed images."""
    lines = [f"[{k}] {name}" for k, name in enumerate(names)]
    lines.append("     " + "".join(f"{f'[{k}]':>8}" for k in range(len(names))))
    lines += [f"{f'[{i}]':<5}" + "".join(f"{v:8.4f}" for v in row) for i, row in enumerate(similarity)]
    return "\n".join(lines)


def plot_similarity(faces: list[np.ndarray], similarity: np.ndarray, names: list[str], path: str | os.PathLike) -> None:
    """Heatmap of `similarity` with each aligned face beside its row and above its column; PNG, atomic."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(faces)
    cell = 1.3
    fig = plt.figure(figsize=(cell * (n + 1) + 1.0, cell * (n + 1)))
    grid = fig.add_gridspec(n + 1, n + 2, width_ratios=[1] * (n + 1) + [0.25], wspace=0.05, hspace=0.05)
    heat = fig.add_subplot(grid[1:, 1 : n + 1])
    image = heat.imshow(similarity, vmin=-1.0, vmax=1.0, cmap="RdYlGn", aspect="auto")  # rows meet the faces
    for i in range(n):
        for j in range(n):
            heat.text(j, i, f"{similarity[i, j]:.3f}", ha="center", va="center", fontsize=9)
    heat.set_xticks(range(n), [Path(name).name for name in names], rotation=30, ha="right", fontsize=7)
    heat.set_yticks([])
    for k, face in enumerate(faces):
        for spot in (grid[0, k + 1], grid[k + 1, 0]):
            ax = fig.add_subplot(spot)
            ax.imshow(face)
            ax.axis("off")
    fig.colorbar(image, cax=fig.add_subplot(grid[1:, n + 1]), label="cosine similarity")
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)
