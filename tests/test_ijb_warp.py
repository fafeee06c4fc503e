"""IJB 1:1 end to end where the alignment decides the answer: textured identities placed in loose
crops by random similarity transforms, noisy, and a model that compares pixels of the aligned face.

The expected numbers come from a straightforward pipeline written here: skimage's
SimilarityTransform onto the ArcFace template (typed in from insightface), cv2.warpAffine, the
model on image and flip, the un-normalised sum, insightface's template pooling loop, cosine scores,
sklearn's ROC and the nearest-FPR TAR rule. The same pipeline with landmarks 8 px off gives other
numbers, so the comparison can tell a wrong warp.
"""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from skimage.transform import SimilarityTransform
from sklearn.metrics import roc_auc_score, roc_curve

from facetrain.eval.ijb import run_ijb

ARCFACE_112 = np.array([[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366],
                        [41.5493, 92.3655], [70.7299, 92.2041]])
FARS = (1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1)
IDS, TEMPLATES, IMAGES = 6, 3, 2


class PixelNet(torch.nn.Module):
    """Embedding = the face's central 80x80 region pooled to 10x10 per channel, mean removed; the
    norm (its contrast) varies per image, so the fusion's norm weighting is exercised too.
    Measured on this protocol: AUC 0.98 aligned correctly, 0.53 with landmarks 8 px off."""

    def forward(self, x):
        pooled = torch.nn.functional.avg_pool2d(x[:, :, 16:96, 16:96], 8).flatten(1)
        centred = pooled - pooled.mean(1, keepdim=True)
        norm = centred.norm(dim=1, keepdim=True)
        return centred / norm, norm


def _texture(rng) -> np.ndarray:
    """4-px detail: a few pixels of misalignment decorrelate it."""
    return cv2.resize(rng.integers(0, 256, (28, 28, 3), dtype=np.uint8), (112, 112), interpolation=cv2.INTER_CUBIC)


def _loose_crop(face: np.ndarray, rng) -> tuple[np.ndarray, np.ndarray]:
    size = int(rng.integers(150, 200))
    scale = rng.uniform(0.9, 1.3)
    angle = np.radians(rng.uniform(-30, 30))
    rot = scale * np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    shift = np.array([size / 2, size / 2]) + rng.uniform(-15, 15, 2) - rot @ np.array([56.0, 56.0])
    matrix = np.hstack([rot, shift[:, None]])
    crop = cv2.warpAffine(face, matrix, (size, size), borderValue=(90, 90, 90))
    noisy = np.clip(crop + rng.normal(0, 60, crop.shape), 0, 255).astype(np.uint8)
    return noisy, ARCFACE_112 @ rot.T + shift


def _write_protocol(root: Path) -> dict:
    rng = np.random.default_rng(21)
    meta, crops = root / "IJBC" / "meta", root / "IJBC" / "loose_crop"
    meta.mkdir(parents=True)
    crops.mkdir(parents=True)
    common = _texture(rng)  # look-alikes: 90% shared texture, 10% their own
    faces = [(0.9 * common + 0.1 * _texture(rng)).astype(np.uint8) for _ in range(IDS)]
    names, landmarks, templates, medias, subject = [], [], [], [], {}
    for ident in range(IDS):
        for k in range(TEMPLATES):
            tid = 10 * ident + k + 1
            subject[tid] = ident
            for j in range(IMAGES):
                crop, pts = _loose_crop(faces[ident], rng)
                name = f"{len(names) + 1}.jpg"
                cv2.imwrite(str(crops / name), crop, [cv2.IMWRITE_JPEG_QUALITY, 95])
                names.append(name)
                landmarks.append(pts)
                templates.append(tid)
                medias.append(100 * tid + j % 2 * (k % 2))  # some templates hold two media
    (meta / "ijbc_name_5pts_score.txt").write_text("".join(
        " ".join([n, *(f"{v:.3f}" for v in p.reshape(-1)), "0.9"]) + "\n" for n, p in zip(names, landmarks)))
    (meta / "ijbc_face_tid_mid.txt").write_text("".join(f"{n} {t} {m}\n" for n, t, m in zip(names, templates, medias)))
    tids = sorted(subject)
    pairs = [(a, b, int(subject[a] == subject[b])) for i, a in enumerate(tids) for b in tids[i + 1:]]
    (meta / "ijbc_template_pair_label.txt").write_text("".join(f"{a} {b} {c}\n" for a, b, c in pairs))
    landmarks_read = np.array([[float(v) for v in line.split()[1:11]]
                               for line in (meta / "ijbc_name_5pts_score.txt").read_text().splitlines()])
    return {"paths": [crops / n for n in names], "landmarks": landmarks_read.reshape(-1, 5, 2),
            "templates": np.array(templates), "medias": np.array(medias), "pairs": np.array(pairs)}


def _similarity(points: np.ndarray) -> np.ndarray:
    """skimage's least-squares similarity onto the template (what insightface's norm_crop uses), 2x3."""
    if hasattr(SimilarityTransform, "from_estimate"):  # scikit-image >= 0.26
        return SimilarityTransform.from_estimate(points, ARCFACE_112).params[:2]
    tform = SimilarityTransform()
    tform.estimate(points, ARCFACE_112)
    return tform.params[:2]


def _reference(model, info: dict, landmark_offset=(0.0, 0.0)) -> dict:
    feats = []
    for path, pts in zip(info["paths"], info["landmarks"]):
        face = cv2.warpAffine(cv2.imread(str(path)), _similarity(pts + np.asarray(landmark_offset)), (112, 112),
                              borderValue=0.0)
        batch = np.stack([face, face[:, ::-1]]).astype(np.float32)
        x = torch.from_numpy((batch / 255 - 0.5) / 0.5).permute(0, 3, 1, 2)
        with torch.no_grad():
            emb, norm = model(x)
        feats.append((emb * norm).sum(0).numpy())  # image + flip, un-normalised, norm kept (N1)
    feats = np.array(feats, dtype=np.float64)
    template_feats = {}
    for t in np.unique(info["templates"]):  # insightface's image2template_feature
        idx = info["templates"] == t
        media_means = [feats[idx][info["medias"][idx] == m].mean(0) for m in np.unique(info["medias"][idx])]
        total = np.sum(media_means, axis=0)
        template_feats[t] = total / np.linalg.norm(total)
    scores = np.array([template_feats[a] @ template_feats[b] for a, b, _ in info["pairs"]])
    labels = info["pairs"][:, 2]
    fpr, tpr, _ = roc_curve(labels, scores)
    fpr, tpr = np.flipud(fpr), np.flipud(tpr)
    tar = {far: float(tpr[min(zip(abs(fpr - far), range(len(fpr))))[1]]) for far in FARS}
    return {"tar": tar, "auc": float(roc_auc_score(labels, scores))}


@pytest.fixture(scope="module")
def protocol(tmp_path_factory):
    root = tmp_path_factory.mktemp("ijb_warp")
    return root, _write_protocol(root)


def test_ijb_end_to_end_equals_the_straightforward_pipeline(protocol, tmp_path):
    root, info = protocol
    model = PixelNet()
    got = run_ijb(model, root, "IJBC", tmp_path / "out", "pixel-net", batch_size=5, workers=1, progress=False)
    expected = _reference(model, info)
    misaligned = _reference(model, info, landmark_offset=(8.0, 0.0))
    assert got["mode"] == "pre_norm_vector_add-F1N1D0"
    assert {float(k): v for k, v in got["tar_at_far"].items()} == pytest.approx(expected["tar"], abs=1e-9)
    assert got["auc"] == pytest.approx(expected["auc"], abs=1e-6)
    # a real, imperfect task on which the warp matters
    assert 0.2 < expected["tar"][1e-2] < 1.0 and 0.8 < expected["auc"] < 1.0
    assert expected["auc"] - misaligned["auc"] > 0.02
    assert sum(abs(expected["tar"][f] - misaligned["tar"][f]) for f in FARS) > 0.1
