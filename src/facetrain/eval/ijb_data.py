"""Reading the IJB-B / IJB-C protocol files (insightface's release), in both folder layouts.

Layouts under a data root R (dataset name IJBB/IJBC in any case; meta prefix `ijbb_`/`ijbc_`):
- AdaFace / insightface: `R/<IJBX>/loose_crop/<name>` and `R/<IJBX>/meta/<ijbx>_*.txt`;
- seed: `R/meta/<IJBX>_meta/<ijbx>_*.txt` with images in `R/ijb/<IJBX>/loose_crop/<name[:2]>/<name>`.
Meta files: `<ijbx>_name_5pts_score.txt` (name, 10 landmark coordinates, faceness),
`<ijbx>_face_tid_mid.txt` (name, template id, media id; same order),
`<ijbx>_template_pair_label.txt` (t1 t2 label); 1:N: `<ijbx>_1N_gallery_{G1,G2|S1,S2}.csv`
(also `_1N_gal_`), `<ijbx>_1N_probe_mixed.csv` (header; TEMPLATE_ID, SUBJECT_ID first).
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from facetrain.errors import DataError


@dataclass
class IJBProtocol:
    name: str                  # upper case, e.g. "IJBC"
    meta_dir: Path
    image_paths: list[Path]
    landmarks: np.ndarray      # (N, 5, 2) float32, loose-crop pixel coordinates
    faceness: np.ndarray       # (N,) float32 detector scores
    templates: np.ndarray      # (N,) int64
    medias: np.ndarray         # (N,) int64
    pair_t1: np.ndarray        # (P,) int64
    pair_t2: np.ndarray        # (P,) int64
    pair_label: np.ndarray     # (P,) int64, 1 = genuine

    @property
    def prefix(self) -> str:
        return self.name.lower()


@dataclass
class IdentificationLists:
    gallery_templates: np.ndarray  # one row per image line, as in the CSVs
    gallery_subjects: np.ndarray
    probe_templates: np.ndarray
    probe_subjects: np.ndarray
    files: list[Path]


def _child(parent: Path, name: str) -> Path | None:
    """`parent/name`, matching the name case-insensitively (IJBC vs ijbc folders)."""
    exact = parent / name
    if exact.exists():
        return exact
    if parent.is_dir():
        for entry in parent.iterdir():
            if entry.name.lower() == name.lower():
                return entry
    return None


def _find(base: Path, *parts: str) -> Path | None:
    path = base
    for part in parts:
        path = _child(path, part)
        if path is None:
            return None
    return path


def locate(data_root: str | Path, dataset_name: str) -> tuple[Path, Path, bool]:
    """(meta_dir, loose_crop_dir, sharded) for either layout; DataError listing what was tried."""
    root, name = Path(data_root), dataset_name.upper()
    layouts = [((name, "meta"), ("ijb", name, "loose_crop"), (name, "loose_crop")),
               (("meta", f"{name}_meta"), ("ijb", name, "loose_crop"), (name, "loose_crop"))]
    for meta_parts, *image_candidates in layouts:
        meta_dir = _find(root, *meta_parts)
        if meta_dir is None:
            continue
        for parts in image_candidates:
            image_dir = _find(root, *parts)
            if image_dir is not None:
                return meta_dir, image_dir, parts[0] == "ijb"
        raise DataError(f"{meta_dir}: found the meta folder but no loose_crop folder "
                        f"({root / name / 'loose_crop'} or {root / 'ijb' / name / 'loose_crop'})")
    raise DataError(f"{root}: no {name} protocol: expected {root / name / 'meta'} (AdaFace layout) "
                    f"or {root / 'meta' / (name + '_meta')} (seed layout)")


def _meta_file(meta_dir: Path, filename: str) -> Path:
    path = _child(meta_dir, filename)
    if path is None:
        raise DataError(f"{meta_dir / filename}: missing IJB meta file")
    return path


def read_landmarks(path: Path) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Names, (N,5,2) landmarks and faceness scores of `<ijbx>_name_5pts_score.txt`."""
    names, values = [], []
    with open(path) as f:
        for lineno, line in enumerate(f, 1):
            parts = line.split()
            if not parts:
                continue
            if len(parts) != 12:
                raise DataError(f"{path}:{lineno}: expected a name, 10 landmark coordinates and a score, got {len(parts)} fields")
            try:
                values.append([float(v) for v in parts[1:]])
            except ValueError as exc:
                raise DataError(f"{path}:{lineno}: {exc}") from None
            names.append(parts[0])
    arr = np.asarray(values, dtype=np.float32).reshape(-1, 11)
    bad = ~np.isfinite(arr).all(axis=1)
    if bad.any():  # a NaN landmark would fail the alignment's least squares deep inside the embedding
        raise DataError(f"{path}: {int(bad.sum())} line(s) hold a non-finite landmark or score, the first is "
                        f"image {names[int(np.flatnonzero(bad)[0])]!r}")
    return names, arr[:, :10].reshape(-1, 5, 2), arr[:, 10]


def read_template_media(path: Path) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Names, template ids and media ids of `<ijbx>_face_tid_mid.txt`."""
    names, ids = [], []
    with open(path) as f:
        for lineno, line in enumerate(f, 1):
            parts = line.split()
            if not parts:
                continue
            if len(parts) < 3:
                raise DataError(f"{path}:{lineno}: expected 'image template_id media_id'")
            try:
                ids.append((int(parts[1]), int(parts[2])))
            except ValueError as exc:
                raise DataError(f"{path}:{lineno}: {exc}") from None
            names.append(parts[0])
    arr = np.asarray(ids, dtype=np.int64).reshape(-1, 2)
    return names, arr[:, 0], arr[:, 1]


def read_pairs(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """t1, t2, label of `<ijbx>_template_pair_label.txt` (15.7M lines for IJB-C: parsed in C)."""
    text = path.read_text()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        flat = np.fromstring(text, dtype=np.int64, sep=" ")
    n_lines = text.count("\n") + (0 if text.endswith("\n") else 1)
    if len(flat) != 3 * n_lines:  # blank lines or a malformed line: parse line by line to say which
        rows = []
        for lineno, line in enumerate(text.splitlines(), 1):
            parts = line.split()
            if not parts:
                continue
            if len(parts) != 3 or not all(p.lstrip("-").isdigit() for p in parts):
                raise DataError(f"{path}:{lineno}: expected 't1 t2 label' integers, got {line.strip()!r}")
            rows.append([int(p) for p in parts])
        flat = np.asarray(rows, dtype=np.int64).reshape(-1)
    pairs = flat.reshape(-1, 3)
    labels = pairs[:, 2]
    odd = np.flatnonzero((labels != 0) & (labels != 1))
    if len(odd):
        raise DataError(f"{path}: pair {int(odd[0]) + 1} has label {int(labels[odd[0]])}: labels are 1 (genuine) or 0 "
                        f"(impostor); {len(odd)} pair(s) have other labels")
    if len(labels) == 0:
        raise DataError(f"{path}: no pairs")
    genuine = int(labels.sum())
    if genuine == 0 or genuine == len(labels):
        raise DataError(f"{path}: {len(labels)} pairs, {genuine} genuine and {len(labels) - genuine} impostor: "
                        "TAR at FAR needs both kinds of pair")
    return pairs[:, 0].copy(), pairs[:, 1].copy(), labels.copy()


def load_protocol(data_root: str | Path, dataset_name: str) -> IJBProtocol:
    """Read and cross-check the 1:1 protocol; every inconsistency is a DataError naming the file."""
    meta_dir, image_dir, sharded = locate(data_root, dataset_name)
    prefix = dataset_name.lower()
    lmk_path = _meta_file(meta_dir, f"{prefix}_name_5pts_score.txt")
    tid_path = _meta_file(meta_dir, f"{prefix}_face_tid_mid.txt")
    pair_path = _meta_file(meta_dir, f"{prefix}_template_pair_label.txt")
    names, landmarks, faceness = read_landmarks(lmk_path)
    tid_names, templates, medias = read_template_media(tid_path)
    if len(names) != len(tid_names):
        raise DataError(f"{lmk_path}: {len(names)} landmark lines but {tid_path} lists {len(tid_names)} images "
                        "(the two files must describe the same images in the same order)")
    for i, (a, b) in enumerate(zip(names, tid_names)):
        if a != b:
            raise DataError(f"{lmk_path}:{i + 1}: image {a!r} but {tid_path}:{i + 1} has {b!r}")
    t1, t2, label = read_pairs(pair_path)
    known = np.unique(templates)
    for side in (t1, t2):
        missing = ~np.isin(side, known)
        if missing.any():
            i = int(np.flatnonzero(missing)[0])
            raise DataError(f"{pair_path}:{i + 1}: template {int(side[i])} has no images in {tid_path}")
    paths = [image_dir / n[:2] / n if sharded else image_dir / n for n in names]
    return IJBProtocol(dataset_name.upper(), meta_dir, paths, landmarks, faceness, templates, medias, t1, t2, label)


def _read_subject_csv(path: Path) -> tuple[np.ndarray, np.ndarray]:
    rows = []
    with open(path) as f:
        next(f, None)  # header: TEMPLATE_ID,SUBJECT_ID,...
        for lineno, line in enumerate(f, 2):
            if not line.strip():
                continue
            parts = line.split(",")
            try:
                rows.append((int(parts[0]), int(parts[1])))
            except (ValueError, IndexError):
                raise DataError(f"{path}:{lineno}: expected TEMPLATE_ID,SUBJECT_ID,... got {line.strip()!r}") from None
    arr = np.asarray(rows, dtype=np.int64).reshape(-1, 2)
    return arr[:, 0], arr[:, 1]


def load_identification_lists(meta_dir: Path, dataset_name: str) -> IdentificationLists | str:
    """Gallery (both halves) and mixed-probe lists; a message string when the 1:N files are absent."""
    prefix = dataset_name.lower()
    probe = _child(meta_dir, f"{prefix}_1N_probe_mixed.csv")
    galleries = []
    for halves in (("G1", "G2"), ("S1", "S2")):
        for infix in ("gallery", "gal"):
            found = [_child(meta_dir, f"{prefix}_1N_{infix}_{h}.csv") for h in halves]
            if all(found):
                galleries = found
                break
        if galleries:
            break
    if probe is None or not galleries:
        return (f"{meta_dir}: no 1:N files ({prefix}_1N_gallery_G1/G2.csv or _S1/S2.csv, "
                f"{prefix}_1N_probe_mixed.csv): identification skipped")
    gal = [_read_subject_csv(p) for p in galleries]
    probe_t, probe_s = _read_subject_csv(probe)
    return IdentificationLists(np.concatenate([g[0] for g in gal]), np.concatenate([g[1] for g in gal]),
                               probe_t, probe_s, [*galleries, probe])
