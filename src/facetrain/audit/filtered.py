"""`--write_filtered OUT`: the audited dataset without its defects, as an image folder of links.

Keeps one identity per collision cluster (the one with the most images), drops every training identity whose
centroid matches a reference identity (references with identity labels) and every training image that a
reference image matches. Files of an image folder are absolute symlinks, as `facetrain compound`
writes them; sources without files (RecordIO, memfiles) have their images written out. The folder is
built under a temporary name and renamed into place (an empty folder when everything is dropped), with a
marker of what it was made from (`data.output_marker`): running the same audit again after a kill that
followed the rename completes the output instead of refusing the folder as not empty. `OUT/dropped.json`
lists what was dropped and why.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path

from tqdm import tqdm

from facetrain.audit.sources import AuditSet
from facetrain.data.tools.compound import output_dirs
from facetrain.data.tools.output_marker import made_from, write_marker
from facetrain.errors import DataError
from facetrain.io_utils import atomic_write_json, temporary_name

DROPPED_NAME = "dropped.json"


def dropped_items(report: dict, data: AuditSet) -> tuple[dict[str, str], dict[int, str]]:
    """(identity name -> reason, image index -> reason) from an audit report."""
    identities: dict[str, str] = {}
    best = {}
    for pair in report["collisions"]["pairs"]:
        for a, b in ((pair["a"], pair["b"]), (pair["b"], pair["a"])):
            best.setdefault(a, (b, pair["cosine"]))  # pairs are sorted best first
    for k, cluster in enumerate(report["collisions"]["clusters"]):
        for name in cluster["identities"]:
            if name != cluster["keep"]:
                other, cosine = best[name]
                identities[name] = (f"collision cluster {k} ({len(cluster['identities'])} identities, kept "
                                    f"{cluster['keep']}); closest: {other}, centroid cosine {cosine:.4f}")
    for ref_name, leak in report["leakage"].items():
        for pair in leak["identity_pairs"] or []:  # None for references without identity labels (.bin)
            identities.setdefault(pair["train_identity"], f"leaks {ref_name} identity {pair['reference_identity']} "
                                                          f"(centroid cosine {pair['cosine']:.4f})")
    index = {data.image_name(i): i for i in range(len(data))}
    images: dict[int, str] = {}
    for ref_name, leak in report["leakage"].items():
        for pair in leak["pairs"]:
            i = index[pair["train"]]
            images.setdefault(i, f"leaks {ref_name} image {pair['reference']} (cosine {pair['cosine']:.4f})")
    return identities, images


def _build(data: AuditSet, kept: list[int], imgs_dir: Path, recipe: dict, progress: bool | None) -> None:
    """The kept images under a temporary folder, then renamed onto `imgs_dir` (empty when nothing is kept)."""
    tmp = temporary_name(imgs_dir)
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        for i in tqdm(kept, desc="write filtered", unit="img", disable=None if progress is None else not progress):
            identity = data.class_name(data.labels[i])
            (tmp / identity).mkdir(exist_ok=True)
            if data.paths is not None:
                src = Path(data.paths[i])
                os.symlink(src.resolve(), tmp / identity / src.name)
            else:
                payload, ext = data.encoded(i)
                (tmp / identity / f"{i}{ext}").write_bytes(payload)
        if imgs_dir.exists():
            imgs_dir.rmdir()
        write_marker(imgs_dir, recipe)
        os.replace(tmp, imgs_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def write_filtered(report: dict, data: AuditSet, final_path: str | os.PathLike, progress: bool | None = None) -> dict:
    imgs_dir, root = output_dirs(final_path)
    drop_identities, drop_images = dropped_items(report, data)
    kept = [i for i in range(len(data))
            if data.class_name(data.labels[i]) not in drop_identities and i not in drop_images]
    # a run killed after committing the folder left it with this recipe's marker: running again completes it
    recipe = {"audit --write_filtered": data.description, "drop_identities": sorted(drop_identities),
              "drop_images": sorted(int(i) for i in drop_images)}
    if not made_from(imgs_dir, recipe):
        if imgs_dir.exists() and any(imgs_dir.iterdir()):
            raise DataError(f"{imgs_dir}: already exists and is not empty; choose another --write_filtered or remove it")
        _build(data, kept, imgs_dir, recipe, progress)
    kept_identities = {data.class_name(data.labels[i]) for i in kept}
    kept_images = len(kept)
    dropped = {
        "source": data.description, "result": {"path": str(imgs_dir.resolve()), "identities": len(kept_identities),
                                              "images": kept_images},
        "links": "absolute symlink" if data.paths is not None else "images written from the source",
        "identities": [{"identity": name, "reason": why} for name, why in sorted(drop_identities.items())],
        "images": [{"image": data.image_name(i), "identity": data.class_name(data.labels[i]), "reason": why}
                   for i, why in sorted(drop_images.items())],
    }
    atomic_write_json(root / DROPPED_NAME, dropped)
    return dropped
