"""`run_audit`: embed a training set (and reference sets), measure it, write `audit.json` and `audit.html`."""
from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from facetrain.audit.clusters import collision_clusters
from facetrain.audit.embeddings import Embedder, file_hash
from facetrain.audit.filtered import write_filtered
from facetrain.audit.identities import identity_neighbours, identity_stats, reference_identity_matches
from facetrain.audit.neighbours import search
from facetrain.audit.page import write_figures, write_html
from facetrain.audit.sections import collisions_section, inter_section, intra_section, leakage_section, summary_section
from facetrain.audit.sources import AuditSet, open_references, open_training_set, verification_audit_set
from facetrain.audit.threshold import DEFAULT_FAR, DatasetImpostors, Threshold, calibration_threshold
from facetrain.checkpoint import load_backbone
from facetrain.data.formats.bin import read_bin
from facetrain.data.formats.image_folder import resolve_imgs_dir
from facetrain.errors import ConfigError, DataError
from facetrain.io_utils import atomic_write_json

SELF_CALIBRATION_ROUNDS = 5
REPORT_NAME = "audit.json"
HTML_NAME = "audit.html"


@dataclass
class AuditOptions:
    data: str | os.PathLike
    checkpoint: str | os.PathLike
    out_dir: str | os.PathLike
    references: list[str | os.PathLike] = field(default_factory=list)
    threshold: float | None = None
    far: float = DEFAULT_FAR
    calibration: str | os.PathLike | None = None
    write_filtered: str | os.PathLike | None = None
    device: str = "cpu"
    batch_size: int = 256
    arch: str | None = None
    fusion: str = "pre_norm_vector_add"
    top: int = 20
    progress: bool = True


def _calibration_set(path: Path) -> tuple[AuditSet, np.ndarray]:
    if path.suffix != ".bin" or not path.is_file():
        raise DataError(f"{path}: --calibration expects a verification .bin file")
    vset = read_bin(path)
    if vset.issame.all() or not vset.issame.any():
        raise DataError(f"{path}: needs both matching and non-matching pairs to calibrate a threshold")
    return verification_audit_set(vset, f".bin {path}", [path]), vset.issame


def _load_model(options: AuditOptions) -> Embedder:
    path = Path(options.checkpoint)
    if not path.is_file():
        raise ConfigError(f"{path}: checkpoint not found")
    model, _ = load_backbone(path, options.arch)
    return Embedder(model, file_hash(path), options.device, options.batch_size, options.fusion, options.progress)


def _self_calibrated(embeddings: np.ndarray, labels: np.ndarray, stats, options: AuditOptions):
    """Threshold on the dataset's own impostors without the pairs of colliding identities (see audit.threshold):
    set it, find collisions, leave their pairs out, repeat until no new collision (at most a few rounds)."""
    impostors = DatasetImpostors(embeddings, labels)
    excluded: set[tuple[int, int]] = set()
    for rounds in range(1, SELF_CALIBRATION_ROUNDS + 1):
        threshold = impostors.threshold(options.far, excluded)
        identities = identity_neighbours(stats, threshold.value, options.device, options.progress)
        flagged = {(int(stats.labels[a]), int(stats.labels[b])) for a, b in zip(identities.query, identities.key)}
        if flagged <= excluded:
            break
        excluded |= flagged
    threshold.details["rounds"] = rounds
    return threshold, identities


def _check_out_outside_data(out: Path, data: str | os.PathLike) -> None:
    """An output folder inside an image folder would be read as one more identity by the next audit."""
    if not Path(data).is_dir():
        return
    try:
        images = resolve_imgs_dir(data, require_imgs=False).resolve()
    except DataError:
        return  # not an image folder (RecordIO, memfile): nothing of ours is read from it
    target = out.resolve()
    if target == images or images in target.parents:
        raise ConfigError(f"{out}: the output folder is inside the audited image folder {data}; choose one outside it")


def run_audit(options: AuditOptions) -> dict:
    if options.threshold is not None and not -1.0 <= options.threshold <= 1.0:
        raise ConfigError(f"--threshold is a cosine in [-1, 1], got {options.threshold}")
    if not 0.0 < options.far < 1.0:
        raise ConfigError(f"--far must be in (0, 1), got {options.far}")
    out = Path(options.out_dir)
    _check_out_outside_data(out, options.data)
    timings: dict[str, float] = {}
    tic = time.perf_counter()
    data = open_training_set(options.data)
    references = open_references(list(options.references))
    calibration = _calibration_set(Path(options.calibration)) if options.calibration and options.threshold is None else None
    embedder = _load_model(options)
    out.mkdir(parents=True, exist_ok=True)
    cache_state = {}
    train_emb, cache_state["data"] = embedder.embed(data, out)
    ref_emb = {}
    for ref in references:
        ref_emb[ref.name], cache_state[f"reference {ref.name}"] = embedder.embed(ref, out)
    timings["embed_s"] = time.perf_counter() - tic

    tic = time.perf_counter()
    stats = identity_stats(train_emb, data.labels)
    if options.threshold is not None or calibration is not None:
        if options.threshold is not None:
            threshold = Threshold(float(options.threshold), "given")
        else:
            cal_emb, cache_state["calibration"] = embedder.embed(calibration[0], out)
            threshold = calibration_threshold(cal_emb, calibration[1], options.far, str(options.calibration))
        identities = identity_neighbours(stats, threshold.value, options.device, options.progress)
    else:
        threshold, identities = _self_calibrated(train_emb, data.labels, stats, options)
    clusters = collision_clusters(zip(identities.query, identities.key))
    leaks = {ref.name: search(ref_emb[ref.name], train_emb, threshold.value, device=options.device,
                              progress=options.progress, desc=f"leakage {ref.name}") for ref in references}
    identity_leaks = {}
    for ref in references:
        if ref.labels is not None:
            ref_stats = identity_stats(ref_emb[ref.name], ref.labels)
            identity_leaks[ref.name] = (ref_stats, stats, reference_identity_matches(
                ref_stats, stats, threshold.value, options.device, options.progress, f"leakage {ref.name} identities"))
    timings["search_s"] = time.perf_counter() - tic

    report = {
        "model": {"checkpoint": str(options.checkpoint), "arch": embedder.model.arch, "fusion": options.fusion,
                  "embedding_size": int(train_emb.shape[1])},
        "threshold": threshold.as_json(),
        "summary": summary_section(data, stats),
        "intra_class": intra_section(data, stats, options.top),
        "inter_class": inter_section(data, stats, identities),
        "collisions": collisions_section(data, stats, identities, clusters),
        "leakage": {ref.name: leakage_section(ref, data, leaks[ref.name], threshold.details.get("achieved_far"),
                                              identity_leaks.get(ref.name)) for ref in references},
        "embeddings": cache_state,
    }
    tic = time.perf_counter()
    order = np.argsort(-identities.score, kind="stable")
    leak_pairs = {}
    for name, found in leaks.items():
        best_first = np.lexsort((found.key, found.query, -found.score))
        leak_pairs[name] = (found.query[best_first], found.key[best_first])
    figures = write_figures(report, data, stats, {r.name: r for r in references},
                            {name: found.best_score for name, found in leaks.items()}, leak_pairs,
                            np.argsort(stats.consistency, kind="stable"),
                            [(int(identities.query[k]), int(identities.key[k])) for k in order], out / "figures")
    if options.write_filtered:
        report["filtered"] = {k: v for k, v in write_filtered(report, data, options.write_filtered, options.progress).items()
                              if k in ("result", "links")} | {"dropped": str(Path(options.write_filtered))}
    timings["report_s"] = time.perf_counter() - tic
    report["timings"] = timings
    atomic_write_json(out / REPORT_NAME, report)
    write_html(report, figures, out / HTML_NAME)
    return report


def format_summary(report: dict) -> str:
    s, t, c = report["summary"], report["threshold"], report["collisions"]
    lines = [f"audit: {s['identities']} identities, {s['images']} images; threshold {t['value']:.4f} ({t['source']})",
             f"  intra-class consistency: median {report['intra_class']['distribution']['p50']:.3f}",
             f"  collisions: {len(c['pairs'])} identity pairs in {len(c['clusters'])} clusters "
             f"({c['identities_to_drop']} identities to drop)"]
    for name, leak in report["leakage"].items():
        lines.append(f"  leakage {name}: {leak['pair_count']} pairs, {leak['reference_images']} reference images, "
                     f"{leak['train_images']} training images; {leak['train_identities']} training identities"
                     + ("" if leak["identity_pairs"] is None else f" ({len(leak['identity_pairs'])} identity pairs)"))
    return "\n".join(lines)
