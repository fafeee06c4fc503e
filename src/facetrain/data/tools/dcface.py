"""DCFace releases -> image folder.

A release holds `record/` with `train.rec`, `train.idx` and `list.txt`: one relative path per
image record, in key order (`<identity>/<n>.jpg`; `.lst`-style lines `index<TAB>label<TAB>path`
are accepted too, the path being the last field). The images are written to
`<release>/imgs/<identity>/<n>.jpg`, keeping the identity names of `list.txt`; without a
`list.txt`, the record labels name the folders (`<label>/<key>.jpg`).
"""
from __future__ import annotations

import os
from pathlib import Path

from facetrain.data.tools.convert import rec_to_image_folder
from facetrain.errors import DataError


def find_record_dir(release: str | os.PathLike) -> Path:
    release = Path(release)
    for candidate in (release / "record", release):
        if (candidate / "train.rec").is_file():
            return candidate
    raise DataError(f"{release}: no record/train.rec (expected a DCFace release folder)")


def read_list(path: Path) -> list[str]:
    lines = [ln for ln in path.read_text().splitlines() if ln.strip()]
    return [ln.split("\t")[-1].strip() if "\t" in ln else ln.strip() for ln in lines]


def dcface_to_image_folder(release: str | os.PathLike, out: str | os.PathLike | None = None,
                           swap_color_channel: bool = False, progress: bool | None = None) -> Path:
    """Write `<out or release>/imgs/...`; returns the `imgs` folder."""
    record_dir = find_record_dir(release)
    root = Path(out) if out is not None else Path(release)
    imgs = root if root.name == "imgs" else root / "imgs"
    list_path = record_dir / "list.txt"
    names = read_list(list_path) if list_path.is_file() else None
    return rec_to_image_folder(record_dir / "train.rec", imgs, names, swap_color_channel, progress, str(list_path))
