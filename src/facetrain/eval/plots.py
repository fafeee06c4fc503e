"""ROC curve PNG with a log-FAR axis (matplotlib, headless Agg backend)."""
from __future__ import annotations

import os

import numpy as np

from facetrain.eval.roc import FAR_TARGETS
from facetrain.io_utils import atomic_path


def _thin(fpr: np.ndarray, tpr: np.ndarray, points: int = 2000) -> tuple[np.ndarray, np.ndarray]:
    """At most ~`points` ROC points, log-spaced in FPR (IJB-C has millions), keeping the best TPR at each."""
    if len(fpr) <= points:
        return fpr, tpr
    grid = np.logspace(-7, 0, points)
    idx = np.unique(np.clip(np.searchsorted(fpr, grid, side="right") - 1, 0, len(fpr) - 1))
    return fpr[idx], tpr[idx]


def plot_roc(curves: dict[str, tuple[np.ndarray, np.ndarray]], path: str | os.PathLike, title: str = "ROC") -> None:
    """Write the ROC curves {label: (fpr, tpr)} to a PNG, FAR on a log axis from 1e-6 to 1e-1."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4.5), dpi=120)
    for label, (fpr, tpr) in curves.items():
        x, y = _thin(np.asarray(fpr), np.asarray(tpr))
        ax.plot(x, y, lw=1.2, label=label)
    ax.set_xscale("log")
    ax.set_xlim(FAR_TARGETS[0], FAR_TARGETS[-1])
    ax.set_ylim(0.0, 1.0)
    ax.set_xticks(FAR_TARGETS)
    ax.grid(linestyle="--", linewidth=0.6)
    ax.set_xlabel("False accept rate (FAR)")
    ax.set_ylabel("True accept rate (TAR)")
    ax.set_title(title)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
