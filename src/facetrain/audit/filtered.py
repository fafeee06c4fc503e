"""`--write_filtered OUT`: the audited dataset without its defects, as an image folder of links.

What `--drop` names (default all): `collisions` keeps one identity per collision cluster (the one with the
most images); `leaks` drops the training identities and images in the significant excess of a reference
(pairs marked `"excess"`: a reference consistent with chance drops nothing); `mislabels` drops the suspected
mislabelled images. Files of an image folder are absolute symlinks, as `facetrain compound` writes them;
sources without files (RecordIO, memfiles) have their images written out. The folder is built under a
temporary name and renamed into place with a marker of what it was made from (`data.output_marker`), so
re-running the same audit after a kill keeps it and writes what is missing; `OUT/dropped.json` lists what
was dropped and why.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Iterable

from tqdm import tqdm

from facetrain.audit.sources import AuditSet
from facetrain.data.tools.compound import output_dirs
from facetrain.data.tools.output_marker import made_from, write_marker
from facetrain.errors import DataError
from facetrain.fault_injection import write_event
from facetrain.io_utils import atomic_write_json, fresh_temporary, replace, write_bytes

DROPPED_NAME = "dropped.json"


DROP_KINDS = ("mislabels", "collisions", "leaks")


def dropped_items(report: dict, data: AuditSet, drop: Iterable[str] = DROP_KINDS) -> tuple[dict[str, str], dict[int, str]]:
    """(identity name -> reason, image index -> reason) from an audit report, for the kinds of defect in `drop`."""
    identities: dict[str, str] = {}
    images: dict[int, str] = {}
    index = {data.image_name(i): i for i in range(len(data))}
    if "collisions" in drop:
        _collisions(report, identities)
    if "leaks" in drop:
        for ref_name, leak in report["leakage"].items():
            for pair in leak["identity_pairs"] or []:  # None for references without identity labels (.bin)
                if pair["excess"]:
                    identities.setdefault(pair["train_identity"], f"leaks {ref_name} identity "
                                          f"{pair['reference_identity']} (similarity {pair['similarity']:.4f})")
            for pair in leak["pairs"]:
                if pair["excess"]:
                    images.setdefault(index[pair["train"]], f"leaks {ref_name} image {pair['reference']} "
                                                            f"(cosine {pair['cosine']:.4f})")
    if "mislabels" in drop:
        for m in report["intra_class"].get("suspected_mislabels", []):
            images.setdefault(index[m["image"]], f"suspected mislabel: cosine {m['own_cosine']:.4f} to its identity, "
                                                 f"{m['nearest_cosine']:.4f} to {m['nearest_identity']}")
    return identities, images


def _collisions(report: dict, identities: dict[str, str]) -> None:
    best = {}
    for pair in report["collisions"]["pairs"]:
        for a, b in ((pair["a"], pair["b"]), (pair["b"], pair["a"])):
            best.setdefault(a, (b, pair["similarity"]))  # pairs are sorted best first
    for k, cluster in enumerate(report["collisions"]["clusters"]):
        for name in cluster["identities"]:
            if name != cluster["keep"]:
                other, similarity = best[name]
                identities[name] = (f"collision cluster {k} ({len(cluster['identities'])} identities, kept "
                                    f"{cluster['keep']}); closest: {other}, similarity {similarity:.4f}")


def write_filtered(report: dict, data: AuditSet, final_path: str | os.PathLike, drop: Iterable[str] = DROP_KINDS,
                   progress: bool | None = None) -> dict:
    imgs_dir, root = output_dirs(final_path)
    drop_identities, drop_images = dropped_items(report, data, drop)
    kept = [i for i in range(len(data))
            if data.class_name(data.labels[i]) not in drop_identities and i not in drop_images]
    recipe = {"command": "audit --write_filtered", "data": data.fingerprint, "drop": sorted(drop),
              "kept": hashlib.sha256(json.dumps(kept).encode()).hexdigest()}
    if not made_from(imgs_dir, recipe):
        _build(data, kept, imgs_dir, recipe, progress)
    dropped = {
        "source": data.description, "drop": sorted(drop),
        "result": {"path": str(imgs_dir.resolve()), "identities": len({int(data.labels[i]) for i in kept}),
                   "images": len(kept)},
        "links": "absolute symlink" if data.paths is not None else "images written from the source",
        "identities": [{"identity": name, "reason": why} for name, why in sorted(drop_identities.items())],
        "images": [{"image": data.image_name(i), "identity": data.class_name(data.labels[i]), "reason": why}
                   for i, why in sorted(drop_images.items())],
    }
    atomic_write_json(root / DROPPED_NAME, dropped)
    return dropped


def _build(data: AuditSet, kept: list[int], imgs_dir: Path, recipe: dict, progress: bool | None) -> None:
    if imgs_dir.exists() and (not imgs_dir.is_dir() or any(imgs_dir.iterdir())):
        raise DataError(f"{imgs_dir}: already exists and is not empty; choose another --write_filtered or remove it")
    imgs_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = fresh_temporary(imgs_dir)
    tmp.mkdir()  # exists even when every image is dropped
    try:
        for i in tqdm(kept, desc="write filtered", unit="img", disable=None if progress is None else not progress):
            identity = data.class_name(data.labels[i])
            (tmp / identity).mkdir(exist_ok=True)
            if data.paths is not None:
                src = Path(data.paths[i])
                write_event()
                os.symlink(src.resolve(), tmp / identity / src.name)
            else:
                payload, ext = data.encoded(i)
                write_bytes(tmp / identity / f"{i}{ext}", payload)
        if imgs_dir.exists():
            imgs_dir.rmdir()  # empty (checked above)
        write_marker(imgs_dir, recipe)
        replace(tmp, imgs_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
