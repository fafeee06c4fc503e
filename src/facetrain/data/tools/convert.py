"""Conversions behind `facetrain convert` (the seed's `convert.py`).

- `.bin` -> memfiles (`<name>.dat` + `.conf` + `<name>_list.npy`), decoded straight into the memmap.
- `.bin` -> decoded images per set: `<out>/<name>/imgs/<i>.jpg` (+ `<out>/<name>_list.npy`).
- `train.rec` -> image folder `<out>/imgs/<label>/<key>.jpg` (AdaFace's naming), or the names of a
  DCFace `list.txt`.
Encoded JPEG payloads are written as they are (lossless, fast); `swap_color_channel` swaps the
red and blue channels of the written files, as AdaFace's `--swap_color_channel` does, for
tools that load them with PIL and expect BGR data. Every output is built under a temporary
name and renamed when complete; a memfile's `.conf` is written last. An image folder made
earlier from the same source with the same options is kept (output_marker), so running the
command again after an interruption completes the remaining outputs.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
from tqdm import tqdm

from facetrain.data.formats.bin import iter_decoded, load_encoded, set_name, unique_set_names
from facetrain.data.formats.image_codec import decode_bgr, encode_image, is_jpeg, parallel_map
from facetrain.data.formats.memfile import MEMFILE_SUFFIX, issame_file, memfile_writer, save_issame
from facetrain.data.formats.recordio import RecordReader
from facetrain.errors import DataError
from facetrain.data.tools.output_marker import fingerprint, made_from, write_marker
from facetrain.io_utils import fresh_temporary, replace, write_bytes


def find_bins(folder: str | os.PathLike) -> list[Path]:
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"{folder}: folder not found")
    return list(unique_set_names(sorted(folder.glob("*.bin"))).values())


def bin_to_memfile(bin_path: str | os.PathLike, out_dir: str | os.PathLike, progress: bool | None = None) -> Path:
    """One `.bin` -> `<out_dir>/<name>.dat` (+ `<name>_list.npy`, then `.conf`)."""
    bins, issame = load_encoded(bin_path)
    name, out_dir = set_name(bin_path), Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{name}{MEMFILE_SUFFIX}"
    with memfile_writer(path, (len(bins), 112, 112, 3), np.uint8, issame_file(out_dir, name, issame)) as write:
        for block in iter_decoded(bins, str(bin_path), progress=progress):
            write(block)
    return path


def bins_to_memfiles(folder: str | os.PathLike, out_dir: str | os.PathLike | None = None,
                     progress: bool | None = None) -> list[Path]:
    bins = find_bins(folder)
    if not bins:
        raise DataError(f"{folder}: no .bin files to convert")
    return [bin_to_memfile(b, out_dir or folder, progress) for b in bins]


def _swap_writer(swap: bool) -> Callable[[bytes, str], bytes]:
    def prepare(payload: bytes, where: str) -> bytes:
        if is_jpeg(payload) and not swap:
            decode_bgr(payload, where)  # refuse corrupt data before it becomes a file
            return payload
        bgr = decode_bgr(payload, where)
        return encode_image(bgr[:, :, ::-1] if swap else bgr, ".jpg", 95)
    return prepare


def _write_tree(out: Path, items: Sequence[tuple[str, Callable[[], bytes]]], desc: str, progress: bool | None,
                recipe: dict) -> bool:
    """Write `relative path -> bytes` items under a temporary folder, then rename it to `out`.

    Returns False (writing nothing) when `out` is already the complete output of `recipe`."""
    if made_from(out, recipe):
        return False
    if out.exists() and not out.is_dir():
        raise DataError(f"{out}: exists and is not a folder")
    if out.exists() and any(out.iterdir()):
        raise DataError(f"{out}: already exists and is not empty; remove it to convert again")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = fresh_temporary(out)
    tmp.mkdir()

    def write(item: tuple[str, Callable[[], bytes]]) -> None:
        rel, produce = item
        dst = tmp / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        write_bytes(dst, produce())

    try:
        for _ in tqdm(parallel_map(write, items), total=len(items), desc=desc, unit="img",
                      disable=None if progress is None else not progress):
            pass
        if out.exists():
            out.rmdir()
        write_marker(out, recipe)
        replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return True


def bin_to_images(bin_path: str | os.PathLike, out_dir: str | os.PathLike, swap_color_channel: bool = False,
                  progress: bool | None = None) -> Path:
    """One `.bin` -> `<out_dir>/<name>/imgs/<i>.jpg` and `<out_dir>/<name>_list.npy`."""
    bins, issame = load_encoded(bin_path)
    name, out_dir = set_name(bin_path), Path(out_dir)
    prepare = _swap_writer(swap_color_channel)
    items = [(f"{i}.jpg", lambda i=i: prepare(bytes(bins[i]), f"{bin_path} image {i}")) for i in range(len(bins))]
    target = out_dir / name / "imgs"
    recipe = {"command": "convert bin images", "sources": fingerprint([bin_path]), "swap": swap_color_channel}
    _write_tree(target, items, f"images {name}", progress, recipe)
    save_issame(out_dir, name, issame)
    return target


def bins_to_images(folder: str | os.PathLike, out_dir: str | os.PathLike | None = None,
                   swap_color_channel: bool = False, progress: bool | None = None) -> list[Path]:
    return [bin_to_images(b, out_dir or folder, swap_color_channel, progress) for b in find_bins(folder)]


def _safe_relative(name: str, where: str) -> str:
    """`<identity>/<image>` exactly: deeper or hidden entries would be written but never read back as images."""
    rel = Path(name.strip())
    if rel.is_absolute() or len(rel.parts) != 2 or any(part.startswith(".") for part in rel.parts):
        raise DataError(f"{where}: {name!r} is not an `<identity>/<image>` path (one folder level, no hidden "
                        "or `..` parts): an image folder would not see it")
    return rel.with_suffix(".jpg").as_posix()


def rec_to_image_folder(rec_path: str | os.PathLike, out: str | os.PathLike | None = None,
                        names: Sequence[str] | None = None, swap_color_channel: bool = False,
                        progress: bool | None = None, names_source: str = "list.txt") -> Path:
    """Unpack a RecordIO's images to `<out>/<label>/<key>.jpg`, or to `names[i]` (relative paths) when given.

    `out` defaults to `imgs` next to the `.rec`.
    """
    reader = RecordReader(rec_path)
    out = Path(out) if out is not None else reader.rec_path.parent / "imgs"
    keys = reader.image_keys
    if not len(keys):
        raise DataError(f"{reader.rec_path}: no image records to unpack (empty file?)")
    if names is not None and len(names) != len(keys):
        raise DataError(f"{names_source}: {len(names)} names for {len(keys)} image records in {reader.rec_path}")
    prepare = _swap_writer(swap_color_channel)

    def produce(key: int) -> bytes:
        _, payload = reader.read_record(key)
        return prepare(payload, f"{reader.rec_path} record {key}")

    if names is not None:
        rels = [_safe_relative(n, f"{names_source} line {i + 1}") for i, n in enumerate(names)]
        if len(set(rels)) != len(rels):
            raise DataError(f"{names_source}: the same image path is listed more than once")
    else:
        rels = [f"{label}/{key}.jpg" for key, label in zip(keys.tolist(), reader.labels.tolist())]
    items = [(rel, lambda key=int(key): produce(key)) for rel, key in zip(rels, keys)]
    sources = [reader.rec_path] + ([reader.idx_path] if reader.idx_path else []) \
        + ([names_source] if names is not None and Path(names_source).is_file() else [])
    recipe = {"command": "convert rec images", "sources": fingerprint(sources), "swap": swap_color_channel,
              "names": names is not None}
    _write_tree(out, items, f"unpack {reader.rec_path.name}", progress, recipe)
    return out
