"""An IJB-like protocol of synthetic faces, in the exact file layout of insightface's / AdaFace's IJB code.

`<root>/<NAME>/loose_crop/<k>.jpg`: loose crops (150-250 px, face off-centre, scaled and rotated);
`<root>/<NAME>/meta/` (prefix = name in lower case, e.g. `ijbc_`):
- `<prefix>_name_5pts_score.txt`: `name x1 y1 ... x5 y5 faceness`, space separated, the 5 points
  (eyes, nose tip, mouth corners) in loose-crop pixels;
- `<prefix>_face_tid_mid.txt`: `name template_id media_id`, same line order as the landmarks;
- `<prefix>_template_pair_label.txt`: `t1 t2 label` (1 genuine, 0 impostor);
- 1:N: `<prefix>_1N_gallery_G1.csv`, `_G2.csv` (IJB-B: `_S1`, `_S2`) and `<prefix>_1N_probe_mixed.csv`,
  comma separated with the header `TEMPLATE_ID,SUBJECT_ID,FILENAME,SIGHTING_ID,FACE_X,FACE_Y,FACE_WIDTH,FACE_HEIGHT`,
  one row per image (SIGHTING_ID = media id, the face box from the landmarks).
Each subject has one gallery template (subjects alternate between the two galleries) and two probe
templates; a template holds 1-3 media of 1-3 images. Pairs: every two templates of a subject, and
`impostor_ratio` times as many random pairs of different subjects.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from facetrain.io_utils import atomic_write_bytes
from facetrain.synthetic.profiles import PROFILES, sample_nuisance
from facetrain.synthetic.render import render_face
from facetrain.synthetic.splits import make_identity, stream_rng

CSV_HEADER = "TEMPLATE_ID,SUBJECT_ID,FILENAME,SIGHTING_ID,FACE_X,FACE_Y,FACE_WIDTH,FACE_HEIGHT"
_PLAN, _IMAGE, _CROP = 10, 11, 12  # sub-streams of the "ijb" split


@dataclass(frozen=True)
class IJBImage:
    name: str
    subject: int  # 1-based subject id; identity index = subject - 1
    template: int
    media: int


@dataclass
class IJBPlan:
    images: list[IJBImage]
    gallery: tuple[list[int], list[int]]  # template ids of the two galleries
    probes: list[int]
    pairs: np.ndarray  # (P, 3) int: t1, t2, label


def plan_protocol(seed: int, num_subjects: int, impostor_ratio: int = 10) -> IJBPlan:
    """Templates, media and images of every subject, the galleries, probes and template pairs."""
    if num_subjects < 2:
        raise ValueError(f"IJB protocol: need at least 2 subjects, got {num_subjects}")
    rng = stream_rng(seed, "ijb", _PLAN)
    images: list[IJBImage] = []
    gallery: tuple[list[int], list[int]] = ([], [])
    probes: list[int] = []
    subject_templates: list[list[int]] = []
    template = media = 0
    for subject in range(1, num_subjects + 1):
        mine = []
        for role in ("gallery", "probe", "probe"):
            template += 1
            mine.append(template)
            (gallery[subject % 2] if role == "gallery" else probes).append(template)
            for _ in range(int(rng.integers(1, 4))):
                media += 1
                for _ in range(int(rng.integers(1, 4))):
                    images.append(IJBImage(f"{len(images) + 1}.jpg", subject, template, media))
        subject_templates.append(mine)
    genuine = [(a, b, 1) for ts in subject_templates for i, a in enumerate(ts) for b in ts[i + 1:]]
    all_templates = np.arange(1, template + 1)
    owner = np.repeat(np.arange(num_subjects), 3)
    impostors: list[tuple[int, int, int]] = []
    while len(impostors) < impostor_ratio * len(genuine):
        a, b = rng.choice(all_templates, 2, replace=False)
        if owner[a - 1] != owner[b - 1]:
            impostors.append((int(a), int(b), 0))
    pairs = np.array(genuine + impostors, dtype=np.int64)
    return IJBPlan(images, gallery, probes, pairs[rng.permutation(len(pairs))])


def loose_crop_matrix(rng: np.random.Generator) -> tuple[np.ndarray, int]:
    """A random similarity from the aligned 112 frame into a larger canvas, and the canvas size."""
    size = int(rng.integers(150, 251))
    scale = rng.uniform(0.55, 0.85) * size / 112.0
    angle = math.radians(rng.uniform(-20, 20))
    centre = size / 2 + rng.uniform(-0.12, 0.12, 2) * size
    rot = scale * np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
    return np.hstack([rot, (centre - rot @ np.array([56.0, 56.0]))[:, None]]), size


def render_ijb_image(seed: int, index: int, subject: int) -> tuple[np.ndarray, np.ndarray]:
    """Loose crop (BGR) of image `index` (0-based) showing `subject` (1-based), and its 5 landmarks."""
    ident = make_identity(seed, "ijb", subject - 1)
    rng = stream_rng(seed, "ijb", _IMAGE, index)
    crop, size = loose_crop_matrix(rng)
    face = render_face(ident, sample_nuisance(PROFILES["ijb"], rng), rng, size=size, crop=crop)
    return face.image, face.landmarks


def _lines(rows) -> bytes:
    return "".join(line + "\n" for line in rows).encode()


def write_ijb_protocol(root: str | Path, plan: IJBPlan, images: list[np.ndarray], landmarks: list[np.ndarray],
                       seed: int, name: str = "IJBC") -> Path:
    """Write crops and meta files under `<root>/<name>/`; returns that folder. Meta files are written last."""
    base = Path(root) / name
    prefix = name.lower()
    crops = base / "loose_crop"
    crops.mkdir(parents=True, exist_ok=True)
    for img, item in zip(images, plan.images):
        ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 95])
        atomic_write_bytes(crops / item.name, buf.tobytes())
    faceness = stream_rng(seed, "ijb", _CROP).uniform(0.9, 1.0, len(plan.images))
    lmk_rows, tid_rows, csv_rows = [], [], {}
    for item, pts, score in zip(plan.images, landmarks, faceness):
        lmk_rows.append(" ".join([item.name, *(f"{v:.3f}" for v in np.asarray(pts).reshape(-1)), f"{score:.6f}"]))
        tid_rows.append(f"{item.name} {item.template} {item.media}")
        (x0, y0), (x1, y1) = pts.min(0), pts.max(0)
        pad = 0.6 * max(x1 - x0, y1 - y0)
        box = (int(x0 - pad), int(y0 - pad), int(x1 - x0 + 2 * pad), int(y1 - y0 + 2 * pad))
        csv_rows.setdefault(item.template, []).append(
            f"{item.template},{item.subject},loose_crop/{item.name},{item.media},{box[0]},{box[1]},{box[2]},{box[3]}")
    meta = base / "meta"
    galleries = ("G1", "G2") if prefix != "ijbb" else ("S1", "S2")
    for label, templates in zip(galleries, plan.gallery):
        rows = [CSV_HEADER] + [row for t in templates for row in csv_rows[t]]
        atomic_write_bytes(meta / f"{prefix}_1N_gallery_{label}.csv", _lines(rows))
    probe_rows = [CSV_HEADER] + [row for t in plan.probes for row in csv_rows[t]]
    atomic_write_bytes(meta / f"{prefix}_1N_probe_mixed.csv", _lines(probe_rows))
    atomic_write_bytes(meta / f"{prefix}_template_pair_label.txt", _lines(f"{a} {b} {c}" for a, b, c in plan.pairs))
    atomic_write_bytes(meta / f"{prefix}_face_tid_mid.txt", _lines(tid_rows))
    atomic_write_bytes(meta / f"{prefix}_name_5pts_score.txt", _lines(lmk_rows))
    return base
