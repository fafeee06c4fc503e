"""Evaluating a checkpoint's demographic fairness: load the model and the group sets, score, print,
write the JSON and the plot."""
from __future__ import annotations

import os
from typing import Sequence


def evaluate_fairness(ckpt: str | os.PathLike, rfw: str | os.PathLike | None = None, groups: Sequence[str] | None = None,
                      fmr: float = 1e-3, arch: str | None = None, batch_size: int = 256, device=None,
                      precision: str = "fp32", plot_path: str | os.PathLike | None = None,
                      progress: bool = True) -> dict:
    """The fairness metrics (`facetrain.eval.fairness`) of `ckpt` on RFW (`rfw`) or `NAME=SET` groups;
    prints the table, writes the plot when asked, returns the result."""
    from facetrain.checkpoint import load_backbone
    from facetrain.data.formats.rfw import load_group_sets, load_mapped_sets, parse_group_mapping
    from facetrain.eval.calibration import check_far
    from facetrain.eval.fairness import fairness_metrics, format_fairness, group_scores
    from facetrain.eval.plots import plot_fairness
    from facetrain.eval.roc import roc_curve

    check_far(fmr)
    sets = load_group_sets(rfw) if rfw is not None else load_mapped_sets(parse_group_mapping(groups or []))
    model, _ = load_backbone(ckpt, arch)
    scores = group_scores(model, sets, batch_size=batch_size, device=device, precision=precision, progress=progress)
    result = fairness_metrics(scores, fmr=fmr)
    result["source"] = {"ckpt": str(ckpt), "rfw" if rfw is not None else "groups": str(rfw) if rfw else list(groups)}
    print(format_fairness(result))
    if plot_path:
        curves = {name: roc_curve(issame, cosine)[:2] for name, (cosine, issame) in scores.items()}
        plot_fairness(result, curves, plot_path)
        print(f"plot: {plot_path}")
    return result
