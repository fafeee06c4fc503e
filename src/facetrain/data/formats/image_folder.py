"""Image-folder datasets: `<root>/imgs/<identity>/<image>` (the seed requires the folder to be named `imgs`).

Class indices follow the sorted identity folder names. An identity folder without images
keeps its index (so labels match the folder listing and a `--custom_num_class` counted with
`ls imgs | wc -l`) and is listed in `empty_classes` with a warning: training never sees that
class, which a user should know, but it is not fatal. Files that are not images (by
extension) and hidden entries are ignored; images that cannot be decoded are reported with
their path by `read(i)` (DataError) and `scan_unreadable()`.
"""
from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
from tqdm import tqdm

from facetrain.data.formats.image_codec import IMAGE_EXTENSIONS, parallel_map, read_file_bgr
from facetrain.errors import DataError

IMGS = "imgs"


def resolve_imgs_dir(path: str | os.PathLike, require_imgs: bool = True) -> Path:
    """`path` itself when it is named `imgs`, else `path/imgs`; without `require_imgs`, `path` as it is."""
    path = Path(path)
    if not path.is_dir():
        raise DataError(f"{path}: image folder not found")
    if path.name == IMGS:
        return path
    if (path / IMGS).is_dir():
        return path / IMGS
    if require_imgs:
        raise DataError(f"{path}: no `{IMGS}` folder (expected {path}/{IMGS}/<identity>/<image>)")
    return path


def _visible(entry: os.DirEntry) -> bool:
    return not entry.name.startswith(".")


def list_identities(imgs_dir: Path) -> dict[str, list[str]]:
    """identity folder name -> sorted image file names (one scandir per folder)."""
    out: dict[str, list[str]] = {}
    with os.scandir(imgs_dir) as it:
        folders = sorted(e.name for e in it if _visible(e) and e.is_dir())
    for name in folders:
        with os.scandir(imgs_dir / name) as it:
            out[name] = sorted(e.name for e in it if _visible(e) and e.is_file()
                               and os.path.splitext(e.name)[1].lower() in IMAGE_EXTENSIONS)
    return out


class ImageFolder:
    """`samples: list[(path, label)]`, `classes: list[str]`, `num_classes`, `read(i) -> (bgr, label)`."""

    def __init__(self, root: str | os.PathLike, require_imgs: bool = True, warn_empty: bool = True):
        """`warn_empty=False`: the caller decides whether identity folders without images are an error
        (training refuses more classes than images) before warning about them with `warn_empty_classes`."""
        self.root = resolve_imgs_dir(root, require_imgs)
        identities = list_identities(self.root)
        if not identities:
            raise DataError(f"{self.root}: no identity folders (expected {self.root}/<identity>/<image>)")
        self.classes = list(identities)
        self.empty_classes = [name for name, files in identities.items() if not files]
        self.samples = [(str(self.root / name / f), label)
                        for label, (name, files) in enumerate(identities.items()) for f in files]
        if not self.samples:
            raise DataError(f"{self.root}: {len(self.classes)} identity folders but no images in any of them")
        if warn_empty:
            self.warn_empty_classes()
        self.labels = np.fromiter((s[1] for s in self.samples), dtype=np.int64, count=len(self.samples))

    def warn_empty_classes(self) -> None:
        if self.empty_classes:
            shown = ", ".join(self.empty_classes[:5]) + (" ..." if len(self.empty_classes) > 5 else "")
            warnings.warn(f"{self.root}: {len(self.empty_classes)} identity folder(s) without images keep their "
                          f"class index but have no samples: {shown}")

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def __len__(self) -> int:
        return len(self.samples)

    def read(self, i: int) -> tuple[np.ndarray, int]:
        path, label = self.samples[i]
        return read_file_bgr(path), label

    def scan_unreadable(self, threads: int | None = None, progress: bool | None = False) -> list[str]:
        """Paths of images that cannot be read or decoded (decodes every image, in threads)."""
        def ok(sample: tuple[str, int]) -> bool:
            try:
                read_file_bgr(sample[0])
                return True
            except DataError:
                return False

        results = tqdm(parallel_map(ok, self.samples, threads), total=len(self.samples), desc="check images",
                       disable=None if progress else True, unit="img")
        return [path for (path, _), good in zip(self.samples, results) if not good]
