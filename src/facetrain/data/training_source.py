"""One interface over the training formats: image folder, RecordIO (`--use_mxrecord`) and training memfile.

`open_training_source(data_root, train_data_path, use_mxrecord)` resolves the path the way the
seed's scripts use it and returns an object with `__len__`, `labels` (int64, computed without
decoding), `num_classes`, `read(i) -> uint8 BGR 112x112x3` and `describe()`. Sources are
cheap to pickle into DataLoader workers; file handles are opened lazily per process.

The classifier a trainer allocates grows with `num_classes`, which RecordIO and memfiles take
from numbers in the files (a label, a header count): a source declaring more classes than it
has images is refused here, before anything is allocated, so memory stays bounded by the data.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Protocol

import numpy as np

from facetrain.data.formats.image_folder import IMGS, ImageFolder
from facetrain.data.formats.memfile import TRAIN_MEMFILE, open_training_memfile
from facetrain.data.guards.paths import resolve_data_path
from facetrain.data.formats.recordio import RecordReader
from facetrain.errors import DataError

# AdaFace's table of class counts by dataset name: only a hint in describe(), counts come from the data.
KNOWN_NUM_CLASSES = {
    "faces_emore": 85742, "ms1m-retinaface-t1": 93431, "faces_vgg_112x112": 9131,
    "faces_webface_112x112": 10572, "webface4m": 205990, "webface12m": 617970, "webface42m": 2059906,
}


class TrainingSource(Protocol):
    labels: np.ndarray

    def __len__(self) -> int: ...
    @property
    def num_classes(self) -> int: ...
    def read(self, i: int) -> np.ndarray: ...
    def describe(self) -> str: ...


def _hint(path: Path, num_classes: int) -> str:
    for name, n in KNOWN_NUM_CLASSES.items():
        if name in str(path).lower() and n != num_classes:
            return f" (note: AdaFace's table lists {n} classes for {name})"
    return ""


def _class_summary(labels: np.ndarray, num_classes: int) -> str:
    used = len(np.unique(labels))
    return f"{num_classes} classes" + (f" ({num_classes - used} without images)" if used < num_classes else "")


class ImageFolderSource:
    def __init__(self, root: Path):
        self.folder = ImageFolder(root, warn_empty=False)  # after check_class_count: an error says it all
        self.labels = self.folder.labels

    def __len__(self) -> int:
        return len(self.folder)

    @property
    def num_classes(self) -> int:
        return self.folder.num_classes

    @property
    def empty_classes(self) -> list[str]:
        return self.folder.empty_classes

    def read(self, i: int) -> np.ndarray:
        return self.folder.read(i)[0]

    def describe(self) -> str:
        return (f"image folder {self.folder.root}: {len(self)} images, "
                f"{_class_summary(self.labels, self.num_classes)}{_hint(self.folder.root, self.num_classes)}")


class RecordSource:
    def __init__(self, rec_path: Path):
        self.reader = RecordReader(rec_path)
        self.keys = self.reader.image_keys
        self.labels = self.reader.labels

    def __len__(self) -> int:
        return len(self.keys)

    @property
    def num_classes(self) -> int:
        return self.reader.num_classes

    def read(self, i: int) -> np.ndarray:
        return self.reader.read_image(int(self.keys[i]))[0]

    def describe(self) -> str:
        layout = "InsightFace header" if self.reader.header_record is not None else "no header record"
        return (f"RecordIO {self.reader.rec_path} ({layout}): {len(self)} images, "
                f"{_class_summary(self.labels, self.num_classes)}{_hint(self.reader.rec_path, self.num_classes)}")


class MemfileSource:
    def __init__(self, root: Path):
        self.root = root
        self.images, self.labels = open_training_memfile(root)
        if len(self.labels) and self.labels.min() < 0:
            raise DataError(f"{root}: negative class label {self.labels.min()}")

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def num_classes(self) -> int:
        return int(self.labels.max()) + 1 if len(self.labels) else 0

    def read(self, i: int) -> np.ndarray:
        return np.array(self.images[i])

    def describe(self) -> str:
        return f"training memfile {self.root / TRAIN_MEMFILE}: {len(self)} images, {_class_summary(self.labels, self.num_classes)}"


def check_class_count(source: TrainingSource) -> None:
    """DataError when the source declares more classes than it has images (a corrupt label or header count)."""
    if source.num_classes > len(source):
        empty = getattr(source, "empty_classes", [])
        if empty:  # an image folder's class count is its folder count: the empty ones are the excess
            shown = ", ".join(empty[:5]) + (f" and {len(empty) - 5} more" if len(empty) > 5 else "")
            raise DataError(f"{source.describe()}; more classes than images because identity folders without "
                            f"images keep a class index: {shown}: remove them or add their images")
        raise DataError(f"{source.describe()}: {source.num_classes} classes for {len(source)} images; a label or "
                        "class count in the data is wrong (refused before allocating a classifier that large)")


def open_training_source(data_root: str | os.PathLike, train_data_path: str | os.PathLike,
                         use_mxrecord: bool = False) -> ImageFolderSource | RecordSource | MemfileSource:
    source = _open(resolve_data_path(data_root, train_data_path, "training data (--train_data_path)"), use_mxrecord)
    check_class_count(source)
    if isinstance(source, ImageFolderSource):
        source.folder.warn_empty_classes()
    return source


def _open(path: Path, use_mxrecord: bool) -> ImageFolderSource | RecordSource | MemfileSource:
    if use_mxrecord:
        for candidate in (path, path.parent if path.name == IMGS else None):
            if candidate is not None and (candidate.suffix == ".rec" or (candidate / "train.rec").is_file()):
                return RecordSource(candidate)
        raise DataError(f"{path}: --use_mxrecord given but no train.rec found there")
    if path.is_file() and path.suffix == ".rec":
        return RecordSource(path)
    for candidate in (path, path.parent if path.name == IMGS else None):
        if candidate is not None and (candidate / TRAIN_MEMFILE).is_file():
            return MemfileSource(candidate)
    if not (path.name == IMGS or (path / IMGS).is_dir()) and (path / "train.rec").is_file():
        raise DataError(f"{path}: holds train.rec but no {IMGS} folder: pass --use_mxrecord, or unpack it with "
                        f"`facetrain convert --rec_path {path} --make_image_files`")
    return ImageFolderSource(path)
