"""IJB-B / IJB-C evaluation of a model (docs/evaluation.md): 1:1 TAR@FAR table, ROC plot, 1:N identification.

Outputs in `output_dir`: `verification_result.csv` (TAR in %, one row per run mode),
`verification_result.json`, `roc.png` (log FAR), `identification_result.csv` (when the 1:N
files exist) and the cached image features (`features_*.npz`) that let another mode re-run
without the network.
"""
from __future__ import annotations

import csv
import io
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from facetrain.eval.ijb_data import IJBProtocol, load_identification_lists, load_protocol
from facetrain.eval.ijb_features import image_features
from facetrain.eval.ijb_identify import evaluate_identification
from facetrain.eval.ijb_verify import (mode_features, mode_name, score_pairs, template_features, template_rows,
                                       verification_metrics)
from facetrain.eval.plots import plot_roc
from facetrain.eval.roc import FAR_TARGETS
from facetrain.io_utils import atomic_write_bytes, atomic_write_json, encode_text


@dataclass(frozen=True)
class IJBMode:
    fusion_method: str = "pre_norm_vector_add"
    use_flip_test: bool = True
    use_norm_score: bool | None = None   # None: AdaFace's rule (norm kept for pre_norm_vector_add)
    use_detector_score: bool = False

    @property
    def name(self) -> str:
        return mode_name(self.fusion_method, self.use_flip_test, self.use_norm_score, self.use_detector_score)


def _csv_text(header: list[str], rows: list[list]) -> bytes:
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(header)
    writer.writerows(rows)
    return encode_text(buf.getvalue())


def format_table(dataset: str, mode: str, tar: dict[float, float]) -> str:
    """insightface's printed table: TAR in % with two decimals per FAR column."""
    cols = [f"{far:.0e}" for far in tar]
    head = f"{'method':<40} " + " ".join(f"{c:>7}" for c in cols)
    row = f"{(mode + '-' + dataset):<40} " + " ".join(f"{100 * v:7.2f}" for v in tar.values())
    return head + "\n" + row


def evaluate_ijb_features(protocol: IJBProtocol, features: np.ndarray, flip_features: np.ndarray | None,
                          mode: IJBMode, output_dir: str | os.PathLike, label: str = "model",
                          progress: bool = True) -> dict:
    """Everything after feature extraction: template pooling, 1:1 scores and files, 1:N if available."""
    output_dir = Path(output_dir)
    img_feats = mode_features(features, flip_features, protocol.faceness, mode.fusion_method, mode.use_flip_test,
                              mode.use_norm_score, mode.use_detector_score)
    feats, unique = template_features(img_feats, protocol.templates, protocol.medias)
    pair_file = str(protocol.meta_dir / f"{protocol.prefix}_template_pair_label.txt")
    rows1 = template_rows(unique, protocol.pair_t1, pair_file)
    rows2 = template_rows(unique, protocol.pair_t2, pair_file)
    scores = score_pairs(feats, rows1, rows2, progress=progress)
    metrics = verification_metrics(scores, protocol.pair_label)
    tar = metrics["tar_at_far"]
    method = f"{label}-{mode.name}"
    result = {
        "dataset": protocol.name, "method": method, "mode": mode.name, "fusion_method": mode.fusion_method,
        "use_flip_test": mode.use_flip_test, "use_norm_score": bool(mode.use_norm_score if mode.use_norm_score is not None
                                                                    else mode.fusion_method == "pre_norm_vector_add"),
        "use_detector_score": mode.use_detector_score,
        "tar_at_far": {f"{far:.0e}": v for far, v in tar.items()}, "auc": metrics["auc"],
        "images": len(protocol.image_paths), "templates": int(len(unique)),
        "pairs": metrics["pairs"], "genuine_pairs": metrics["genuine"],
    }
    header = ["method", "dataset", "mode"] + [f"TAR@FAR={far:.0e}" for far in FAR_TARGETS] + ["AUC"]
    row = [method, protocol.name, mode.name] + [f"{100 * tar[f]:.4f}" for f in FAR_TARGETS] + [f"{metrics['auc']:.6f}"]
    atomic_write_bytes(output_dir / "verification_result.csv", _csv_text(header, [row]))
    plot_roc({f"{method} (AUC {100 * metrics['auc']:.2f}%)": (metrics["fpr"], metrics["tpr"])},
             output_dir / "roc.png", title=f"ROC on {protocol.name}")
    lists = load_identification_lists(protocol.meta_dir, protocol.name)
    if isinstance(lists, str):
        result["identification"] = None
        result["identification_skipped"] = lists
    else:
        ident = evaluate_identification(img_feats, protocol.templates, protocol.medias, lists)
        result["identification"] = ident
        keys = list(ident)
        atomic_write_bytes(output_dir / "identification_result.csv",
                           _csv_text(["method", "dataset", "mode", *keys],
                                     [[method, protocol.name, mode.name, *[ident[k] for k in keys]]]))
    atomic_write_json(output_dir / "verification_result.json", result)
    return result


def run_ijb(model: torch.nn.Module, data_root: str | os.PathLike, dataset_name: str, output_dir: str | os.PathLike,
            model_key: str, mode: IJBMode = IJBMode(), batch_size: int = 128, device: str | None = None,
            precision: str = "fp32", channels_last: bool = False, workers: int = 4, label: str = "model",
            progress: bool = True) -> dict:
    """Read the protocol, embed (or read cached features), evaluate; `model_key` identifies the model
    for the feature cache (see `feature_cache.checkpoint_key`)."""
    protocol = load_protocol(data_root, dataset_name)
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    features, flips, cache = image_features(model, protocol, output_dir, model_key, mode.use_flip_test, batch_size,
                                            device, precision, channels_last, workers, progress)
    result = evaluate_ijb_features(protocol, features, flips, mode, output_dir, label, progress)
    result["feature_cache"] = str(cache)
    atomic_write_json(output_dir / "verification_result.json", result)
    return result
