"""The TinyFace test protocol as AdaFace's `validation_lq/tinyface_helper.py` reads it from a data root R.

- `R/tinyface/Testing_Set/` (the QMUL release): `Probe/`, `Gallery_Match/`, `Gallery_Distractor/`
  (low-resolution, non-aligned crops), `probe_img_ID_pairs.mat` (`probe_set`, `probe_ids`) and
  `gallery_match_img_ID_pairs.mat` (`gallery_set`, `gallery_ids`);
- `R/aligned_pad_0.1_pad_high/` (AdaFace's aligned copy: 112x112 crops, same sub-folders, same
  file names, possibly another extension) holds the images that are embedded.
The helper takes the probe and gallery-match images from the release's folders and their labels
from the file names (`<id>_<n>.jpg` -> id); distractors get label -100; each release image is
embedded from the aligned image with the same name stem. The `.mat` lists are the release's own
inventory: we check the folders against them (with scipy, the `tinyface` extra; without it only
their presence), so an incomplete download is an error, not a silently different benchmark.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from facetrain.errors import DataError

RELEASE_DIR = Path("tinyface") / "Testing_Set"
ALIGNED_DIR = "aligned_pad_0.1_pad_high"  # AdaFace's aligned release
PROBE, MATCH, DISTRACTOR = "Probe", "Gallery_Match", "Gallery_Distractor"
MAT_FILES = {PROBE: ("probe_img_ID_pairs.mat", "probe_set", "probe_ids"),
             MATCH: ("gallery_match_img_ID_pairs.mat", "gallery_set", "gallery_ids")}
IMAGE_EXTENSIONS = (".jpg", ".png", ".jpeg")  # tinyface_helper.get_all_files
DISTRACTOR_LABEL = -100


@dataclass
class TinyFaceProtocol:
    root: Path
    aligned_dir: Path
    image_paths: list[Path]  # aligned images to embed: probes, then gallery matches, then distractors
    probe_labels: np.ndarray  # (P,) int64; probe i is image i
    match_labels: np.ndarray  # (M,) int64; gallery match j is image P + j
    num_distractors: int  # distractor k is image P + M + k
    mat_lists_checked: bool  # False when scipy is missing: folders not checked against the .mat lists

    @property
    def probe_rows(self) -> slice:
        return slice(0, len(self.probe_labels))

    @property
    def gallery_rows(self) -> slice:
        return slice(len(self.probe_labels), len(self.image_paths))

    @property
    def gallery_labels(self) -> np.ndarray:
        return np.concatenate([self.match_labels, np.full(self.num_distractors, DISTRACTOR_LABEL, np.int64)])


def _images(folder: Path) -> dict[str, Path]:
    """Image files under `folder` (recursively) by name stem; DataError on two files with one stem."""
    found: dict[str, Path] = {}
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames.sort()
        for name in sorted(filenames):
            path = Path(dirpath) / name
            if path.suffix.lower() not in IMAGE_EXTENSIONS:
                continue
            if path.stem in found:
                raise DataError(f"{folder}: two images named {path.stem} ({found[path.stem].name}, {path.relative_to(folder)}); "
                                "TinyFace matches images by name")
            found[path.stem] = path
    return found


def label_from_name(path: Path) -> int:
    """tinyface_helper.get_label: the identity is the file name up to the first '_'."""
    head = path.name.split("_")[0]
    if not head.isdigit():
        raise DataError(f"{path}: TinyFace file names start with the identity number (<id>_<n>.jpg)")
    return int(head)


def _check_against_mat(release: Path, subset: str, images: dict[str, Path]) -> bool:
    """Every image the release's .mat list names must be in the folder, with the label its name gives.
    False (nothing checked) when scipy is not installed."""
    try:
        from scipy.io import loadmat
    except ImportError:
        return False
    mat_name, set_key, id_key = MAT_FILES[subset]
    mat_path = release / mat_name
    try:
        mat = loadmat(mat_path)
        names = [str(np.asarray(entry).reshape(-1)[0]) for entry in mat[set_key].reshape(-1)]
        ids = np.asarray(mat[id_key]).reshape(-1).astype(np.int64)
    except (OSError, ValueError, KeyError, IndexError, NotImplementedError) as exc:
        raise DataError(f"{mat_path}: not a TinyFace list with '{set_key}' and '{id_key}' ({exc})") from None
    if len(names) != len(ids):
        raise DataError(f"{mat_path}: {len(names)} names in '{set_key}' but {len(ids)} ids in '{id_key}'")
    missing = [n for n in names if Path(n).stem not in images]
    if missing:
        raise DataError(f"incomplete TinyFace release: {len(missing)} of the {len(names)} images listed in {mat_name} are "
                        f"missing from {release / subset} (first: {missing[0]})")
    wrong = [(n, i) for n, i in zip(names, ids) if label_from_name(images[Path(n).stem]) != i]
    if wrong:
        raise DataError(f"{mat_path}: {len(wrong)} images whose listed id differs from their file name "
                        f"(first: {wrong[0][0]} listed as {wrong[0][1]})")
    return True


def _aligned_counterparts(aligned: Path, subset: str, images: dict[str, Path]) -> list[Path]:
    folder = aligned / subset
    if not folder.is_dir():
        raise DataError(f"incomplete aligned TinyFace: {folder} not found")
    available = _images(folder)
    missing = [stem for stem in images if stem not in available]
    if missing:
        raise DataError(f"incomplete aligned TinyFace: {len(missing)} of the {len(images)} images of "
                        f"{RELEASE_DIR / subset} have no aligned image in {folder} (first: {images[missing[0]].name})")
    return [available[stem] for stem in images]


def load_tinyface(data_root: str | os.PathLike, aligned_dir: str | os.PathLike = ALIGNED_DIR) -> TinyFaceProtocol:
    """Read and check the protocol; `aligned_dir` is relative to `data_root` unless absolute."""
    root = Path(data_root)
    release = root / RELEASE_DIR
    aligned = root / aligned_dir
    expected = [release / PROBE, release / MATCH, release / DISTRACTOR, *(release / MAT_FILES[s][0] for s in MAT_FILES)]
    expected = (expected if release.is_dir() else [release]) + [aligned]
    missing = [str(p.relative_to(root)) if p.is_relative_to(root) else str(p) for p in expected if not p.exists()]
    if missing:
        raise DataError(f"incomplete TinyFace under {root}: missing {', '.join(missing)} (the QMUL release unpacked "
                        f"as {RELEASE_DIR}/ and AdaFace's aligned copy as {ALIGNED_DIR}/)")
    subsets = {subset: _images(release / subset) for subset in (PROBE, MATCH, DISTRACTOR)}
    checked = []
    for subset in (PROBE, MATCH):
        if not subsets[subset]:
            raise DataError(f"incomplete TinyFace release: no images in {release / subset}")
        checked.append(_check_against_mat(release, subset, subsets[subset]))
    paths = [p for subset in (PROBE, MATCH, DISTRACTOR) for p in _aligned_counterparts(aligned, subset, subsets[subset])]
    return TinyFaceProtocol(
        root=root, aligned_dir=aligned, image_paths=paths,
        probe_labels=np.array([label_from_name(p) for p in subsets[PROBE].values()], np.int64),
        match_labels=np.array([label_from_name(p) for p in subsets[MATCH].values()], np.int64),
        num_distractors=len(subsets[DISTRACTOR]), mat_lists_checked=all(checked),
    )
