"""IJB-B/C: ROC and TAR rule against sklearn, pooling/scoring/1:N against straightforward loops,
an end-to-end run on a tiny IJB-like protocol with a perfect model, and bad protocol files."""
from __future__ import annotations

import heapq
import io
import itertools
import math
import re
import sys
import warnings
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from sklearn.metrics import roc_curve as sk_roc_curve

from facetrain.errors import DataError
from facetrain.eval.ijb import IJBMode, run_ijb
from facetrain.eval.ijb_data import load_protocol
from facetrain.eval.ijb_identify import identification_metrics
from facetrain.eval.ijb_verify import (mode_features, mode_name, score_pairs, template_features, template_rows,
                                       verification_metrics)
from facetrain.eval.roc import FAR_TARGETS, auc, roc_curve, tar_at_far
from facetrain.geometry.similarity import TEMPLATE_112

PALETTE = np.array([[255, 0, 0], [0, 255, 0], [0, 0, 255], [255, 255, 0], [0, 255, 255], [255, 0, 255]], np.uint8)


def _insightface_tar(labels, scores):
    """ijb_11.py: sklearn ROC, flipped, first minimum of |fpr - target|."""
    fpr, tpr, _ = sk_roc_curve(labels, scores)
    fpr, tpr = np.flipud(fpr), np.flipud(tpr)
    return {x: tpr[min(zip(abs(fpr - x), range(len(fpr))))[1]] for x in FAR_TARGETS}


def test_roc_and_tar_match_sklearn_with_ties():
    rng = np.random.default_rng(0)
    labels = (rng.random(20000) < 0.05).astype(int)
    scores = np.round(rng.standard_normal(20000) + 2.5 * labels, 2)  # rounding creates many ties
    fpr, tpr, thr = roc_curve(labels, scores)
    sk_fpr, sk_tpr, sk_thr = sk_roc_curve(labels, scores)
    assert np.array_equal(fpr, sk_fpr) and np.array_equal(tpr, sk_tpr) and np.array_equal(thr[1:], sk_thr[1:])
    assert tar_at_far(fpr, tpr) == _insightface_tar(labels, scores)


def test_roc_flattens_its_inputs_keeps_every_point_on_request_and_checks_lengths():
    rng = np.random.default_rng(3)
    labels = (rng.random(300) < 0.3).astype(int)
    scores = np.round(rng.standard_normal(300) + labels, 1)
    flat = roc_curve(labels, scores)
    for got, want in zip(roc_curve(labels[None, :], scores[:, None]), flat):  # a row and a column
        assert np.array_equal(got, want)
    fpr, tpr, thr = roc_curve(labels, scores, drop_intermediate=False)
    sk_fpr, sk_tpr, sk_thr = sk_roc_curve(labels, scores, drop_intermediate=False)
    assert np.array_equal(fpr, sk_fpr) and np.array_equal(tpr, sk_tpr) and np.array_equal(thr[1:], sk_thr[1:])
    assert len(fpr) > len(flat[0])
    with pytest.raises(ValueError, match="3 labels for 4 scores"):
        roc_curve([0, 1, 1], [0.1, 0.2, 0.3, 0.4])


def test_roc_of_every_small_set_matches_sklearn_without_warnings():
    """All label patterns of 1..5 pairs with tied scores: sets without impostors (or without genuine
    pairs) give NaN rates as sklearn does, silently; 3 points whose middle one is collinear are merged."""
    rng = np.random.default_rng(4)
    for n in range(1, 6):
        for labels in itertools.product([0, 1], repeat=n):
            scores = rng.integers(0, 3, n) / 2.0
            with warnings.catch_warnings():
                warnings.simplefilter("error")
                got = roc_curve(np.array(labels), scores)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                want = sk_roc_curve(labels, scores)
            np.testing.assert_array_equal(got[0], want[0])
            np.testing.assert_array_equal(got[1], want[1])
            np.testing.assert_array_equal(got[2][1:], want[2][1:])


def test_auc_is_the_trapezoid_area_under_tpr_over_fpr():
    # hand-computed: 0.5 * (0 + 0.8) / 2 + 0.5 * (0.8 + 1) / 2 = 0.2 + 0.45
    assert auc(np.array([0.0, 0.5, 1.0]), np.array([0.0, 0.8, 1.0])) == pytest.approx(0.65)
    assert auc(np.array([0.0, 0.1, 1.0]), np.array([0.6, 0.6, 1.0])) == pytest.approx(0.06 + 0.72)


def _pool_loop(img_feats, templates, medias):
    """insightface's image2template_feature, literally."""
    unique = np.unique(templates)
    out = np.zeros((len(unique), img_feats.shape[1]))
    for c, t in enumerate(unique):
        (ind,) = np.where(templates == t)
        feats, meds = img_feats[ind], medias[ind]
        media_feats = [np.mean(feats[meds == m], axis=0) for m in np.unique(meds)]
        out[c] = np.sum(media_feats, axis=0)
    return out / np.linalg.norm(out, axis=1, keepdims=True), unique


def test_pooling_and_blocked_scoring_match_loops():
    rng = np.random.default_rng(1)
    n = 500
    templates = rng.integers(0, 60, n) * 7 + 3  # sparse, unsorted ids
    medias = rng.integers(0, 4, n)
    img = rng.standard_normal((n, 16)).astype(np.float32)
    feats, unique = template_features(img, templates, medias, chunk_images=50)
    ref, ref_unique = _pool_loop(img, templates, medias)
    # we pool in float64, insightface in float32: equal to float32 precision
    assert np.array_equal(unique, ref_unique) and np.allclose(feats, ref, atol=1e-6)
    r1, r2 = rng.integers(0, len(unique), 3000), rng.integers(0, len(unique), 3000)
    scores = score_pairs(feats, r1, r2, block=8, progress=False)
    assert np.allclose(scores, np.sum(feats[r1] * feats[r2], -1), atol=1e-12)


def test_modes_match_adaface_and_insightface_formulas():
    rng = np.random.default_rng(2)
    a, b, face = rng.standard_normal((6, 4)), rng.standard_normal((6, 4)), rng.random(6)
    assert np.allclose(mode_features(a, b, face), a + b, atol=1e-5)  # AdaFace default
    unit = (a + b) / np.linalg.norm(a + b, axis=1, keepdims=True)
    assert np.allclose(mode_features(a, b, face, use_norm_score=False, use_detector_score=True), unit * face[:, None], atol=1e-5)
    assert np.allclose(mode_features(a, None, face, use_flip_test=False), a, atol=1e-5)
    avg = mode_features(a, b, face, "average")  # unit vector, norm not kept
    assert np.allclose(np.linalg.norm(avg, axis=1), 1, atol=1e-5)


def test_mode_names_spell_fusion_flip_norm_and_detector_score():
    assert mode_name("pre_norm_vector_add", True, None, False) == "pre_norm_vector_add-F1N1D0"  # AdaFace: norm kept
    assert mode_name("average", True, None, True) == "average-F1N0D1"  # ... only for pre_norm_vector_add
    assert mode_name("concat", False, True, False) == "concat-F0N1D0"
    assert mode_name("pre_norm_vector_add", True, False, False) == "pre_norm_vector_add-F1N0D0"


def test_template_rows_and_unknown_templates():
    unique = np.array([3, 10, 24])
    assert template_rows(unique, np.array([24, 3, 3, 10])).tolist() == [2, 0, 0, 1]
    with pytest.raises(DataError, match=r"^pairs: entry 2 refers to template 11, which has no images$"):
        template_rows(unique, np.array([10, 11]))
    with pytest.raises(DataError, match=r"^ijbc_1N_probe_mixed.csv: entry 1 refers to template 25"):
        template_rows(unique, np.array([25, 3]), "ijbc_1N_probe_mixed.csv")


def test_verification_metrics_by_hand():
    """Genuine scores 0.9, 0.4; impostors 0.6, 0.1. ROC points (fpr, tpr): (0,0) (0,.5) (.5,.5) (.5,1)
    (1,1); AUC = 3 of 4 genuine/impostor pairs ranked right; TAR at the nearest FPR, the last such point."""
    got = verification_metrics(np.array([0.9, 0.4, 0.6, 0.1]), np.array([1, 1, 0, 0]), far_targets=(0.5, 1e-6))
    assert got["tar_at_far"] == {0.5: 1.0, 1e-6: 0.5}
    assert got["auc"] == pytest.approx(0.75)
    assert got["fpr"].tolist() == [0, 0, 0.5, 0.5, 1] and got["tpr"].tolist() == [0, 0.5, 0.5, 1, 1]
    assert (got["pairs"], got["genuine"]) == (4, 2)
    assert verification_metrics(np.array([0.9, 0.4, 0.6, 0.1]), np.array([1, 0, 1, 1]))["genuine"] == 3
    assert set(verification_metrics(np.array([0.9, 0.1]), np.array([1, 0]))["tar_at_far"]) == {
        1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1}  # the literature's FAR targets by default


def test_mode_features_fuse_with_the_method_asked_for_in_float32():
    a = np.array([[3.0, 4.0], [1.0, 0.0]])
    b = np.array([[0.0, 2.0], [0.0, -1.0]])
    face = np.ones(2)
    # average: unit features added, then unit length (norm not kept): (0.6, 0.8) + (0, 1) -> (0.6, 1.8)
    got = mode_features(a, b, face, "average")
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, [[0.6 / np.hypot(0.6, 1.8), 1.8 / np.hypot(0.6, 1.8)],
                                     [1 / np.sqrt(2), -1 / np.sqrt(2)]], atol=1e-6)
    assert mode_features(a, b, face).dtype == np.float32
    with pytest.raises(ValueError, match="^flip test requested but no flip features were extracted$"):
        mode_features(a, None, face)


def test_template_features_of_small_and_of_cancelling_images():
    """Templates are unit length whatever the features' scale; a template whose media cancel out stays
    zero (no NaN)."""
    img = np.array([[0.01, 0.0], [0.0, 0.02], [0.5, 0.5], [-0.5, -0.5]], np.float32)
    feats, unique = template_features(img, np.array([7, 7, 9, 9]), np.array([0, 1, 0, 1]))
    assert unique.tolist() == [7, 9]
    np.testing.assert_allclose(feats[0], [0.01, 0.02] / np.hypot(0.01, 0.02), rtol=1e-6)
    assert feats[1].tolist() == [0.0, 0.0]


def test_scoring_skips_blocks_without_pairs():
    """Pairs whose smaller row lies in rows 0-7 and 24-31 only: blocks of 8 rows in between are empty."""
    rng = np.random.default_rng(6)
    feats = rng.standard_normal((40, 6))
    feats /= np.linalg.norm(feats, axis=1, keepdims=True)
    r1 = np.concatenate([rng.integers(0, 8, 30), rng.integers(24, 32, 30)])
    r2 = r1 + rng.integers(0, 8, 60)
    scores = score_pairs(feats, r1, r2, block=8, progress=False)
    np.testing.assert_allclose(scores, np.sum(feats[r1] * feats[r2], -1), atol=1e-12)


class _Terminal(io.StringIO):
    """stderr as a terminal: tqdm's `disable=None` shows bars only there."""

    def isatty(self):
        return True


def test_scoring_progress_is_shown_by_default_and_then_cleared(monkeypatch):
    feats, rows = np.eye(5), np.arange(4)
    terminal = _Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    score_pairs(feats, rows, rows + 1, block=2, progress=False)
    assert terminal.getvalue() == ""
    score_pairs(feats, rows, rows + 1, block=2)
    shown = terminal.getvalue()
    assert shown.startswith("\rscoring:   0%|") and "| 0/3 [" in shown
    assert re.search(r"\r {20,}\r$", shown)  # leave=False: the bar is wiped, no line is left


def _identification_loop(query, gallery, mask):
    """ijb_1n.py's evaluation, literally."""
    sim = query @ gallery.T
    top = np.argsort(-sim)
    res = {f"top{k}": np.mean([mask[i] in top[i, :k] for i in range(len(query))]) for k in (1, 5, 10)}
    pos = np.array([sim[i, mask[i]] for i in range(len(query))])
    for i in range(len(query)):
        sim[i, mask[i]] = -2.0
    neg = heapq.nlargest(math.ceil(len(query) * 0.1), sim[sim > -2.0])
    for far in (0.01, 0.1):
        res[f"tpir@fpir={far:g}"] = np.sum(pos > neg[math.ceil(len(query) * far) - 1]) / len(query)
    return res


def test_identification_matches_insightface_loop():
    rng = np.random.default_rng(3)
    gallery = rng.standard_normal((40, 8))
    mask = rng.integers(0, 40, 300)
    query = gallery[mask] + 1.2 * rng.standard_normal((300, 8))
    gallery /= np.linalg.norm(gallery, axis=1, keepdims=True)
    query /= np.linalg.norm(query, axis=1, keepdims=True)
    got = identification_metrics(query, gallery, mask, chunk=64)
    ref = _identification_loop(query, gallery, mask)
    assert got == pytest.approx(ref, abs=1e-12)
    assert 0.2 < got["top1"] < 1.0


# ---- tiny IJB-like protocol on disk ----------------------------------------------------------

def write_protocol(root: Path, layout: str = "adaface", n_ids: int = 6, templates_per_id: int = 3) -> dict:
    """Loose crops filled with an identity colour, landmarks = template shifted by (20, 30)."""
    meta = root / "IJBC" / "meta" if layout == "adaface" else root / "meta" / "IJBC_meta"
    crops = root / "IJBC" / "loose_crop" if layout == "adaface" else root / "ijb" / "IJBC" / "loose_crop"
    meta.mkdir(parents=True)
    lmk_lines, tid_lines, tid_subject = [], [], {}
    image, media = 1, 1
    for ident in range(n_ids):
        for k in range(templates_per_id):
            tid = ident * 10 + k + 1
            tid_subject[tid] = ident
            for j in range(2):
                name = f"{image}.jpg"
                crop = np.zeros((160, 150, 3), np.uint8)
                crop[:] = PALETTE[ident]
                folder = crops / name[:2] if layout == "seed" else crops
                folder.mkdir(parents=True, exist_ok=True)
                cv2.imwrite(str(folder / name), crop)
                pts = (TEMPLATE_112 + [20, 30]).reshape(-1)
                lmk_lines.append(" ".join([name, *[f"{v:.3f}" for v in pts], "0.9"]))
                tid_lines.append(f"{name} {tid} {media + j % 2 * (k % 2)}")
                image += 1
            media += 2
    tids = sorted(tid_subject)
    pairs = [f"{a} {b} {int(tid_subject[a] == tid_subject[b])}" for i, a in enumerate(tids) for b in tids[i + 1 :]]
    (meta / "ijbc_name_5pts_score.txt").write_text("\n".join(lmk_lines) + "\n")
    (meta / "ijbc_face_tid_mid.txt").write_text("\n".join(tid_lines) + "\n")
    (meta / "ijbc_template_pair_label.txt").write_text("\n".join(pairs) + "\n")
    return {"meta": meta, "tids": tids, "subject": tid_subject}


def write_identification(meta: Path, info: dict) -> None:
    first = [t for t in info["tids"] if t % 10 == 1]
    rest = [t for t in info["tids"] if t % 10 != 1]
    half = len(first) // 2
    for fname, ts in (("ijbc_1N_gallery_G1.csv", first[:half]), ("ijbc_1N_gallery_G2.csv", first[half:]),
                      ("ijbc_1N_probe_mixed.csv", rest)):
        rows = ["TEMPLATE_ID,SUBJECT_ID,FILENAME"] + [f"{t},{info['subject'][t]},x.jpg" for t in ts for _ in range(2)]
        (meta / fname).write_text("\n".join(rows) + "\n")


class ColourIdentityNet(torch.nn.Module):
    """Perfect model for the fixture: one-hot of the nearest palette colour at the face centre."""

    def __init__(self):
        super().__init__()
        self.palette = torch.nn.Parameter(torch.from_numpy(PALETTE.astype(np.float32) / 127.5 - 1), requires_grad=False)

    def forward(self, x):
        centre = x[:, :, 40:70, 40:70].mean((2, 3))
        ident = torch.cdist(centre, self.palette).argmin(1)
        emb = torch.nn.functional.one_hot(ident, len(PALETTE)).float()
        return emb, torch.full((len(x), 1), 5.0)


@pytest.mark.parametrize("layout", ["adaface", "seed"])
def test_end_to_end_perfect_model(tmp_path, layout):
    info = write_protocol(tmp_path / "data", layout)
    write_identification(info["meta"], info)
    out = tmp_path / "out"
    result = run_ijb(ColourIdentityNet(), tmp_path / "data", "ijbc", out, "colour-net", batch_size=8, progress=False)
    assert all(v == 1.0 for v in result["tar_at_far"].values())
    assert result["mode"] == "pre_norm_vector_add-F1N1D0" and result["templates"] == 18
    assert result["identification"]["top1"] == 1.0 and result["identification"]["tpir@fpir=0.01"] == 1.0
    for name in ("verification_result.csv", "verification_result.json", "roc.png", "identification_result.csv"):
        assert (out / name).stat().st_size > 0
    # another mode reuses the cached features: a model that would fail proves no re-embedding
    again = run_ijb(None, tmp_path / "data", "IJBC", out, "colour-net",
                    IJBMode("average", use_detector_score=True), progress=False)
    assert again["mode"] == "average-F1N0D1" and again["feature_cache"] == result["feature_cache"]


def test_identification_skipped_without_1n_files(tmp_path):
    write_protocol(tmp_path, n_ids=3, templates_per_id=2)
    result = run_ijb(ColourIdentityNet(), tmp_path, "IJBC", tmp_path / "o", "m", IJBMode(use_flip_test=False),
                     progress=False)
    assert result["identification"] is None and "skipped" in result["identification_skipped"]


def test_bad_protocol_files(tmp_path):
    info = write_protocol(tmp_path, n_ids=2, templates_per_id=2)
    meta = info["meta"]
    pairs = meta / "ijbc_template_pair_label.txt"
    pairs.write_text(pairs.read_text() + "1 999 0\n")
    with pytest.raises(DataError, match=r"ijbc_template_pair_label.txt:\d+: template 999 has no images"):
        load_protocol(tmp_path, "IJBC")
    lmk = meta / "ijbc_name_5pts_score.txt"
    lmk.write_text("\n".join(lmk.read_text().splitlines()[:-1]) + "\n")
    with pytest.raises(DataError, match="ijbc_name_5pts_score.txt: 7 landmark lines"):
        load_protocol(tmp_path, "IJBC")
    (meta / "ijbc_face_tid_mid.txt").unlink()
    with pytest.raises(DataError, match="ijbc_face_tid_mid.txt: missing IJB meta file"):
        load_protocol(tmp_path, "IJBC")
    with pytest.raises(DataError, match="no IJBB protocol"):
        load_protocol(tmp_path, "IJBB")


def _edit_line(path: Path, index: int, edit) -> None:
    lines = path.read_text().splitlines()
    lines[index] = edit(lines[index])
    path.write_text("\n".join(lines) + "\n")


@pytest.mark.parametrize("damage, fragment", [
    ("label_3", "pair 2 has label 3: labels are 1 (genuine) or 0 (impostor)"),
    ("all_genuine", "genuine and 0 impostor: TAR at FAR needs both kinds of pair"),
    ("empty_pairs", "ijbc_template_pair_label.txt: no pairs"),
    ("nan_landmark", "ijbc_name_5pts_score.txt: 1 line(s) hold a non-finite landmark or score, the first is image '3.jpg'"),
])
def test_degenerate_protocols_are_one_line_errors(tmp_path, capsys, damage, fragment):
    from facetrain.checkpoint import save_checkpoint
    from facetrain.cli import main
    from facetrain.models import build_model

    info = write_protocol(tmp_path / "data", n_ids=2, templates_per_id=2)
    pairs, lmk = info["meta"] / "ijbc_template_pair_label.txt", info["meta"] / "ijbc_name_5pts_score.txt"
    if damage == "label_3":
        _edit_line(pairs, 1, lambda line: line[:-1] + "3")
    elif damage == "all_genuine":
        pairs.write_text("".join(f"{line[:-1]}1\n" for line in pairs.read_text().splitlines()))
    elif damage == "empty_pairs":
        pairs.write_text("")
    else:
        _edit_line(lmk, 2, lambda line: line.replace(line.split()[3], "nan", 1))
    save_checkpoint(tmp_path / "m.ckpt", build_model("tinynet"))
    capsys.readouterr()
    assert main(["ijb", "--data_root", str(tmp_path / "data"), "--ckpt", str(tmp_path / "m.ckpt"), "--output_dir",
                 str(tmp_path / "out"), "--device", "cpu", "--no_progress"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ") and fragment in err, err
    assert not (tmp_path / "out").exists()


def test_another_protocol_in_the_same_output_dir_is_embedded_again(tmp_path):
    write_protocol(tmp_path / "a", n_ids=3, templates_per_id=2)
    info = write_protocol(tmp_path / "b", n_ids=3, templates_per_id=2)
    for crop in (tmp_path / "b" / "IJBC" / "loose_crop").iterdir():  # every face the same colour: one identity
        cv2.imwrite(str(crop), np.full((160, 150, 3), PALETTE[0], np.uint8))
    first = run_ijb(ColourIdentityNet(), tmp_path / "a", "IJBC", tmp_path / "out", "colour-net", progress=False)
    second = run_ijb(ColourIdentityNet(), tmp_path / "b", "IJBC", tmp_path / "out", "colour-net", progress=False)
    fresh = run_ijb(ColourIdentityNet(), tmp_path / "b", "IJBC", tmp_path / "fresh", "colour-net", progress=False)
    assert first["tar_at_far"]["1e-01"] == 1.0 and second["feature_cache"] != first["feature_cache"]
    assert second["tar_at_far"] == fresh["tar_at_far"] != first["tar_at_far"]
    assert len(info["tids"]) == 6


class _NanNet(ColourIdentityNet):
    def forward(self, x):
        emb, norm = super().forward(x)
        return emb * float("nan"), norm


def test_a_nan_model_is_refused_before_any_number(tmp_path):
    from facetrain.errors import ConfigError

    write_protocol(tmp_path, n_ids=2, templates_per_id=2)
    with pytest.raises(ConfigError, match=r"^_NanNet: the model gives non-finite \(NaN/inf\) embeddings for 8 of 8"):
        run_ijb(_NanNet(), tmp_path, "IJBC", tmp_path / "out", "nan-net", progress=False)
    assert not list((tmp_path / "out").glob("*"))


def test_a_truncated_feature_cache_is_rebuilt_with_a_notice(tmp_path, capsys):
    write_protocol(tmp_path / "data", n_ids=2, templates_per_id=2)
    first = run_ijb(ColourIdentityNet(), tmp_path / "data", "IJBC", tmp_path / "out", "colour-net", progress=False)
    cache = Path(first["feature_cache"])
    good = cache.read_bytes()
    cache.write_bytes(good[:100])
    capsys.readouterr()
    again = run_ijb(ColourIdentityNet(), tmp_path / "data", "IJBC", tmp_path / "out", "colour-net", progress=False)
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"note: {cache}: feature cache unreadable ("), err
    assert again["tar_at_far"] == first["tar_at_far"] and cache.read_bytes() == good
