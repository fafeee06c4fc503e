"""`facetrain audit` end to end with a randomly initialised TinyNet (fast): embedding cache (and its damage),
every training format, threshold sources, strict JSON, `--write_filtered` edge cases, and one clear line for
bad input."""
import json
import os
import pickle
import shutil

import numpy as np
import pytest
import torch

from facetrain.audit.threshold import threshold_at_far
from facetrain.checkpoint import save_checkpoint
from facetrain.cli import main
from facetrain.data.formats.image_folder import ImageFolder
from facetrain.data.formats.memfile import write_training_memfile
from facetrain.models import build_model
from facetrain.synthetic.generate import generate_dataset


def _strict(path):
    def refuse(token):
        raise ValueError(f"non-standard JSON constant {token}")

    return json.loads(path.read_text(), parse_constant=refuse)


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    root = tmp_path_factory.mktemp("audit_small")
    generate_dataset(root / "data", 6, 4, seed=3, rec=True, bins=True, bin_names=("lfw",), pairs_per_set=80,
                     progress=False)
    torch.manual_seed(0)
    save_checkpoint(root / "random.ckpt", build_model("tinynet"))
    return root


def _audit(small, out, *extra):
    return main(["audit", str(small / "data" / "imgs"), "--ckpt", str(small / "random.ckpt"), "--out", str(out),
                 "--no_progress", *extra])


def test_second_audit_reads_the_cache_and_a_changed_dataset_does_not(small, tmp_path, capsys):
    ref = ["--reference", str(small / "data" / "lfw.bin")]
    assert _audit(small, tmp_path, *ref) == 0
    first = _strict(tmp_path / "audit.json")
    assert first["embeddings"] == {"data": "computed", "reference lfw": "computed"}
    # 6 identities are too few to fit the spread of their centroid pairs: the image impostors, with a notice
    assert first["threshold"]["source"] == "dataset impostors" and first["threshold"]["pairs"] == "all image pairs"
    assert "6 identities are too few" in capsys.readouterr().err
    assert first["leakage"]["lfw"]["threshold"]["source"] == "non-matching pairs of lfw"
    assert first["leakage"]["lfw"]["threshold"]["impostor_pairs"] == 40
    assert _audit(small, tmp_path, *ref, "--threshold", "0.5") == 0
    second = _strict(tmp_path / "audit.json")
    assert second["embeddings"] == {"data": "cache", "reference lfw": "cache"}
    assert second["threshold"] == {"value": 0.5, "source": "given", "far": None}
    assert second["leakage"]["lfw"]["threshold"]["value"] == 0.5  # a given threshold applies to every level
    assert second["intra_class"]["per_identity"] == first["intra_class"]["per_identity"]
    data = tmp_path / "copy"
    shutil.copytree(small / "data" / "imgs", data / "imgs")
    assert main(["audit", str(data), "--ckpt", str(small / "random.ckpt"), "--out", str(tmp_path), "--threshold", "0.5",
                 "--no_progress"]) == 0
    os.remove(data / "imgs" / "id_00000" / "0.jpg")
    assert main(["audit", str(data), "--ckpt", str(small / "random.ckpt"), "--out", str(tmp_path), "--threshold", "0.5",
                 "--no_progress"]) == 0
    changed = _strict(tmp_path / "audit.json")
    assert changed["embeddings"]["data"] == "computed" and changed["summary"]["images"] == 23


def test_out_inside_the_audited_folder_is_refused(small, tmp_path, capsys):
    data = tmp_path / "copy"
    shutil.copytree(small / "data" / "imgs", data / "imgs")
    for out in (data / "imgs" / "audit", data / "imgs"):
        assert main(["audit", str(data), "--ckpt", str(small / "random.ckpt"), "--out", str(out), "--no_progress"]) == 1
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "inside the audited image folder" in err[0]
    assert sorted(p.name for p in (data / "imgs").iterdir()) == sorted(p.name for p in (small / "data" / "imgs").iterdir())


def test_image_folder_recordio_and_memfile_give_the_same_audit(small, tmp_path):
    folder = ImageFolder(small / "data" / "imgs")
    images = np.stack([folder.read(i)[0] for i in range(len(folder))])
    write_training_memfile(tmp_path / "memfile", images, folder.labels)
    results = []
    for data in (small / "data" / "imgs", small / "data" / "train.rec", tmp_path / "memfile"):
        out = tmp_path / f"out{len(results)}"
        assert main(["audit", str(data), "--ckpt", str(small / "random.ckpt"), "--out", str(out), "--threshold", "0.9",
                     "--no_progress"]) == 0
        results.append(_strict(out / "audit.json"))
    consistency = [[e["consistency"] for e in r["intra_class"]["per_identity"]] for r in results]
    np.testing.assert_allclose(consistency[1], consistency[0], atol=1e-5)
    np.testing.assert_allclose(consistency[2], consistency[0], atol=1e-5)
    assert "RecordIO" in results[1]["summary"]["data"] and "memfile" in results[2]["summary"]["data"]


def test_calibration_threshold_comes_from_the_bin_impostor_pairs(small, tmp_path):
    """--calibration sets the leakage threshold of every reference (here a folder of images without identities)
    and, with too few identities to fit their centroids, the collision threshold."""
    bin_path = str(small / "data" / "lfw.bin")
    assert _audit(small, tmp_path, "--calibration", bin_path, "--far", "0.1",
                  "--reference", str(small / "data" / "imgs" / "id_00001")) == 0
    report = _strict(tmp_path / "audit.json")
    for threshold in (report["threshold"], report["leakage"]["id_00001"]["threshold"]):
        assert threshold["source"] == f"non-matching pairs of {bin_path}" and threshold["far"] == 0.1
        assert threshold["impostor_pairs"] == 40  # lfw alternates genuine/impostor


def test_threshold_at_far_by_hand():
    impostor = np.array([0.1, 0.2, 0.3, 0.4], np.float32)
    genuine = np.array([0.35, 0.5], np.float32)
    at_quarter = threshold_at_far(genuine, impostor, 0.25)  # one impostor of four may pass: t = 0.4
    assert at_quarter["value"] == pytest.approx(0.4) and at_quarter["tar"] == 0.5
    at_half = threshold_at_far(genuine, impostor, 0.5)  # two may pass: t = 0.3, both genuine pass
    assert at_half["value"] == pytest.approx(0.3) and at_half["tar"] == 1.0
    none = threshold_at_far(genuine, impostor, 0.1)  # none may pass: just above the highest impostor
    assert 0.4 < none["value"] < 0.4 + 1e-6 and none["achieved_far"] == 0.0


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: "), err
    return err[0]


def test_bad_input_gets_one_clear_line(small, tmp_path, capsys):
    junk = tmp_path / "junk.ckpt"
    junk.write_bytes(b"not a checkpoint")
    assert main(["audit", str(small / "data" / "imgs"), "--ckpt", str(junk), "--out", str(tmp_path / "o")]) == 1
    assert str(junk) in _one_error_line(capsys)
    (tmp_path / "empty" / "imgs").mkdir(parents=True)
    assert _audit(small, tmp_path / "o", "--threshold", "0.5") == 0
    capsys.readouterr()
    assert main(["audit", str(tmp_path / "empty"), "--ckpt", str(small / "random.ckpt"), "--out", str(tmp_path / "o")]) == 1
    assert "empty" in _one_error_line(capsys)
    (tmp_path / "noref" / "person_a").mkdir(parents=True)
    assert _audit(small, tmp_path / "o", "--reference", str(tmp_path / "noref")) == 1
    assert "noref" in _one_error_line(capsys)
    (tmp_path / "flat").mkdir()
    assert _audit(small, tmp_path / "o", "--reference", str(tmp_path / "flat")) == 1
    assert "flat" in _one_error_line(capsys)


def _nan_checkpoint(path):
    model = build_model("tinynet")
    with torch.no_grad():
        next(model.parameters()).fill_(float("nan"))
    save_checkpoint(path, model)
    return path


@pytest.mark.parametrize("case", ["batch_size", "top", "drop", "out_inside", "zero_d_issame", "nan_model"])
def test_bad_options_get_one_line_and_write_nothing(small, tmp_path, capsys, case):
    data, ckpt, out = small / "data" / "imgs", small / "random.ckpt", tmp_path / "out"
    extra, named = [], None
    if case == "batch_size":
        extra, named = ["--batch_size", "-5"], "--batch_size"
    elif case == "top":
        extra, named = ["--top", "-3"], "--top"
    elif case == "drop":
        extra, named = ["--write_filtered", str(tmp_path / "f"), "--drop", "leaks,typos"], "typos"
    elif case == "out_inside":
        out, named = data / "report", "inside"
    elif case == "zero_d_issame":
        bad = tmp_path / "cal.bin"
        bad.write_bytes(pickle.dumps(([b"x", b"y"], np.array(True))))
        extra, named = ["--calibration", str(bad)], str(bad)
    else:
        ckpt = _nan_checkpoint(tmp_path / "nan.ckpt")
        named = str(ckpt)
    code = main(["audit", str(data), "--ckpt", str(ckpt), "--out", str(out), "--no_progress", *extra])
    assert code == 1
    assert named in _one_error_line(capsys)
    assert not out.exists() and not (tmp_path / "f").exists()
    assert sorted(p.name for p in data.iterdir()) == [f"id_{k:05d}" for k in range(6)]


@pytest.mark.parametrize("damage", ["truncated", "wrong_width", "nan", "no_json", "killed_between"])
def test_a_damaged_embedding_cache_is_rebuilt_with_a_notice(small, tmp_path, capsys, damage):
    assert _audit(small, tmp_path, "--threshold", "0.5") == 0
    reference = _strict(tmp_path / "audit.json")["intra_class"]["per_identity"]
    (npy,) = (tmp_path / "embedding_cache").glob("*.npy")
    meta = npy.with_suffix(".json")
    if damage == "truncated":
        npy.write_bytes(npy.read_bytes()[:200])
    elif damage == "wrong_width":
        np.save(npy, np.zeros((24, 7), np.float32))
    elif damage == "nan":
        np.save(npy, np.full(np.load(npy).shape, np.nan, np.float32))
    elif damage == "no_json":
        meta.unlink()
    else:  # killed while writing the .json: the .npy is there, the .json only as a dead process's temporary
        meta.rename(meta.with_name(meta.name + ".tmp-999999999"))
    capsys.readouterr()
    assert _audit(small, tmp_path, "--threshold", "0.5") == 0
    notices = [line for line in capsys.readouterr().err.splitlines() if line.startswith("notice:")]
    assert len(notices) == 1 and str(npy) in notices[0]
    again = _strict(tmp_path / "audit.json")
    assert again["embeddings"]["data"] == "computed" and again["intra_class"]["per_identity"] == reference
    assert not list((tmp_path / "embedding_cache").glob("*.tmp-*"))
    assert _audit(small, tmp_path, "--threshold", "0.5") == 0
    assert _strict(tmp_path / "audit.json")["embeddings"]["data"] == "cache"


def test_a_folder_with_a_non_utf8_name_is_audited(small, tmp_path):
    folder = tmp_path / os.fsdecode(b"caf\xe9-data")
    shutil.copytree(small / "data" / "imgs", folder / "imgs")
    assert main(["audit", str(folder), "--ckpt", str(small / "random.ckpt"), "--out", str(tmp_path / "out"),
                 "--threshold", "0.5", "--no_progress"]) == 0
    assert _strict(tmp_path / "out" / "audit.json")["summary"]["images"] == 24


def test_write_filtered_that_drops_everything_and_its_resume_after_a_kill(small, tmp_path):
    """The training set audited against itself: every image is its own reference's copy (an excess at cosine 1),
    so everything is dropped. A run killed right after the filtered folder is committed completes on a re-run."""
    from crash_tools import CommandServer

    data = str(small / "data" / "imgs")
    argv = ["audit", data, "--ckpt", str(small / "random.ckpt"), "--reference", data, "--threshold", "0.9999",
            "--no_progress"]
    filtered = tmp_path / "filtered"
    with CommandServer(tmp_path) as server:
        events, commits = server.trace([*argv, "--out", str(tmp_path / "a"), "--write_filtered", str(tmp_path / "x")])
        report = _strict(tmp_path / "a" / "audit.json")
        assert report["leakage"]["data"]["leak"] and report["summary"]["leaked_images"] == 24
        assert list((tmp_path / "x" / "imgs").iterdir()) == []
        assert json.loads((tmp_path / "x" / "dropped.json").read_text())["result"]["images"] == 0
        (committed,) = [n for n, path in commits if path == str(tmp_path / "x" / "imgs")]
        outcome = server.run([*argv, "--out", str(tmp_path / "b"), "--write_filtered", str(filtered)],
                             kill_at=committed + 1)
        assert outcome.killed and (filtered / "imgs").is_dir() and not (filtered / "dropped.json").exists()
        assert server.run([*argv, "--out", str(tmp_path / "b"), "--write_filtered", str(filtered)]).returncode == 0
    assert json.loads((filtered / "dropped.json").read_text())["result"]["images"] == 0
    assert _strict(tmp_path / "b" / "audit.json")["filtered"]["result"]["images"] == 0
