"""`run_audit`: embed a training set (and reference sets), measure it, write `audit.json` and `audit.html`."""
from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from facetrain.audit.calibrate import MIN_FIT_IDENTITIES, collision_fit, notice, threshold_from_fit, verification_impostors
from facetrain.audit.chance import MIN_PAIRS, ImpostorFit, excess_test, fit_impostors
from facetrain.audit.clusters import collision_clusters
from facetrain.audit.embeddings import Embedder, file_hash
from facetrain.audit.filtered import DROP_KINDS, write_filtered
from facetrain.audit.identities import identity_neighbours, identity_stats
from facetrain.audit.leakage import audit_reference
from facetrain.audit.mislabels import suspected_mislabels
from facetrain.audit.page import write_figures, write_html
from facetrain.audit.sections import (collisions_section, distribution, inter_section, intra_section, summary_section,
                                      uniqueness)
from facetrain.audit.sources import AuditSet, open_references, open_training_set, verification_audit_set
from facetrain.audit.threshold import DEFAULT_FAR, DatasetImpostors, Threshold
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
    drop: tuple[str, ...] = DROP_KINDS
    device: str = "cpu"
    batch_size: int = 256
    arch: str | None = None
    fusion: str = "pre_norm_vector_add"
    top: int = 20
    progress: bool = True


def _calibration_set(path: Path) -> AuditSet:
    if path.suffix != ".bin" or not path.is_file():
        raise DataError(f"{path}: --calibration expects a verification .bin file")
    vset = read_bin(path)
    if vset.issame.all() or not vset.issame.any():
        raise DataError(f"{path}: needs both matching and non-matching pairs to calibrate a threshold")
    return verification_audit_set(vset, f".bin {path}", [path])


def _calibration_fit(cal: AuditSet, path: Path, embedder: Embedder, out: Path, cache_state: dict) -> ImpostorFit:
    embeddings, _, cache_state["calibration"] = embedder.embed(cal, out)
    fit = fit_impostors(verification_impostors(embeddings, cal.issame)[1], f"non-matching pairs of {path}")
    if fit is None:
        raise DataError(f"{path}: too few non-matching pairs to calibrate a threshold (at least {MIN_PAIRS})")
    return fit


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
        if flagged <= excluded or not impostors.kept(excluded | flagged).any():
            break  # no new collision, or every identity pair collides: nothing is left to calibrate on
        excluded |= flagged
    threshold.details["rounds"] = rounds
    return threshold, identities


def _collisions(train_emb: np.ndarray, data: AuditSet, stats, options: AuditOptions, calibration: ImpostorFit | None):
    """(threshold, identity neighbours, chance test or None) for identity collisions (see audit.calibrate)."""
    fit = collision_fit(stats)
    if fit is not None:
        threshold = threshold_from_fit(fit, options.far, options.threshold)
    elif options.threshold is not None:
        threshold = Threshold(float(options.threshold), "given")
    elif calibration is not None:
        threshold = threshold_from_fit(calibration, options.far, None)
    else:
        notice(f"{len(stats.labels)} identities are too few to fit the spread of their similarities (at least "
               f"{MIN_FIT_IDENTITIES}); the collision threshold comes from the dataset's image impostors")
        threshold, identities = _self_calibrated(train_emb, data.labels, stats, options)
        return threshold, identities, None
    identities = identity_neighbours(stats, threshold.value, options.device, options.progress)
    pairs = len(stats.labels) * (len(stats.labels) - 1) // 2
    return threshold, identities, (excess_test(identities.score, pairs, fit, threshold.value, score="similarity")
                                   if fit else None)


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


def _validate(options: AuditOptions) -> Path:
    if options.threshold is not None and not -1.0 <= options.threshold <= 1.0:
        raise ConfigError(f"--threshold is a cosine in [-1, 1], got {options.threshold}")
    if not 0.0 < options.far < 1.0:
        raise ConfigError(f"--far must be in (0, 1), got {options.far}")
    if options.batch_size < 1:
        raise ConfigError(f"--batch_size must be at least 1, got {options.batch_size}")
    unknown = set(options.drop) - set(DROP_KINDS)
    if unknown:
        raise ConfigError(f"--drop: unknown kind {', '.join(sorted(unknown))} (choose from {', '.join(DROP_KINDS)})")
    if options.top < 0:
        raise ConfigError(f"--top must be 0 or more, got {options.top}")
    out = Path(options.out_dir)
    _check_out_outside_data(out, options.data)
    return out


def run_audit(options: AuditOptions) -> dict:
    out = _validate(options)
    timings: dict[str, float] = {}
    tic = time.perf_counter()
    data = open_training_set(options.data)
    references = open_references(list(options.references))
    cal_set = _calibration_set(Path(options.calibration)) if options.calibration else None
    embedder = _load_model(options)
    cache_state = {}
    calibration = _calibration_fit(cal_set, Path(options.calibration), embedder, out, cache_state) if cal_set else None
    train_emb, norms, cache_state["data"] = embedder.embed(data, out)
    ref_emb = {}
    for ref in references:
        ref_emb[ref.name], _, cache_state[f"reference {ref.name}"] = embedder.embed(ref, out)
    timings["embed_s"] = time.perf_counter() - tic

    tic = time.perf_counter()
    stats = identity_stats(train_emb, data.labels)
    threshold, identities, collision_chance = _collisions(train_emb, data, stats, options, calibration)
    clusters = collision_clusters(zip(identities.query, identities.key))
    training_fit = lambda: fit_impostors(DatasetImpostors(train_emb, data.labels).scores, "training image impostors")
    leakage, leaks = {}, {}
    for ref in references:
        leakage[ref.name], leaks[ref.name] = audit_reference(
            ref, ref_emb[ref.name], data, train_emb, stats, options.threshold, options.far, calibration, training_fit,
            options.device, options.progress)
    timings["search_s"] = time.perf_counter() - tic

    collisions = collisions_section(data, stats, identities, clusters)
    collisions["chance"] = collision_chance
    report = {
        "model": {"checkpoint": str(options.checkpoint), "arch": embedder.model.arch, "fusion": options.fusion,
                  "embedding_size": int(train_emb.shape[1])},
        "threshold": threshold.as_json(),
        "summary": summary_section(data, stats) | leak_summary(leakage)
                   | {"feature_norm": distribution(norms), "uniqueness": uniqueness(stats, clusters)},
        "intra_class": intra_section(data, stats, options.top, train_emb)
                       | suspected_mislabels(data, train_emb, stats, options.device),
        "inter_class": inter_section(data, stats, identities),
        "collisions": collisions,
        "leakage": leakage,
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
        report["filtered"] = {k: v for k, v in write_filtered(report, data, options.write_filtered, options.drop, options.progress).items()
                              if k in ("result", "links")} | {"dropped": str(Path(options.write_filtered))}
    timings["report_s"] = time.perf_counter() - tic
    report["timings"] = timings
    atomic_write_json(out / REPORT_NAME, report)
    write_html(report, figures, out / HTML_NAME)
    return report


def leak_summary(leakage: dict) -> dict:
    """Leaked images and identities summed over the references whose excess over chance is significant."""
    return {"leaking_references": sorted(name for name, v in leakage.items() if v["leak"]),
            "leaked_images": sum(v["leaked_train_images"] for v in leakage.values()),
            "leaked_identities": sum(v["leaked_train_identities"] for v in leakage.values())}


def format_summary(report: dict) -> str:
    s, t, c = report["summary"], report["threshold"], report["collisions"]
    intra = report["intra_class"]
    lines = [f"audit: {s['identities']} identities, {s['images']} images; collision threshold {t['value']:.4f} "
             f"({t['source']})",
             f"  intra-class consistency: median {intra['distribution']['p50']:.3f}; suspected mislabels: "
             f"{len(intra['suspected_mislabels'])} of {intra['judged_images']} images",
             f"  collisions: {len(c['pairs'])} identity pairs in {len(c['clusters'])} clusters "
             f"({c['identities_to_drop']} identities to drop)"
             + (f"; {c['chance']['expected_by_chance']:.3g} pairs expected by chance" if c["chance"] else "")]
    for name, leak in report["leakage"].items():
        line = f"  leakage {name}: {leak['verdict']}"
        if leak["identity_level"] is not None:
            line += f"; identities: {leak['identity_level']['verdict']}"
        lines.append(line)
    if report["leakage"]:
        lines.append(f"  leaked: {s['leaked_images']} training images, {s['leaked_identities']} training identities"
                     if s["leaking_references"] else "  no leakage: every reference is consistent with chance")
    return "\n".join(lines)
