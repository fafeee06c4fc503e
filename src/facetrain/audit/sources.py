"""The image sets an audit reads, behind one interface: the training data (image folder, RecordIO, training
memfile, compound folder) and reference sets (`.bin` verification sets, validation memfiles, image folders
with or without identity sub-folders).

Each `AuditSet` gives sliceable images for `extract_features`, labels and class names where the source has
them, a name per image (its path, or its index where the source has no paths), and a fingerprint of the
data (paths, sizes and modification times) that keys the embedding cache.
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import cv2
import numpy as np

from facetrain.data.formats.bin import read_bin
from facetrain.data.formats.image_codec import IMAGE_EXTENSIONS, parallel_map, read_file_bgr
from facetrain.data.formats.image_folder import IMGS, ImageFolder
from facetrain.data.formats.memfile import MEMFILE_SUFFIX, TRAIN_MEMFILE, find_validation_sets, load_validation_sets
from facetrain.data.formats.recordio import RecordReader
from facetrain.data.training_source import MemfileSource, RecordSource, open_training_source
from facetrain.io_utils import encode_text
from facetrain.errors import DataError


class _Reader:
    """len() and slices -> (B,112,112,3) uint8 over a `read(i)` function, decoding a slice in threads."""

    def __init__(self, read: Callable[[int], np.ndarray], size: int, threads: int | None = None):
        self.read, self.size, self.threads = read, size, threads

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, index: slice) -> np.ndarray:
        return np.stack(list(parallel_map(self.read, range(*index.indices(self.size)), self.threads)))


def _files_fingerprint(paths: list[Path]) -> str:
    digest = hashlib.sha256()
    for p in paths:
        st = p.stat()
        digest.update(encode_text(f"{p}\t{st.st_size}\t{st.st_mtime_ns}\n"))
    return digest.hexdigest()


@dataclass
class AuditSet:
    name: str
    description: str
    images: object  # len() + slices of uint8 BGR faces (see facetrain.eval.embed.ImageSource)
    fingerprint: str
    labels: np.ndarray | None = None  # int64 per image, None where the source has no identities
    classes: list[str] | None = None
    paths: list[str] | None = None  # one per image where the images are files
    encoded: Callable[[int], tuple[bytes, str]] | None = field(default=None, repr=False)
    issame: np.ndarray | None = None  # verification sets: pair k = images 2k, 2k+1 (their non-matching pairs are impostors)

    def __len__(self) -> int:
        return len(self.images)

    def image_name(self, i: int) -> str | int:
        """How reports name image i: its path, or its index where the source has no paths."""
        return self.paths[i] if self.paths is not None else int(i)

    def class_name(self, label: int) -> str:
        return self.classes[label] if self.classes is not None else str(int(label))

    def read(self, i: int) -> np.ndarray:
        return self.images[i : i + 1][0]


def _png(read: Callable[[int], np.ndarray]) -> Callable[[int], tuple[bytes, str]]:
    return lambda i: (cv2.imencode(".png", read(i))[1].tobytes(), ".png")


def _folder_set(folder: ImageFolder, name: str, kind: str) -> AuditSet:
    paths = [p for p, _ in folder.samples]
    return AuditSet(name, f"{kind} {folder.root}: {len(paths)} images, {folder.num_classes} identities",
                    _Reader(lambda i: read_file_bgr(paths[i]), len(paths)), _files_fingerprint([Path(p) for p in paths]),
                    folder.labels, list(folder.classes), paths)


def open_training_set(path: str | os.PathLike) -> AuditSet:
    """The training data at `path` in any format `facetrain train` reads (RecordIO found by its train.rec)."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: training data not found")
    rec = path.suffix == ".rec" or (path.is_dir() and (path / "train.rec").is_file() and path.name != IMGS
                                    and not (path / IMGS).is_dir() and not (path / TRAIN_MEMFILE).is_file())
    source = open_training_source("", path, use_mxrecord=rec)
    if len(source) == 0:
        raise DataError(f"{path}: the training data holds no images")
    name = path.parent.name if path.name == IMGS else path.name
    if isinstance(source, RecordSource):
        reader: RecordReader = source.reader
        files = [reader.rec_path] + ([reader.idx_path] if reader.idx_path is not None else [])
        keys = source.keys

        def encoded(i: int) -> tuple[bytes, str]:
            payload = reader.read_record(int(keys[i]))[1]
            return payload, ".png" if payload[:4] == b"\x89PNG" else ".jpg"

        return AuditSet(name, source.describe(), _Reader(source.read, len(source)), _files_fingerprint(files),
                        source.labels, [str(c) for c in range(source.num_classes)], None, encoded)
    if isinstance(source, MemfileSource):
        files = [source.root / TRAIN_MEMFILE, source.root / "train_labels.npy"]
        return AuditSet(name, source.describe(), source.images, _files_fingerprint(files), source.labels,
                        [str(c) for c in range(source.num_classes)], None, _png(source.read))
    return _folder_set(source.folder, name, "image folder")


def _unique(name: str, taken: set[str]) -> str:
    candidate, k = name, 2
    while candidate in taken:
        candidate, k = f"{name}_{k}", k + 1
    return candidate


def verification_audit_set(vset, description: str, files: list[Path]) -> AuditSet:
    return AuditSet(vset.name, f"{description}: {len(vset.images)} images ({len(vset.issame)} pairs)", vset.images,
                    _files_fingerprint(files), encoded=_png(lambda i: np.asarray(vset.images[i])),
                    issame=np.asarray(vset.issame, bool))


def _flat_images(path: Path) -> list[Path]:
    return sorted(p for p in path.iterdir() if p.is_file() and not p.name.startswith(".")
                  and p.suffix.lower() in IMAGE_EXTENSIONS)


def open_reference_sets(path: str | os.PathLike) -> list[AuditSet]:
    """The reference set(s) at `path`: a `.bin`, a validation memfile (`<name>.dat`), a folder of `.bin`
    files / memfiles (one set each), an image folder (identity sub-folders, or `imgs/`), or a flat folder of
    images (identities unknown)."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: reference set not found")
    if path.is_file():
        if path.suffix == ".bin":
            return [verification_audit_set(read_bin(path), f".bin {path}", [path])]
        if path.name.endswith(MEMFILE_SUFFIX):
            name = path.name[: -len(MEMFILE_SUFFIX)]
            vset = load_validation_sets(path.parent, [name])[name]
            return [verification_audit_set(vset, f"memfile {path}", [path])]
        raise DataError(f"{path}: not a reference set (expected a .bin, a <name>.dat memfile or a folder)")
    found = find_validation_sets(path)
    if found:
        sets = load_validation_sets(path)
        return [verification_audit_set(vset, f"{found[name][0]} {found[name][1]}", [found[name][1]])
                for name, vset in sets.items()]
    flat = _flat_images(path)
    if flat:
        paths = [str(p) for p in flat]
        return [AuditSet(path.name, f"image files in {path}: {len(paths)} images", _Reader(lambda i: read_file_bgr(paths[i]), len(paths)),
                         _files_fingerprint(flat), paths=paths)]
    has_subfolders = any(p.is_dir() and not p.name.startswith(".") for p in path.iterdir())
    if not has_subfolders:
        raise DataError(f"{path}: no images, identity folders, .bin files or memfiles found")
    folder = ImageFolder(path, require_imgs=False)
    return [_folder_set(folder, path.parent.name if path.name == IMGS else path.name, "image folder")]


def open_references(paths: list[str | os.PathLike]) -> list[AuditSet]:
    """All reference sets of `--reference`, names made unique (a set named twice gets `_2`, ...)."""
    sets: list[AuditSet] = []
    for p in paths:
        for s in open_reference_sets(p):
            s.name = _unique(s.name, {t.name for t in sets})
            sets.append(s)
    return sets

