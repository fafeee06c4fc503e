"""`check_dataset`: every hygiene check that applies to a `.bin`, a memfile, a folder of sets, an image
folder or a RecordIO, as one JSON-ready dict with a verdict per check."""
from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np

from facetrain.errors import DataError

LABELLED_SAMPLE_IDENTITIES, LABELLED_SAMPLE_IMAGES = 40, 4


def _encoded_sizes(bins, sample: int) -> list[str]:
    sizes = set()
    for data in bins[:sample]:
        image = cv2.imdecode(np.frombuffer(bytes(data), np.uint8), cv2.IMREAD_COLOR)
        if image is not None:
            sizes.add(f"{image.shape[1]}x{image.shape[0]}")
    return sorted(sizes)


def _pair_set(name: str, kind: str, path: Path, model, sample: int, options: dict) -> dict:
    from facetrain.data.formats.bin import find_unreadable, load_encoded, read_bin
    from facetrain.data.formats.memfile import load_validation_sets
    from facetrain.fingerprint import file_sha256
    from facetrain.hygiene.alignment_check import check_alignment
    from facetrain.hygiene.channels import check_pair_channels
    from facetrain.hygiene.duplicates import duplicate_report
    from facetrain.hygiene.published import count_verdict

    entry: dict = {"name": name, "format": kind, "path": str(path)}
    if kind == "bin":
        bins, issame = load_encoded(path)
        entry["sha256"] = file_sha256(path)
        entry["image_sizes"] = _encoded_sizes(bins, sample)
        entry["unreadable"] = find_unreadable(bins, str(path))
        if entry["unreadable"]:
            entry["skipped"] = "image checks skipped: undecodable images"
            entry["counts"] = count_verdict(name, len(issame), int(np.sum(issame)))
            return entry
        vset = read_bin(path)
    else:
        vset = load_validation_sets(path.parent if path.is_file() else path, [name])[name]
        entry["image_sizes"] = [f"{vset.images.shape[2]}x{vset.images.shape[1]}"]
        entry["unreadable"] = []
    entry["counts"] = count_verdict(name, len(vset.issame), int(vset.issame.sum()))
    entry["duplicates"] = duplicate_report(vset.images)
    entry["alignment"] = check_alignment(vset.images, sample)
    if model is not None:
        entry["channels"] = check_pair_channels(model, vset.images, vset.issame, **options)
    return entry


def _training_set(info: dict, path: Path, model, sample: int, options: dict) -> dict:
    from facetrain.hygiene.alignment_check import check_alignment
    from facetrain.hygiene.channels import check_folder_channels

    source = _open_training(path, info)
    rng = np.random.default_rng(0)
    labels = np.asarray(source.labels)
    index = np.sort(rng.choice(len(labels), size=min(sample, len(labels)), replace=False))
    images = np.stack([source.read(int(i)) for i in index])
    entry = {"format": info["format"], "path": info["path"], "images": info["images"], "classes": info["classes"],
             "unreadable": info["unreadable"], "image_sizes": sorted({f"{i.shape[1]}x{i.shape[0]}" for i in images}),
             "alignment": check_alignment(images, sample)}
    if model is not None:
        chosen = rng.permutation(np.unique(labels))[:LABELLED_SAMPLE_IDENTITIES]
        picks = np.concatenate([rng.permutation(np.flatnonzero(labels == c))[:LABELLED_SAMPLE_IMAGES] for c in chosen])
        faces = np.stack([source.read(int(i)) for i in picks])
        entry["channels"] = check_folder_channels(model, faces, labels[picks], **options)
    return entry


def _open_training(path: Path, info: dict):
    from facetrain.data.training_source import open_training_source

    if info["format"] == "recordio":
        return open_training_source(Path(info["path"]).parent, ".", use_mxrecord=True)
    return open_training_source(Path(info["path"]), ".", use_mxrecord=False)


def check_dataset(path: str | os.PathLike, ckpt: str | os.PathLike | None = None, sample: int = 64,
                  batch_size: int = 256, device=None, progress: bool = False) -> dict:
    """{"path", "sets": [...] or "training": {...}} with a verdict per check (see the package)."""
    from facetrain.data.tools.info import dataset_info

    if sample < 1:
        raise DataError(f"--sample must be at least 1, got {sample}")
    path = Path(path)
    info = dataset_info(path, check=True, progress=progress)
    model = None
    if ckpt is not None:
        from facetrain.infer import load_model

        model = load_model(ckpt, device="cpu")  # features are computed on `device` (extract_features moves it)
    options = {"batch_size": batch_size, "device": device, "progress": progress}
    report: dict = {"path": str(path), "format": info["format"], "model": None if ckpt is None else str(ckpt)}
    if info["format"] == "bin":
        report["sets"] = [_pair_set(info["name"], "bin", path, model, sample, options)]
    elif info["format"] == "validation_folder":
        report["sets"] = [_pair_set(name, sub["format"], Path(sub["path"]) if sub["format"] == "bin" else path, model,
                                    sample, options) for name, sub in info["sets"].items()]
    elif info["format"] == "memfile" and info.get("kind") != "training":
        report["sets"] = [_pair_set(info["name"], "memfile", Path(info["path"]), model, sample, options)]
    else:
        report["training"] = _training_set(info, path, model, sample, options)
    return report


def format_check(report: dict) -> str:
    """One screen: a line per check per set."""
    lines = [f"{report['path']} ({report['format']})"]
    entries = report.get("sets") or [report["training"]]
    for entry in entries:
        if "name" in entry:
            lines.append(f"{entry['name']}:")
        if "counts" in entry:
            lines.append(f"  counts     {entry['counts']['message']}")
        if "sha256" in entry:
            lines.append(f"  sha256     {entry['sha256']}")
        lines.append(f"  images     {', '.join(entry['image_sizes']) or '?'}; undecodable: {len(entry['unreadable'] or [])}")
        if "duplicates" in entry:
            d = entry["duplicates"]
            lines.append(f"  duplicates {len(d['identical_pairs'])} pairs of one image twice; {d['distinct_images']} "
                         f"distinct of {d['images']} images")
        if "skipped" in entry:
            lines.append(f"  {entry['skipped']}")
        if "alignment" in entry:
            a = entry["alignment"]
            where = f" (faces found in {a['found']} of {a['sample']} sampled"
            where += f"; mean {a['mean_distance_px']:.1f} px, p95 {a['p95_distance_px']:.1f} px from the template)" if a["found"] else ")"
            lines.append(f"  alignment  {a['verdict']}{where}")
        if "channels" in entry:
            c = entry["channels"]
            detail = (f" ({c['measure']}: stored {c['stored']:.4f}, swapped {c['swapped']:.4f})" if "stored" in c else "")
            lines.append(f"  channels   {c['verdict']}{detail}")
    return "\n".join(lines)
