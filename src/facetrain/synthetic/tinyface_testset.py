"""A synthetic TinyFace test set in the exact layout `facetrain tinyface` (and AdaFace's tinyface_helper) reads.

Under `root`:
- `tinyface/Testing_Set/Gallery_Match/<id>_<n>.jpg` and `Probe/<id>_<n>.jpg`: low-resolution
  (18-36 px), non-aligned crops of held-out identities (n counts on from the gallery's images to
  the probe's, so every name is unique, as the helper's by-name matching needs);
  `Gallery_Distractor/<k>.jpg`: one crop each of further identities that have no probe;
- `tinyface/Testing_Set/gallery_match_img_ID_pairs.mat` (`gallery_set`, `gallery_ids`) and
  `probe_img_ID_pairs.mat` (`probe_set`, `probe_ids`): N x 1 cell arrays of names and ids;
- `aligned_pad_0.1_pad_high/<same folders>/<same names>`: each crop upsampled to its original
  size and aligned by its 5 points to 112x112 (AdaFace's aligned copy is MTCNN's on upsampled crops).
Identities come from their own random stream, so none of them appears in any other split.
"""
from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from facetrain.eval.tinyface_data import ALIGNED_DIR, DISTRACTOR, MAT_FILES, MATCH, PROBE, RELEASE_DIR
from facetrain.geometry.similarity import align_face
from facetrain.io_utils import write_bytes
from facetrain.synthetic.ijb_protocol import loose_crop_matrix
from facetrain.synthetic.profiles import Profile, sample_nuisance
from facetrain.synthetic.render import render_face
from facetrain.synthetic.splits import make_identity, stream_rng

# Surveillance-like quality on top of the low resolution: any pose, some blur, noise and compression.
TINYFACE_PROFILE = Profile(yaw=(0.0, 45.0), age=(0.0, 0.8), blur=1.5, noise=6.0, jpeg=(60, 95))
_PLAN, _IMAGE = 20, 21  # sub-streams of the "tinyface" split


@dataclass(frozen=True)
class TinyFaceImage:
    folder: str  # Probe, Gallery_Match or Gallery_Distractor
    name: str
    identity: int  # index in the "tinyface" stream; the file-name id is identity + 1 for probes and gallery


def plan_tinyface(seed: int, num_subjects: int, num_distractors: int) -> list[TinyFaceImage]:
    """Every subject: 1-3 gallery-match images and 1-2 probes; then one image per distractor identity."""
    if num_subjects < 1 or num_distractors < 0:
        raise ValueError(f"TinyFace: need >= 1 subject and >= 0 distractors, got {num_subjects} and {num_distractors}")
    rng = stream_rng(seed, "tinyface", _PLAN)
    images = []
    for subject in range(num_subjects):
        gallery, probes = int(rng.integers(1, 4)), int(rng.integers(1, 3))
        images += [TinyFaceImage(MATCH, f"{subject + 1}_{n + 1}.jpg", subject) for n in range(gallery)]
        images += [TinyFaceImage(PROBE, f"{subject + 1}_{gallery + n + 1}.jpg", subject) for n in range(probes)]
    images += [TinyFaceImage(DISTRACTOR, f"{k + 1}.jpg", num_subjects + k) for k in range(num_distractors)]
    return images


def render_tinyface_image(seed: int, index: int, identity: int) -> tuple[np.ndarray, np.ndarray]:
    """(low-resolution loose crop, its 112x112 aligned copy), BGR, of image `index` showing `identity`."""
    ident = make_identity(seed, "tinyface", identity)
    rng = stream_rng(seed, "tinyface", _IMAGE, index)
    crop, size = loose_crop_matrix(rng)
    face = render_face(ident, sample_nuisance(TINYFACE_PROFILE, rng), rng, size=size, crop=crop)
    height = int(rng.integers(18, 37))
    width = max(8, round(height * rng.uniform(0.75, 1.0)))
    low = cv2.resize(face.image, (width, height), interpolation=cv2.INTER_AREA)
    upsampled = cv2.resize(low, (size, size), interpolation=cv2.INTER_CUBIC)
    return low, align_face(upsampled, face.landmarks)


def _mat_bytes(names: list[str], ids: list[int], set_key: str, id_key: str) -> bytes:
    from scipy.io import savemat

    cells = np.empty((len(names), 1), dtype=object)
    cells[:, 0] = names
    buf = io.BytesIO()
    savemat(buf, {set_key: cells, id_key: np.asarray(ids, np.float64).reshape(-1, 1)})
    return buf.getvalue()


def write_tinyface(root: str | Path, images: list[TinyFaceImage], rendered: list[tuple[np.ndarray, np.ndarray]]) -> dict:
    """Write the crops, their aligned copies and the two .mat lists into `root` (a folder the caller
    commits atomically); returns a summary."""
    root = Path(root)
    for base in (root / RELEASE_DIR, root / ALIGNED_DIR):
        for folder in (PROBE, MATCH, DISTRACTOR):  # all three, even when one is empty
            (base / folder).mkdir(parents=True, exist_ok=True)
    for item, (low, aligned) in zip(images, rendered):
        write_bytes(root / RELEASE_DIR / item.folder / item.name, cv2.imencode(".jpg", low)[1].tobytes())
        write_bytes(root / ALIGNED_DIR / item.folder / item.name, cv2.imencode(".jpg", aligned)[1].tobytes())
    for folder, (mat, set_key, id_key) in MAT_FILES.items():
        chosen = [item for item in images if item.folder == folder]
        write_bytes(root / RELEASE_DIR / mat, _mat_bytes([i.name for i in chosen], [i.identity + 1 for i in chosen],
                                                         set_key, id_key))
    count = {folder: sum(item.folder == folder for item in images) for folder in (PROBE, MATCH, DISTRACTOR)}
    return {"probes": count[PROBE], "gallery_match": count[MATCH], "distractors": count[DISTRACTOR]}
