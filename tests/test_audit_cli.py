"""`facetrain audit` end to end with a randomly initialised TinyNet (fast): embedding cache, every training
format, threshold sources, strict JSON, and one clear line for bad input."""
import json
import os
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
    generate_dataset(root / "data", 6, 4, seed=3, rec=True, bins=True, bin_names=("lfw",), pairs_per_set=10,
                     progress=False)
    torch.manual_seed(0)
    save_checkpoint(root / "random.ckpt", build_model("tinynet"))
    return root


def _audit(small, out, *extra):
    return main(["audit", str(small / "data" / "imgs"), "--ckpt", str(small / "random.ckpt"), "--out", str(out),
                 "--no_progress", *extra])


def test_second_audit_reads_the_cache_and_a_changed_dataset_does_not(small, tmp_path):
    ref = ["--reference", str(small / "data" / "lfw.bin")]
    assert _audit(small, tmp_path, *ref) == 0
    first = _strict(tmp_path / "audit.json")
    assert first["embeddings"] == {"data": "computed", "reference lfw": "computed"}
    assert first["threshold"]["source"] == "dataset impostors" and first["threshold"]["pairs"] == "all image pairs"
    assert _audit(small, tmp_path, *ref, "--threshold", "0.5") == 0
    second = _strict(tmp_path / "audit.json")
    assert second["embeddings"] == {"data": "cache", "reference lfw": "cache"}
    assert second["threshold"] == {"value": 0.5, "source": "given", "far": None}
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


@pytest.mark.parametrize("damage", ["truncated", "wrong_width", "nan", "no_json", "dead_writer_temporary"])
def test_a_damaged_embedding_cache_is_rebuilt_with_a_notice(small, tmp_path, capsys, damage):
    assert _audit(small, tmp_path, "--threshold", "0.5") == 0
    first = _strict(tmp_path / "audit.json")
    npy = next((tmp_path / "embedding_cache").glob("*.npy"))
    if damage == "truncated":
        npy.write_bytes(npy.read_bytes()[:100])
    elif damage == "wrong_width":
        np.save(npy, np.zeros((24, 7), np.float32))
    elif damage == "nan":
        np.save(npy, np.full(np.load(npy).shape, np.nan, np.float32))
    elif damage == "no_json":
        npy.with_suffix(".json").unlink()
    else:  # killed between the .npy and its .json: the .json's temporary of a process that is gone
        (npy.parent / f"{npy.with_suffix('.json').name}.tmp-999999999").write_text("{")
    capsys.readouterr()
    assert _audit(small, tmp_path, "--threshold", "0.5") == 0
    err = capsys.readouterr().err
    again = _strict(tmp_path / "audit.json")
    if damage == "dead_writer_temporary":
        assert again["embeddings"]["data"] == "cache" and "notice" not in err
    else:
        assert again["embeddings"]["data"] == "computed" and f"notice: {npy}: embedding cache is incomplete" in err
    assert again["intra_class"]["per_identity"] == first["intra_class"]["per_identity"]
    assert not list(npy.parent.glob("*.tmp-*"))


def test_write_filtered_that_drops_everything_and_its_rerun_after_a_kill(small, tmp_path, capsys):
    """Every training image matches a reference (the data itself, threshold -1): the filtered folder is empty.
    A run killed after renaming the folder into place (no dropped.json yet) completes when run again."""
    out, filtered = tmp_path / "audit", tmp_path / "filtered"
    args = ["--reference", str(small / "data" / "imgs"), "--threshold", "-1", "--write_filtered", str(filtered)]
    assert _audit(small, out, *args) == 0
    assert (filtered / "imgs").is_dir() and not list((filtered / "imgs").iterdir())
    dropped = _strict(filtered / "dropped.json")
    assert dropped["result"] == {"path": str((filtered / "imgs").resolve()), "identities": 0, "images": 0}
    (filtered / "dropped.json").unlink()  # as if killed between the folder's rename and dropped.json
    (out / "audit.json").unlink()
    assert _audit(small, out, *args) == 0
    assert _strict(filtered / "dropped.json") == dropped and (out / "audit.json").is_file()


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
    assert _audit(small, tmp_path, "--calibration", str(small / "data" / "lfw.bin"), "--far", "0.1") == 0
    threshold = _strict(tmp_path / "audit.json")["threshold"]
    assert threshold["source"] == "calibration" and threshold["far"] == 0.1
    assert threshold["impostor_pairs"] == 5 and threshold["genuine_pairs"] == 5  # lfw alternates genuine/impostor


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
