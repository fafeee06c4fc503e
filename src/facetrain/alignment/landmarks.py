"""Alignment from five landmarks you already have (IJB, VGGFace2 and others ship them), skipping detection.

Points are, in this order: the eye on the left of the image, the eye on the right, the nose tip, the
mouth corner on the left, the mouth corner on the right (insightface's `kps`, RetinaFace's and IJB's
order, and what MTCNN returns). Files list one image per row:
- CSV: `path,x1,y1,x2,y2,x3,y3,x4,y4,x5,y5` (a header line is allowed);
- JSON: `{"path": [[x1, y1], ..., [x5, y5]], ...}` or `{"path": [x1, y1, ..., x5, y5], ...}`.
Ten flat numbers are read pairwise (`layout="xy"`) unless `layout="xxyy"`: all x then all y, as
MTCNN implementations flatten them (AdaFace's `landmark[j], landmark[j + 5]`).
A path is relative to the folder being aligned (`identity/image.jpg`) or absolute.

A similarity transform cannot mirror: landmarks with the left and right points swapped would be fitted
by a scaled-down, rotated compromise and give a face-like but wrong crop. They are refused instead,
from the orientation of the eyes-mouth triangle, which no rotation or scale changes.
"""
from __future__ import annotations

import csv
import json
import math
import os
from pathlib import Path

import numpy as np

from facetrain.errors import DataError
from facetrain.geometry.similarity import TEMPLATE_112

LAYOUTS = ("xy", "xxyy")


def _orientation(points: np.ndarray) -> float:
    """Signed area of (left eye, right eye, mouth centre): positive for the template's order."""
    left_eye, right_eye, mouth = points[0], points[1], (points[3] + points[4]) / 2
    a, b = right_eye - left_eye, mouth - left_eye
    return float(a[0] * b[1] - a[1] * b[0])


_TEMPLATE_SIGN = math.copysign(1.0, _orientation(TEMPLATE_112.astype(np.float64)))


def as_points(values: object, name: str, layout: str = "xy") -> np.ndarray:
    """(5, 2) float64 landmarks of `values` (5 pairs, or 10 numbers in `layout`), checked: finite, not
    all on one line, and not mirrored. `name` says where they came from in the error."""
    if layout not in LAYOUTS:
        raise DataError(f"landmark layout must be one of {LAYOUTS}, got {layout!r}")
    try:
        array = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError):
        raise DataError(f"{name}: landmarks must be 10 numbers, got {values!r:.80}") from None
    if array.size != 10 or array.ndim not in (1, 2) or (array.ndim == 2 and array.shape != (5, 2)):
        raise DataError(f"{name}: landmarks must be 5 (x, y) points or 10 numbers, got shape {array.shape}")
    if array.ndim == 1:
        array = array.reshape(5, 2) if layout == "xy" else array.reshape(2, 5).T
    if not np.isfinite(array).all():
        raise DataError(f"{name}: landmarks are not finite numbers: {array.tolist()}")
    area = _orientation(array)
    spread = float(np.ptp(array, axis=0).max())
    if abs(area) <= 1e-6 * max(spread, 1e-12) ** 2:
        raise DataError(f"{name}: the landmarks' eyes and mouth lie on one line; they cannot be fitted")
    if math.copysign(1.0, area) != _TEMPLATE_SIGN:
        raise DataError(f"{name}: the landmarks are mirrored (left and right points swapped?); expected the "
                        "image-left eye, image-right eye, nose, image-left and image-right mouth corners"
                        + ("" if layout == "xxyy" else ", or use the xxyy layout (all x, then all y)"))
    return array


def _csv_rows(path: Path, text: str) -> list[tuple[str, list[str], int]]:
    rows = []
    for line, fields in enumerate(csv.reader(text.splitlines()), start=1):
        fields = [f.strip() for f in fields]
        if not fields or not any(fields) or fields[0].startswith("#"):
            continue
        if len(fields) != 11:
            raise DataError(f"{path}, line {line}: expected an image path and 10 coordinates, got {len(fields)} fields")
        try:
            [float(v) for v in fields[1:]]
        except ValueError:
            if line == 1 and not rows:
                continue  # a header
            raise DataError(f"{path}, line {line}: coordinates must be numbers, got {fields[1:]}") from None
        rows.append((fields[0], fields[1:], line))
    return rows


def read_landmarks(path: str | os.PathLike, layout: str = "xy") -> dict[str, np.ndarray]:
    """{image path as written in the file: (5, 2) landmarks} of a CSV or JSON landmark file (see the module)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise DataError(f"{path}: landmark file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: cannot read the landmark file ({exc})") from None
    if path.suffix.lower() == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise DataError(f"{path}: not valid JSON ({exc})") from None
        if not isinstance(data, dict):
            raise DataError(f"{path}: expected a JSON object of image path -> landmarks")
        entries = [(str(key), value, f"{path}, {key}") for key, value in data.items()]
    else:
        entries = [(name, values, f"{path}, line {line}") for name, values, line in _csv_rows(path, text)]
    landmarks: dict[str, np.ndarray] = {}
    for name, values, where in entries:
        if name in landmarks:
            raise DataError(f"{where}: {name} is listed twice")
        landmarks[name] = as_points(values, where, layout)
    if not landmarks:
        raise DataError(f"{path}: no landmarks in the file")
    return landmarks


def landmarks_for(landmarks: dict[str, np.ndarray], source: Path, root: Path) -> np.ndarray | None:
    """The landmarks of `source` (a file under `root`), listed by its path relative to root or absolute."""
    for key in (source.relative_to(root).as_posix(), os.path.abspath(source), str(source.resolve())):
        if key in landmarks:
            return landmarks[key]
    return None
