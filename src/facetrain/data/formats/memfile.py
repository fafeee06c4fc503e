"""Memfiles: a raw `numpy.memmap` plus a JSON sidecar `<file>.conf` holding `shape` and `dtype`.

Ours store uint8 BGR HWC (4x smaller than AdaFace's normalised float32 CHW); the data file is
written under a temporary name, renamed, and only then is the sidecar written, so a memfile
without its `.conf` is never complete. Writing a memfile again keeps the old one (and its
sidecar) valid until the new data is complete: only then are the old `.conf` removed, the new
data and its companion files (the issame list) renamed into place, and the new `.conf` written. Validation sets live in one folder as
`<name>.dat` (+ `.conf`) and `<name>_list.npy` (issame, AdaFace's name). AdaFace's layout,
`<root>/<name>/memfile/mem_file.dat` (+ `.conf`) with `<root>/<name>_list.npy`, is read too.
"""
from __future__ import annotations

import contextlib
import io
import json
import os
import warnings
from pathlib import Path
from typing import Callable, Iterator, Mapping, Sequence

import numpy as np

from facetrain.data.formats.bin import unique_set_names
from facetrain.data.formats.verification_set import VAL_SET_NAMES, VerificationSet, check_issame
from facetrain.errors import DataError
from facetrain.io_utils import atomic_path, atomic_write_bytes, fresh_temporary, open_write, replace

__all__ = ["VAL_SET_NAMES", "write_memfile", "create_memfile", "memfile_writer", "open_memfile", "write_validation_set",
           "load_validation_sets", "find_validation_sets", "read_adaface_memfile", "issame_path"]

MEMFILE_SUFFIX = ".dat"
ADAFACE_MEMFILE = Path("memfile") / "mem_file.dat"


def conf_path(path: str | os.PathLike) -> Path:
    return Path(f"{path}.conf")


def issame_path(root: str | os.PathLike, name: str) -> Path:
    return Path(root) / f"{name}_list.npy"


def _write_conf(path: Path, shape: tuple[int, ...], dtype: np.dtype) -> None:
    """Atomic but not fsync'd: on ext4 an fsync here would also force out the whole data file."""
    with atomic_path(conf_path(path)) as tmp:
        tmp.write_text(json.dumps({"shape": list(shape), "dtype": dtype.name}))


def npy_bytes(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=False)
    return buf.getvalue()


@contextlib.contextmanager
def _staged(path: Path, shape: tuple[int, ...], dtype: np.dtype, companions: Mapping[Path, bytes]) -> Iterator[Path]:
    """Yield the temporary data path; when the body completes, commit: old sidecar out, data and companions in,
    new sidecar last. On any exception the temporary is removed and the old memfile is left as it was."""
    tmp = fresh_temporary(path)
    try:
        yield tmp
        with contextlib.suppress(FileNotFoundError):
            conf_path(path).unlink()
        replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    for companion, data in companions.items():
        atomic_write_bytes(companion, data)
    _write_conf(path, shape, dtype)


@contextlib.contextmanager
def create_memfile(path: str | os.PathLike, shape: Sequence[int], dtype: str | np.dtype = np.uint8,
                   companions: Mapping[Path, bytes] | None = None) -> Iterator[np.memmap]:
    """Yield a writable memmap; on success rename it into place, write `companions` (path -> bytes), then the
    sidecar. An earlier memfile at `path` stays valid until then; on any exception it is left untouched.

    The pages are not msync'd: that guards against power loss only, and costs ~40% of a
    `.bin` conversion; an interrupted process (the case that matters) never leaves a `.conf`.
    """
    path = Path(path)
    shape, dtype = tuple(int(s) for s in shape), np.dtype(dtype)
    path.parent.mkdir(parents=True, exist_ok=True)
    with _staged(path, shape, dtype, companions or {}) as tmp:
        mm = np.memmap(tmp, mode="w+", shape=shape, dtype=dtype) if np.prod(shape) else None
        yield mm if mm is not None else np.empty(shape, dtype)
        if mm is None:
            tmp.touch()
        del mm


@contextlib.contextmanager
def memfile_writer(path: str | os.PathLike, shape: Sequence[int], dtype: str | np.dtype = np.uint8,
                   companions: Mapping[Path, bytes] | None = None) -> Iterator[Callable[[np.ndarray], None]]:
    """Yield `write(block)` that appends blocks of rows sequentially (plain writes: cheaper than faulting in a
    fresh memmap); when the body ends the row count is checked and the memfile committed as in create_memfile."""
    path = Path(path)
    shape, dtype = tuple(int(s) for s in shape), np.dtype(dtype)
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = 0
    with _staged(path, shape, dtype, companions or {}) as tmp:
        with open_write(tmp, "wb") as f:
            def write(block: np.ndarray) -> None:
                nonlocal rows
                block = np.ascontiguousarray(block, dtype=dtype)
                if block.shape[1:] != shape[1:]:
                    raise ValueError(f"{path}: block of shape {block.shape} for a memfile of shape {shape}")
                f.write(block.data)
                rows += len(block)
            yield write
        if rows != shape[0]:
            raise ValueError(f"{path}: {rows} rows written for a memfile of {shape[0]}")


def write_memfile(path: str | os.PathLike, array: np.ndarray, chunk: int = 4096) -> None:
    """Write `array` as a memfile (data first, sidecar last)."""
    with create_memfile(path, array.shape, array.dtype) as mm:
        for start in range(0, len(array), chunk):
            mm[start:start + chunk] = array[start:start + chunk]


def open_memfile(path: str | os.PathLike) -> np.memmap:
    """Open a complete memfile read-only; a missing/invalid sidecar or a size mismatch is a DataError."""
    path = Path(path)
    conf = conf_path(path)
    if not path.is_file():
        raise DataError(f"{path}: memfile not found")
    if not conf.is_file():
        raise DataError(f"{path}: no sidecar {conf.name}: the memfile is incomplete (interrupted conversion?); "
                        "convert it again")
    try:
        meta = json.loads(conf.read_text())
        shape, dtype = tuple(int(s) for s in meta["shape"]), np.dtype(meta["dtype"])
    except (ValueError, KeyError, TypeError) as exc:
        raise DataError(f"{conf}: invalid memfile sidecar ({exc})") from None
    expected = int(np.prod(shape)) * dtype.itemsize
    size = path.stat().st_size
    if size != expected:
        raise DataError(f"{path}: {size} bytes but {conf.name} describes {shape} {dtype} = {expected} bytes")
    if expected == 0:
        return np.empty(shape, dtype)
    return np.memmap(path, mode="r", shape=shape, dtype=dtype)


def read_adaface_memfile(path: str | os.PathLike, chunk: int = 1024) -> np.ndarray:
    """AdaFace's float32 (N,3,112,112) memfile, normalised (x/255-0.5)/0.5 and already BGR -> uint8 BGR HWC."""
    data = open_memfile(path)
    if data.ndim != 4 or data.shape[1] != 3:
        raise DataError(f"{path}: expected AdaFace's (N,3,H,W) layout, got {data.shape}")
    out = np.empty((data.shape[0], data.shape[2], data.shape[3], 3), dtype=np.uint8)
    for s in range(0, len(data), chunk):
        block = np.asarray(data[s:s + chunk], dtype=np.float32)
        out[s:s + chunk] = np.clip(np.rint((block * 0.5 + 0.5) * 255.0), 0, 255).astype(np.uint8).transpose(0, 2, 3, 1)
    return out


def write_validation_set(root: str | os.PathLike, vset: VerificationSet) -> Path:
    """`<root>/<name>.dat` (+ .conf) and `<root>/<name>_list.npy`; the issame list is saved before the sidecar."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    path = root / f"{vset.name}{MEMFILE_SUFFIX}"
    with create_memfile(path, vset.images.shape, np.uint8, issame_file(root, vset.name, vset.issame)) as mm:
        mm[:] = vset.images
    return path


def issame_file(root: str | os.PathLike, name: str, issame: np.ndarray) -> dict[Path, bytes]:
    """The issame list as a memfile companion: {path: .npy bytes}."""
    return {issame_path(root, name): npy_bytes(np.asarray(issame, dtype=bool))}


def save_issame(root: str | os.PathLike, name: str, issame: np.ndarray) -> None:
    for path, data in issame_file(root, name, issame).items():
        atomic_write_bytes(path, data)


def load_issame(root: str | os.PathLike, name: str) -> np.ndarray:
    path = issame_path(root, name)
    if not path.is_file():
        raise DataError(f"{path}: issame list of validation set {name!r} not found")
    try:
        labels = np.load(path, allow_pickle=False)
    except (ValueError, OSError) as exc:
        raise DataError(f"{path}: unreadable issame list ({exc})") from None
    return check_issame(labels, str(path))


def find_validation_sets(root: str | os.PathLike) -> dict[str, tuple[str, Path]]:
    """name -> (kind, path) for every set under `root`; kind is 'memfile', 'adaface_memfile' or 'bin'.

    Preference when several exist: our memfile, AdaFace's memfile, then the `.bin`. A memfile
    without its sidecar is skipped with a warning when a `.bin` can replace it, else reported.
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: validation folder not found")
    found: dict[str, tuple[str, Path]] = {name: ("bin", p) for name, p in unique_set_names(sorted(root.glob("*.bin"))).items()}
    for kind, paths in (("adaface_memfile", sorted(root.glob(f"*/{ADAFACE_MEMFILE.as_posix()}"))),
                        ("memfile", sorted(p for p in root.glob(f"*{MEMFILE_SUFFIX}") if p.name != TRAIN_MEMFILE))):
        for p in paths:
            name = p.parent.parent.name if kind == "adaface_memfile" else p.name[: -len(MEMFILE_SUFFIX)]
            if conf_path(p).is_file() and issame_path(root, name).is_file():
                found[name] = (kind, p)
            elif name in found:
                warnings.warn(f"{p}: incomplete memfile (no .conf or {name}_list.npy); using {found[name][1].name}")
            else:
                found[name] = ("incomplete", p)
    return found


def _load_one(root: Path, name: str, kind: str, path: Path, progress: bool | None) -> VerificationSet:
    if kind == "bin":
        from facetrain.data.formats.bin import read_bin

        return read_bin(path, progress=progress)
    if kind == "incomplete":
        raise DataError(f"{path}: memfile of {name!r} is incomplete (no .conf sidecar or {name}_list.npy); "
                        "run `facetrain convert --make_validation_memfiles` again")
    images = open_memfile(path) if kind == "memfile" else read_adaface_memfile(path)
    return VerificationSet(name, images, load_issame(root, name))


def load_validation_sets(root: str | os.PathLike, names: Sequence[str] | None = None,
                         progress: bool | None = False) -> dict[str, VerificationSet]:
    """Every verification set in `root` (or just `names`, in that order): `.bin` files or memfiles.

    Without `names`, the five standard sets come first in VAL_SET_NAMES order, then others sorted.
    """
    root = Path(root)
    found = find_validation_sets(root)
    if names is None:
        order = [n for n in VAL_SET_NAMES if n in found] + sorted(n for n in found if n not in VAL_SET_NAMES)
        if not order:
            raise DataError(f"{root}: no verification sets (.bin files or memfiles) found")
    else:
        missing = [n for n in names if n not in found]
        if missing:
            have = ", ".join(sorted(found)) or "none"
            raise DataError(f"{root}: validation set(s) {', '.join(missing)} not found (found: {have})")
        order = list(names)
    return {n: _load_one(root, n, *found[n], progress) for n in order}


TRAIN_MEMFILE = "train.dat"
TRAIN_LABELS = "train_labels.npy"


def write_training_memfile(root: str | os.PathLike, images: np.ndarray, labels: np.ndarray) -> Path:
    """`<root>/train.dat` (+ .conf, written last) of (N,112,112,3) uint8 BGR and `<root>/train_labels.npy` (int64)."""
    root = Path(root)
    labels = np.asarray(labels, dtype=np.int64)
    if len(images) != len(labels):
        raise ValueError(f"{len(images)} images but {len(labels)} labels")
    path = root / TRAIN_MEMFILE
    root.mkdir(parents=True, exist_ok=True)
    with create_memfile(path, images.shape, np.uint8, {root / TRAIN_LABELS: npy_bytes(labels)}) as mm:
        for s in range(0, len(images), 4096):
            mm[s:s + 4096] = images[s:s + 4096]
    return path


def open_training_memfile(root: str | os.PathLike) -> tuple[np.memmap, np.ndarray]:
    """(images memmap, int64 labels) of a training memfile folder."""
    root = Path(root)
    images = open_memfile(root / TRAIN_MEMFILE)
    labels_path = root / TRAIN_LABELS
    if not labels_path.is_file():
        raise DataError(f"{labels_path}: labels of the training memfile not found")
    labels = np.load(labels_path, allow_pickle=False).astype(np.int64)
    if images.ndim != 4 or images.shape[1:] != (112, 112, 3) or images.dtype != np.uint8:
        raise DataError(f"{root / TRAIN_MEMFILE}: expected (N,112,112,3) uint8, got {images.shape} {images.dtype}")
    if len(labels) != len(images):
        raise DataError(f"{labels_path}: {len(labels)} labels for {len(images)} images")
    return images, labels
