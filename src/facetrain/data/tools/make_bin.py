"""Build an InsightFace-format `.bin` verification set from an image folder of aligned faces, so users
can validate (and `facetrain eval`) on their own data.

Pairs are either drawn at random (seeded; half genuine, half impostor, alternating so that every
contiguous 10-fold split is balanced; no pair twice; identities listed in `exclude` never used, e.g.
the training identities) or read from a pairs file: one pair a line, `path_a path_b label` with paths
relative to the folder and label 1 (same person) or 0. Images are stored with their original encoded
bytes (no re-encoding), and every image is decoded once to check it is an aligned 112x112 face.
"""
from __future__ import annotations

import codecs
import os
import pickle
from pathlib import Path

import cv2
import numpy as np

from facetrain.data.formats.image_codec import parallel_map
from facetrain.data.formats.bin import set_name
from facetrain.data.formats.image_folder import list_identities, resolve_imgs_dir
from facetrain.data.formats.verification_set import MIN_PAIRS, check_issame
from facetrain.errors import DataError
from facetrain.io_utils import atomic_write_bytes

FACE_SHAPE = (112, 112, 3)


def sample_pairs(labels: np.ndarray, num_pairs: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """((num_pairs, 2) image indices, issame) drawn uniformly: genuine pairs from identities with two or
    more images, impostor pairs across identities; even positions genuine, odd impostor."""
    labels = np.asarray(labels)
    classes, counts = np.unique(labels, return_counts=True)
    members = {c: np.flatnonzero(labels == c) for c in classes}
    multi = classes[counts >= 2]
    if len(multi) == 0 or len(classes) < 2:
        raise DataError("need at least one identity with two images and two identities to draw pairs")
    max_genuine = int(sum(n * (n - 1) // 2 for n in counts[counts >= 2]))
    if (num_pairs + 1) // 2 > max_genuine:
        raise DataError(f"{num_pairs} pairs need {(num_pairs + 1) // 2} genuine pairs, the data has {max_genuine}")
    rng = np.random.default_rng(seed)
    pairs, issame, seen = [], [], set()
    attempts = 0
    while len(pairs) < num_pairs:
        attempts += 1
        if attempts > 100 * num_pairs + 1000:
            raise DataError(f"could not draw {num_pairs} distinct pairs from {len(labels)} images")
        genuine = len(pairs) % 2 == 0
        if genuine:
            a, b = rng.choice(members[rng.choice(multi)], 2, replace=False)
        else:
            ca, cb = rng.choice(classes, 2, replace=False)
            a, b = rng.choice(members[ca]), rng.choice(members[cb])
        key = (min(a, b), max(a, b))
        if key in seen:
            continue
        seen.add(key)
        pairs.append((int(a), int(b)))
        issame.append(genuine)
    return np.array(pairs, dtype=np.int64).reshape(-1, 2), np.array(issame, dtype=bool)


_BOMS = ((codecs.BOM_UTF32_LE, "utf-32"), (codecs.BOM_UTF32_BE, "utf-32"), (codecs.BOM_UTF8, "utf-8-sig"),
         (codecs.BOM_UTF16_LE, "utf-16"), (codecs.BOM_UTF16_BE, "utf-16"))


def read_text_file(path: str | os.PathLike) -> str:
    """A text file in UTF-8, or in any Unicode encoding its byte-order mark names (editors on Windows
    save UTF-16 with one); anything else is a DataError naming the file."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise DataError(f"{path}: cannot read ({exc.strerror})") from None
    encoding = next((name for bom, name in _BOMS if data.startswith(bom)), "utf-8")
    try:
        return data.decode(encoding)
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not {encoding.upper()} text (byte {exc.start}); save it as UTF-8") from None


def read_pairs_file(path: str | os.PathLike) -> list[tuple[str, str, bool]]:
    pairs = []
    for number, line in enumerate(read_text_file(path).splitlines(), 1):
        fields = line.split()
        if not fields or fields[0].startswith("#"):
            continue
        if len(fields) != 3 or fields[2] not in ("0", "1"):
            raise DataError(f"{path}: line {number}: expected `path_a path_b 1|0`, got {line!r}")
        pairs.append((fields[0], fields[1], fields[2] == "1"))
    if not pairs:
        raise DataError(f"{path}: no pairs")
    return pairs


def make_bin(folder: str | os.PathLike, out: str | os.PathLike, num_pairs: int = 3000, seed: int = 0,
             exclude: set[str] | frozenset[str] = frozenset(), pairs_file: str | os.PathLike | None = None) -> dict:
    """Write `out` (.bin) from `folder` (`<folder>/imgs/<identity>/<image>` or `<folder>/<identity>/<image>`);
    returns a summary (pairs, genuine, identities, images). Refuses what `eval` would refuse: a name
    that cannot name a set, fewer than MIN_PAIRS pairs, one kind of pair only."""
    set_name(out)
    if Path(out).suffix.lower() != ".bin":
        raise DataError(f"{out}: a verification set is written as a .bin file (eval looks for *.bin)")
    if pairs_file is None and num_pairs < MIN_PAIRS:
        raise DataError(f"{num_pairs} pairs: the 10-fold protocol needs at least {MIN_PAIRS}")
    root = resolve_imgs_dir(folder, require_imgs=False)
    if pairs_file is not None:
        listed = read_pairs_file(pairs_file)
        paths = [root / p for a, b, _ in listed for p in (a, b)]
        issame = np.array([same for _, _, same in listed], dtype=bool)
        if len(issame) < MIN_PAIRS:
            raise DataError(f"{pairs_file}: {len(issame)} pairs; the 10-fold protocol needs at least {MIN_PAIRS}")
        check_issame(issame, str(pairs_file))
    else:
        identities = {name: files for name, files in list_identities(root).items() if name not in exclude}
        files = [(root / name / f, label) for label, (name, names) in enumerate(identities.items()) for f in names]
        if not files:
            raise DataError(f"{root}: no images (after excluding {len(exclude)} identities)")
        index, issame = sample_pairs(np.array([label for _, label in files]), num_pairs, seed)
        paths = [files[i][0] for i in index.reshape(-1)]
    missing = next((p for p in paths if not p.is_file()), None)
    if missing is not None:
        raise DataError(f"{missing}: image not found")

    def check(path: Path) -> bytes:
        encoded = path.read_bytes()
        # decoded as stored: read_bin would resize another size to 112x112 silently (as insightface does)
        image = cv2.imdecode(np.frombuffer(encoded, np.uint8), cv2.IMREAD_COLOR) if encoded else None
        if image is None:
            raise DataError(f"{path}: cannot decode image ({len(encoded)} bytes; corrupt or not an image)")
        if image.shape != FACE_SHAPE:
            raise DataError(f"{path}: {image.shape[1]}x{image.shape[0]} image; a verification set holds aligned "
                            "112x112 faces (align photos first: facetrain align)")
        return encoded

    encoded = list(parallel_map(check, paths))
    atomic_write_bytes(out, pickle.dumps((encoded, [bool(s) for s in issame]), protocol=4))
    return {"pairs": int(len(issame)), "genuine": int(issame.sum()), "images": len(set(map(str, paths))),
            "identities": len({Path(p).parent.name for p in paths})}
