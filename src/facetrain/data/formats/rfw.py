"""Pair sets per demographic group: RFW as it is released, its groups as `.bin` files, or any
`NAME=SET` mapping.

RFW's release (`test/` after unpacking): `data/<Group>/<identity>/<identity>_<NNNN>.jpg` and
`txts/<Group>/<Group>_pairs.txt` in LFW's pairs format, one pair a line: `name n1 n2` (same person,
images n1 and n2 of `name`) or `name1 n1 name2 n2` (different people); an optional first line of two
integers (folds, pairs per fold) is LFW's header. Identities are Freebase ids such as `m.0c7mh2`. The
groups are African, Asian, Caucasian and Indian, 6,000 pairs each in 10 folds. The evaluation takes
aligned 112x112 faces: a release whose images are the loose crops is refused (align it first, e.g.
`facetrain align data/<Group> aligned/<Group>`, whose `imgs/` folder this reader also accepts).
Some copies circulate as `<Group>_test.bin` InsightFace files; those are read too.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping, Sequence

import cv2
import numpy as np

from facetrain.data.formats.verification_set import VerificationSet
from facetrain.errors import DataError

RFW_GROUPS = ("African", "Asian", "Caucasian", "Indian")
_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp")


def parse_lfw_pairs(path: str | os.PathLike) -> list[tuple[str, int, str, int]]:
    """(identity a, image number a, identity b, image number b) per line of an LFW-format pairs file."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8-sig").splitlines()
    except FileNotFoundError:
        raise DataError(f"{path}: pairs file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: cannot read the pairs file ({exc})") from None
    pairs = []
    for number, line in enumerate(lines, 1):
        fields = line.split()
        if not fields:
            continue
        try:
            if len(fields) == 2 and number == 1 and all(f.isdigit() for f in fields):
                continue  # LFW's header: folds, pairs per fold
            if len(fields) == 3:
                pairs.append((fields[0], int(fields[1]), fields[0], int(fields[2])))
            elif len(fields) == 4:
                pairs.append((fields[0], int(fields[1]), fields[2], int(fields[3])))
            else:
                raise ValueError
        except ValueError:
            raise DataError(f"{path}, line {number}: expected `name n1 n2` or `name1 n1 name2 n2`, got {line!r}") from None
    if not pairs:
        raise DataError(f"{path}: no pairs")
    return pairs


def _image_path(folder: Path, identity: str, number: int, pairs_file: Path) -> Path:
    stem = f"{identity}_{number:04d}"
    for ext in _EXTENSIONS:
        candidate = folder / identity / f"{stem}{ext}"
        if candidate.is_file():
            return candidate
    raise DataError(f"{pairs_file}: image {number} of {identity} not found ({folder / identity / stem}.jpg)")


def _read_face(path: Path) -> np.ndarray:
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise DataError(f"{path}: unreadable image")
    if image.shape != (112, 112, 3):
        raise DataError(f"{path}: a {image.shape[1]}x{image.shape[0]} image, not an aligned 112x112 face; align the "
                        "release first (facetrain align data/<Group> aligned/<Group>, or with its landmarks)")
    return image


def read_rfw_group(root: str | os.PathLike, group: str) -> VerificationSet:
    """One group of an RFW release (root = the folder holding `data/` and `txts/`) as a pair set."""
    root = Path(root)
    pairs_file = root / "txts" / group / f"{group}_pairs.txt"
    folder = root / "data" / group
    if (folder / "imgs").is_dir():
        folder = folder / "imgs"
    pairs = parse_lfw_pairs(pairs_file)
    paths = [_image_path(folder, name, n, pairs_file) for a, na, b, nb in pairs for name, n in ((a, na), (b, nb))]
    images = np.empty((len(paths), 112, 112, 3), np.uint8)
    for k, path in enumerate(paths):
        images[k] = _read_face(path)
    issame = np.array([a == b for a, _, b, _ in pairs], dtype=bool)
    return VerificationSet(group, images, issame)


def is_rfw_release(path: str | os.PathLike) -> bool:
    path = Path(path)
    return (path / "txts").is_dir() and (path / "data").is_dir()


def load_group_sets(path: str | os.PathLike, groups: Sequence[str] | None = None) -> dict[str, VerificationSet]:
    """{group: pair set} of an RFW release folder (the one holding `data/` and `txts/`, or its parent) with
    every group listed under `txts/` (or `groups`), or of a folder of `<Group>_test.bin` / `<Group>.bin`
    files of RFW's groups (or `groups`)."""
    from facetrain.data.formats.bin import read_bin

    path = Path(path)
    if not path.is_dir():
        raise DataError(f"{path}: not a folder (expected an RFW release or a folder of <Group>_test.bin files)")
    release = path if is_rfw_release(path) else path / "test" if is_rfw_release(path / "test") else None
    if release is not None:
        listed = sorted(p.name for p in (release / "txts").iterdir() if (p / f"{p.name}_pairs.txt").is_file())
        present = [g for g in groups if g in listed] if groups else listed
        if not present:
            raise DataError(f"{release}: no group's <Group>/<Group>_pairs.txt under txts/"
                            + (f" among {list(groups)}" if groups else ""))
        return {g: read_rfw_group(release, g) for g in present}
    names = list(groups or RFW_GROUPS)
    sets = {}
    for group in names:
        for candidate in (path / f"{group}_test.bin", path / f"{group}.bin"):
            if candidate.is_file():
                vset = read_bin(candidate)
                sets[group] = VerificationSet(group, vset.images, vset.issame)
                break
    if not sets:
        raise DataError(f"{path}: neither an RFW release (data/ and txts/) nor .bin files of the groups {names}")
    return sets


def parse_group_mapping(items: Sequence[str]) -> dict[str, str]:
    """`NAME=SET` arguments -> {name: set path}; names unique, sets given."""
    mapping: dict[str, str] = {}
    for item in items:
        name, sep, target = item.partition("=")
        if not sep or not name or not target:
            raise DataError(f"--groups expects NAME=SET (a .bin file or a memfile set), got {item!r}")
        if name in mapping:
            raise DataError(f"--groups names {name!r} twice")
        mapping[name] = target
    return mapping


def load_mapped_sets(mapping: Mapping[str, str]) -> dict[str, VerificationSet]:
    """{name: pair set} of `NAME=SET` targets: `.bin` files or folders holding one set (memfile or .bin)."""
    from facetrain.data.formats.bin import read_bin
    from facetrain.data.formats.memfile import load_validation_sets

    sets = {}
    for name, target in mapping.items():
        path = Path(target)
        if path.is_file():
            vset = read_bin(path)
        elif path.is_dir():
            found = load_validation_sets(path)
            if len(found) != 1:
                raise DataError(f"{path}: expected one pair set for group {name}, found {sorted(found) or 'none'}")
            vset = next(iter(found.values()))
        else:
            raise DataError(f"{path}: pair set for group {name} not found")
        sets[name] = VerificationSet(name, vset.images, vset.issame)
    return sets
