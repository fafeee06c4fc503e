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


def plot_fairness(result: dict, curves: dict[str, tuple[np.ndarray, np.ndarray]], path: str | os.PathLike) -> None:
    """Per-group ROC curves (log FAR) beside each group's FMR and FNMR at the global threshold; PNG, atomic."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (roc_ax, bar_ax) = plt.subplots(1, 2, figsize=(11, 4.5), dpi=120)
    for label, (fpr, tpr) in curves.items():
        x, y = _thin(np.asarray(fpr), np.asarray(tpr))
        roc_ax.plot(x, y, lw=1.2, label=f"{label} ({result['groups'][label]['accuracy'] * 100:.2f}%)")
    roc_ax.set_xscale("log")
    roc_ax.set_xlim(1e-4, 1.0)
    roc_ax.set_ylim(0.0, 1.0)
    roc_ax.grid(linestyle="--", linewidth=0.6)
    roc_ax.set_xlabel("False match rate")
    roc_ax.set_ylabel("True match rate")
    roc_ax.set_title("ROC per group (10-fold accuracy in the legend)")
    roc_ax.legend(loc="lower right", fontsize=8)
    names = list(result["groups"])
    x = np.arange(len(names))
    threshold = result["global_threshold"]
    bar_ax.bar(x - 0.2, [result["groups"][n]["fmr"] for n in names], 0.4, label="FMR", color="tab:red")
    fnmr_ax = bar_ax.twinx()
    fnmr_ax.bar(x + 0.2, [result["groups"][n]["fnmr"] for n in names], 0.4, label="FNMR", color="tab:blue")
    bar_ax.set_xticks(x, names)
    bar_ax.set_ylabel("FMR (false matches)", color="tab:red")
    fnmr_ax.set_ylabel("FNMR (false non-matches)", color="tab:blue")
    bar_ax.set_title(f"at one threshold {threshold['threshold_cosine']:.3f} (pooled FMR {threshold['fmr_target']:g})")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
