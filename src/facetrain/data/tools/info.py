"""`facetrain info`: what a dataset holds, for any supported format.

PATH may be a `.bin`, a memfile (`<name>.dat`, AdaFace's `mem_file.dat`, `train.dat`, or the
folder holding it), a RecordIO `.rec` or its folder, an image folder (the root or `imgs`), or
a validation folder of `.bin` files / memfiles. The answer is a dict with at least `format`
(bin | memfile | recordio | image_folder | validation_folder), `images`, `pairs`/`genuine`
for verification sets, `classes` for training sets and `unreadable` (null when not checked).
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from tqdm import tqdm

from facetrain.data.formats.bin import find_unreadable, load_encoded, set_name
from facetrain.data.formats.image_codec import parallel_map
from facetrain.data.formats.image_folder import IMGS, ImageFolder
from facetrain.data.formats.memfile import (ADAFACE_MEMFILE, MEMFILE_SUFFIX, TRAIN_MEMFILE, conf_path, find_validation_sets,
                                    load_issame, open_memfile, open_training_memfile)
from facetrain.data.formats.recordio import RecordReader
from facetrain.errors import DataError


def _bin_info(path: Path, check: bool) -> dict:
    bins, issame = load_encoded(path)
    return {"format": "bin", "path": str(path), "name": set_name(path), "images": len(bins), "pairs": len(issame),
            "genuine": int(issame.sum()), "unreadable": find_unreadable(bins, str(path)) if check else None}


def _memfile_info(path: Path) -> dict:
    if path.name == TRAIN_MEMFILE:
        images, labels = open_training_memfile(path.parent)
        return {"format": "memfile", "kind": "training", "path": str(path), "images": len(images),
                "classes": int(labels.max()) + 1 if len(labels) else 0, "shape": list(images.shape),
                "dtype": str(images.dtype), "unreadable": []}
    data = open_memfile(path)
    if path.name == ADAFACE_MEMFILE.name:
        name, root, kind = path.parent.parent.name, path.parent.parent.parent, "adaface_validation"
    else:
        name, root, kind = path.name[: -len(MEMFILE_SUFFIX)], path.parent, "validation"
    issame = load_issame(root, name)
    if len(data) != 2 * len(issame):
        raise DataError(f"{path}: {len(data)} images for {len(issame)} pairs in {name}_list.npy")
    return {"format": "memfile", "kind": kind, "path": str(path), "name": name, "images": len(data),
            "pairs": len(issame), "genuine": int(issame.sum()), "shape": list(data.shape), "dtype": str(data.dtype),
            "unreadable": []}


def _recordio_info(path: Path, check: bool, progress: bool | None) -> dict:
    reader = RecordReader(path)
    labels = reader.labels
    unreadable = None
    if check:
        def ok(key: int) -> bool:
            try:
                reader.read_image(key)
                return True
            except DataError:
                return False

        keys = reader.image_keys.tolist()
        results = tqdm(parallel_map(ok, keys), total=len(keys), desc="check records", unit="img",
                       disable=None if progress else True)
        unreadable = [f"{reader.rec_path} record {k}" for k, good in zip(keys, results) if not good]
    return {"format": "recordio", "path": str(reader.rec_path), "index": str(reader.idx_path) if reader.idx_path else None,
            "insightface_header": reader.header_record is not None, "records": len(reader),
            "images": len(reader.image_keys), "classes": reader.num_classes,
            "classes_with_images": int(len(np.unique(labels))), "unreadable": unreadable}


def _image_folder_info(path: Path, check: bool, progress: bool | None) -> dict:
    folder = ImageFolder(path)
    return {"format": "image_folder", "path": str(folder.root), "images": len(folder), "classes": folder.num_classes,
            "empty_classes": folder.empty_classes,
            "unreadable": folder.scan_unreadable(progress=progress) if check else None}


def _validation_folder_info(path: Path, check: bool) -> dict:
    sets = {}
    for name, (kind, p) in find_validation_sets(path).items():
        if kind == "incomplete":
            raise DataError(f"{p}: memfile of {name!r} is incomplete (no .conf sidecar or {name}_list.npy)")
        sets[name] = _bin_info(p, check) if kind == "bin" else _memfile_info(p)
    unreadable = [u for s in sets.values() for u in (s["unreadable"] or [])]
    return {"format": "validation_folder", "path": str(path), "sets": sets,
            "images": sum(s["images"] for s in sets.values()), "pairs": sum(s["pairs"] for s in sets.values()),
            "genuine": sum(s["genuine"] for s in sets.values()),
            "unreadable": unreadable if check or not any(s["format"] == "bin" for s in sets.values()) else None}


def dataset_info(path: str | os.PathLike, check: bool = True, progress: bool | None = None) -> dict:
    """Describe the dataset at `path`; `check` decodes every image to list the unreadable ones."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: no such file or folder")
    if path.is_file():
        if path.suffix == ".bin":
            return _bin_info(path, check)
        if path.suffix == ".rec":
            return _recordio_info(path, check, progress)
        if path.suffix == ".conf":
            return _memfile_info(path.with_suffix(""))
        if conf_path(path).is_file() or path.suffix == MEMFILE_SUFFIX:
            return _memfile_info(path)
        raise DataError(f"{path}: not a supported dataset file (.bin, .rec, memfile .dat)")
    if path.name == IMGS or (path / IMGS).is_dir():
        return _image_folder_info(path, check, progress)
    if (path / "train.rec").is_file():
        return _recordio_info(path, check, progress)
    for candidate in (path / TRAIN_MEMFILE, path / ADAFACE_MEMFILE, path / ADAFACE_MEMFILE.name):
        if candidate.is_file():
            return _memfile_info(candidate)
    if any(path.glob("*.bin")) or any(path.glob(f"*{MEMFILE_SUFFIX}")) or any(path.glob(f"*/{ADAFACE_MEMFILE.as_posix()}")):
        return _validation_folder_info(path, check)
    raise DataError(f"{path}: not a supported dataset (no imgs/, train.rec, memfile or .bin files)")


def format_info(info: dict) -> str:
    """Human-readable lines."""
    keys = ("format", "kind", "path", "name", "images", "pairs", "genuine", "records", "classes",
            "classes_with_images", "insightface_header", "shape", "dtype")
    lines = [f"{k:>20}: {info[k]}" for k in keys if k in info]
    if info.get("empty_classes"):
        lines.append(f"{'empty_classes':>20}: {len(info['empty_classes'])} ({', '.join(info['empty_classes'][:10])})")
    for name, sub in info.get("sets", {}).items():
        lines.append(f"{name:>20}: {sub['format']}, {sub['images']} images, {sub['pairs']} pairs, {sub['genuine']} genuine")
    bad = info.get("unreadable")
    lines.append(f"{'unreadable':>20}: " + ("not checked" if bad is None else str(len(bad))))
    lines += [f"{'':>22}{u}" for u in (bad or [])[:20]]
    if bad and len(bad) > 20:
        lines.append(f"{'':>22}... and {len(bad) - 20} more")
    return "\n".join(lines)
