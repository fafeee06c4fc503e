"""TinyFace rank-k identification: the scoring against a plain loop, the CLI on a synthetic release, bad releases."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from scipy.io import loadmat

from facetrain.checkpoint import save_checkpoint
from facetrain.errors import ConfigError, DataError
from facetrain.eval.tinyface import identification_accuracy
from facetrain.eval.tinyface_data import load_tinyface
from facetrain.models import build_model
from facetrain.synthetic.generate import generate_dataset


def reference_ranks(probe, probe_labels, gallery, gallery_labels, ranks=(1, 5, 20)):
    """tinyface_helper's DIR_FAR at FAR 1.0, written out: probes with a mate only, gallery sorted by score."""
    hits, mated = dict.fromkeys(ranks, 0), 0
    for feature, label in zip(probe, probe_labels):
        if not (gallery_labels == label).any():
            continue
        mated += 1
        order = np.argsort(gallery @ feature)[::-1]
        for k in ranks:
            hits[k] += bool((gallery_labels[order[:k]] == label).any())
    return {f"rank_{k}": hits[k] / mated for k in ranks}, mated


def _unit(x):
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_rank_k_matches_the_reference_loop():
    rng = np.random.default_rng(0)
    ids = rng.integers(0, 30, 60)
    centres = rng.normal(size=(30, 16))
    gallery = _unit(np.concatenate([centres[ids] + rng.normal(size=(60, 16)), rng.normal(size=(40, 16))]))
    gallery_labels = np.concatenate([ids, np.full(40, -100)])
    probe_labels = rng.integers(0, 34, 50)  # some identities (30..33) have no gallery image
    probe = _unit(np.concatenate([centres, rng.normal(size=(4, 16))])[probe_labels] + 1.2 * rng.normal(size=(50, 16)))
    expected, mated = reference_ranks(probe, probe_labels, gallery, gallery_labels)
    result = identification_accuracy(probe.astype(np.float32), probe_labels, gallery.astype(np.float32), gallery_labels)
    assert result["mated_probes"] == mated and result["probes_without_mate"] == 50 - mated < 50
    assert 0 < expected["rank_1"] < expected["rank_5"] < expected["rank_20"] < 1  # the data exercise every rank
    for name, value in expected.items():
        assert result[name] == pytest.approx(value, abs=1e-12)


def test_a_tie_with_a_non_mate_counts_against_the_probe():
    probe = np.array([[1.0, 0.0]], np.float32)
    gallery = np.array([[0.6, 0.8], [0.6, -0.8], [0.0, 1.0]], np.float32)  # mate scores 0.6, a distractor too
    result = identification_accuracy(probe, np.array([7]), gallery, np.array([7, -100, -100]), ranks=(1, 2))
    assert result["rank_1"] == 0.0 and result["rank_2"] == 1.0


@pytest.fixture(scope="module")
def release(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth")
    summary = generate_dataset(out, folder=False, tinyface=True, tinyface_subjects=8, tinyface_distractors=12,
                               seed=5, progress=False)
    return out / summary["tinyface"]["data_root"]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("ckpt") / "tiny.ckpt"
    save_checkpoint(path, build_model("tinynet"))
    return path


def test_synthetic_release_reads_as_tinyface_helper_reads_it(release):
    testing = release / "tinyface" / "Testing_Set"
    for folder, mat, set_key, id_key in (("Probe", "probe_img_ID_pairs.mat", "probe_set", "probe_ids"),
                                         ("Gallery_Match", "gallery_match_img_ID_pairs.mat", "gallery_set", "gallery_ids")):
        lists = loadmat(testing / mat)
        names = [p[0].item() for p in lists[set_key]]  # the helper's access
        assert sorted(names) == sorted(p.name for p in (testing / folder).iterdir())
        assert [int(n.split("_")[0]) for n in names] == lists[id_key].reshape(-1).astype(int).tolist()
        for name in names:
            low = cv2.imread(str(testing / folder / name))
            aligned = cv2.imread(str(release / "aligned_pad_0.1_pad_high" / folder / name))
            assert max(low.shape[:2]) <= 36 and aligned.shape == (112, 112, 3)
    assert len(list((testing / "Gallery_Distractor").iterdir())) == 12


def _embed_reference(model, paths):
    """Each aligned image as cv2 reads it (BGR), plus its flip: un-normalised features added, then L2-normalised."""
    faces = torch.from_numpy(np.stack([cv2.imread(str(p)) for p in paths])).permute(0, 3, 1, 2).float()
    x = (faces / 255 - 0.5) / 0.5
    with torch.no_grad():
        fused = sum(emb * norm for emb, norm in (model(x), model(torch.flip(x, dims=[3]))))
    return _unit(fused.numpy().astype(np.float64))


def _run_cli(*args):
    return subprocess.run([sys.executable, "-m", "facetrain", "tinyface", *map(str, args)], capture_output=True,
                          text=True, timeout=120)


def _strict_json(path):
    return json.loads(Path(path).read_text(), parse_constant=lambda c: pytest.fail(f"non-strict JSON constant {c}"))


def test_cli_end_to_end_matches_a_reference_and_reuses_the_cache(release, checkpoint, tmp_path):
    proc = _run_cli("--data_root", release, "--ckpt", checkpoint, "--json", tmp_path / "r.json", "--cache_dir",
                    tmp_path / "cache", "--device", "cpu", "--no_progress")
    assert proc.returncode == 0, proc.stderr
    result = _strict_json(tmp_path / "r.json")
    model = build_model("tinynet")
    model.load_state_dict({k[6:]: v for k, v in torch.load(checkpoint)["state_dict"].items()})
    model.eval()
    aligned = release / "aligned_pad_0.1_pad_high"
    probes = sorted((aligned / "Probe").iterdir())
    gallery = sorted((aligned / "Gallery_Match").iterdir()) + sorted((aligned / "Gallery_Distractor").iterdir())
    labels = lambda paths: np.array([int(p.name.split("_")[0]) if p.parent.name != "Gallery_Distractor" else -100
                                     for p in paths])
    expected, mated = reference_ranks(_embed_reference(model, probes), labels(probes), _embed_reference(model, gallery),
                                      labels(gallery))
    assert result["mated_probes"] == mated == len(probes) and result["distractors"] == 12
    for name, value in expected.items():
        assert result[name] == pytest.approx(value, abs=1e-12)
        assert f"rank-{name[5:]} {100 * value:.2f}" in proc.stdout
    # another fusion re-scores from the cached features
    again = _run_cli("--data_root", release, "--ckpt", checkpoint, "--fusion", "average", "--json", tmp_path / "a.json",
                     "--cache_dir", tmp_path / "cache", "--device", "cpu", "--no_progress")
    assert again.returncode == 0, again.stderr
    assert _strict_json(tmp_path / "a.json")["feature_cache"] == result["feature_cache"]
    assert len(list((tmp_path / "cache").iterdir())) == 1


def _copy(release, tmp_path):
    root = tmp_path / "tinyface_root"
    shutil.copytree(release, root)
    return root


def test_missing_release_is_a_one_line_error(tmp_path, checkpoint):
    proc = _run_cli("--data_root", tmp_path, "--ckpt", checkpoint)
    assert proc.returncode == 1 and proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr
    assert "missing tinyface/Testing_Set, aligned_pad_0.1_pad_high" in proc.stderr


@pytest.mark.parametrize("remove, message", [
    ("tinyface/Testing_Set/Gallery_Distractor", "missing tinyface/Testing_Set/Gallery_Distractor"),
    ("tinyface/Testing_Set/probe_img_ID_pairs.mat", "missing tinyface/Testing_Set/probe_img_ID_pairs.mat"),
    ("tinyface/Testing_Set/Probe/*.jpg", "images listed in probe_img_ID_pairs.mat are missing from"),
    ("aligned_pad_0.1_pad_high/Gallery_Match/*.jpg", "have no aligned image in"),
])
def test_incomplete_release_names_what_is_missing(release, tmp_path, remove, message):
    root = _copy(release, tmp_path)
    target = sorted(root.glob(remove))[0]  # a folder or file, or the first image of a folder
    shutil.rmtree(target) if target.is_dir() else target.unlink()
    with pytest.raises(DataError, match=message) as info:
        load_tinyface(root)
    assert target.name in str(info.value)


def test_mat_ids_must_agree_with_file_names(release, tmp_path):
    from scipy.io import savemat

    root = _copy(release, tmp_path)
    mat_path = root / "tinyface/Testing_Set/probe_img_ID_pairs.mat"
    lists = loadmat(mat_path)
    lists["probe_ids"][0, 0] += 1
    savemat(mat_path, {k: v for k, v in lists.items() if not k.startswith("__")})
    with pytest.raises(DataError, match="listed id differs from their file name"):
        load_tinyface(root)


def test_without_scipy_the_release_still_loads_unchecked_and_synth_says_what_to_install(release, monkeypatch, tmp_path):
    checked = load_tinyface(release)
    assert checked.mat_lists_checked
    monkeypatch.setitem(sys.modules, "scipy.io", None)  # `from scipy.io import ...` now raises ImportError
    unchecked = load_tinyface(release)
    assert not unchecked.mat_lists_checked and unchecked.image_paths == checked.image_paths
    monkeypatch.setitem(sys.modules, "scipy", None)
    with pytest.raises(ConfigError, match=r"pip install 'facetrain\[tinyface\]'"):
        generate_dataset(tmp_path, folder=False, tinyface=True, progress=False)


def _tinyface(release, ckpt, cache, out_json, capsys):
    from facetrain.cli import main

    capsys.readouterr()
    rc = main(["tinyface", "--data_root", str(release), "--ckpt", str(ckpt), "--cache_dir", str(cache), "--json",
               str(out_json), "--device", "cpu", "--no_progress"])
    captured = capsys.readouterr()
    return rc, captured.err, (_strict_json(out_json) if rc == 0 else None)


def test_replaced_images_and_checkpoints_are_embedded_again(release, checkpoint, tmp_path, capsys):
    root = _copy(release, tmp_path)
    rc, _, first = _tinyface(root, checkpoint, tmp_path / "cache", tmp_path / "a.json", capsys)
    assert rc == 0
    probes = sorted((root / "aligned_pad_0.1_pad_high" / "Probe").iterdir())
    gallery = sorted((root / "aligned_pad_0.1_pad_high" / "Gallery_Match").iterdir())
    for probe, other in zip(probes, gallery[1:] + gallery[:1]):  # same names, other faces
        shutil.copyfile(other, probe)
    rc, _, second = _tinyface(root, checkpoint, tmp_path / "cache", tmp_path / "b.json", capsys)
    rc_fresh, _, fresh = _tinyface(root, checkpoint, tmp_path / "fresh", tmp_path / "c.json", capsys)
    assert rc == rc_fresh == 0 and second["feature_cache"] != first["feature_cache"]
    assert {k: v for k, v in second.items() if k.startswith("rank_")} == \
        {k: v for k, v in fresh.items() if k.startswith("rank_")} != {k: v for k, v in first.items() if k.startswith("rank_")}
    # a checkpoint rewritten in place with other weights, same size and time stamp: another model
    from facetrain.eval.feature_cache import checkpoint_key

    other = tmp_path / "other.ckpt"
    shutil.copyfile(checkpoint, other)
    key = checkpoint_key(other, "tinynet")
    stat = other.stat()
    data = bytearray(other.read_bytes())
    data[-100] ^= 1
    other.write_bytes(bytes(data))
    os.utime(other, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert checkpoint_key(other, "tinynet") != key


def test_a_corrupt_or_misfit_cache_is_rebuilt_with_a_notice(release, checkpoint, tmp_path, capsys):
    rc, _, first = _tinyface(release, checkpoint, tmp_path / "cache", tmp_path / "a.json", capsys)
    cache = Path(first["feature_cache"])
    good = cache.read_bytes()
    with np.load(cache) as arrays:
        rows = len(arrays["features"])
    for damage in (good[: len(good) // 2], None, b""):
        if damage is None:  # a cache of the wrong width
            with open(cache, "wb") as f:
                np.savez(f, features=np.ones((rows, 7), np.float32), flip_features=np.ones((rows, 7), np.float32))
        else:
            cache.write_bytes(damage)
        rc, err, again = _tinyface(release, checkpoint, tmp_path / "cache", tmp_path / "b.json", capsys)
        assert rc == 0 and err.count("\n") == 1 and err.startswith(f"note: {cache}: feature cache "), err
        assert {k: v for k, v in again.items() if k.startswith("rank_")} == \
            {k: v for k, v in first.items() if k.startswith("rank_")}
        assert cache.read_bytes() == good


def test_a_nan_model_is_refused_and_nothing_is_cached(release, tmp_path, capsys):
    model = build_model("tinynet")
    with torch.no_grad():
        for p in model.parameters():
            p.fill_(float("nan"))
    save_checkpoint(tmp_path / "nan.ckpt", model)
    rc, err, _ = _tinyface(release, tmp_path / "nan.ckpt", tmp_path / "cache", tmp_path / "a.json", capsys)
    assert rc == 1 and err.count("\n") == 1
    assert err.startswith(f"error: {tmp_path / 'nan.ckpt'}: the model gives non-finite (NaN/inf) embeddings")
    assert not (tmp_path / "cache").exists() and not (tmp_path / "a.json").exists()
