import json

import numpy as np
import pytest

from data_format_fixtures import faces
from facetrain.data.formats.bin import write_bin
from facetrain.data.formats.memfile import (create_memfile, load_validation_sets, open_memfile, open_training_memfile,
                                    write_memfile, write_training_memfile, write_validation_set)
from facetrain.data.formats.verification_set import VerificationSet
from facetrain.errors import DataError


def test_memfile_roundtrip_is_read_only(tmp_path):
    arr = np.arange(2 * 112 * 112 * 3, dtype=np.uint8).reshape(2, 112, 112, 3)
    write_memfile(tmp_path / "x.dat", arr)
    assert json.loads((tmp_path / "x.dat.conf").read_text()) == {"shape": [2, 112, 112, 3], "dtype": "uint8"}
    mm = open_memfile(tmp_path / "x.dat")
    np.testing.assert_array_equal(mm, arr)
    with pytest.raises(ValueError):
        mm[0, 0, 0, 0] = 1


def test_failure_while_writing_leaves_no_memfile(tmp_path):
    with pytest.raises(RuntimeError):
        with create_memfile(tmp_path / "x.dat", (4, 112, 112, 3)) as mm:
            mm[0] = 1
            raise RuntimeError("interrupted")
    assert list(tmp_path.iterdir()) == []


def test_memfile_without_conf_or_wrong_size_is_refused(tmp_path):
    (tmp_path / "x.dat").write_bytes(b"\0" * 100)
    with pytest.raises(DataError, match="x.dat: no sidecar x.dat.conf.*incomplete"):
        open_memfile(tmp_path / "x.dat")
    (tmp_path / "x.dat.conf").write_text(json.dumps({"shape": [1, 112, 112, 3], "dtype": "uint8"}))
    with pytest.raises(DataError, match="100 bytes"):
        open_memfile(tmp_path / "x.dat")


def test_validation_sets_from_bins_ours_and_adaface_layout(tmp_path):
    images, _ = faces(8)
    issame = np.array([True, False, False, True])
    write_bin(tmp_path / "lfw.bin", images, issame, ext=".png")
    write_validation_set(tmp_path, VerificationSet("cfp_fp", images, issame))
    # AdaFace: <root>/<name>/memfile/mem_file.dat float32 (N,3,112,112) normalised BGR + <root>/<name>_list.npy
    ada = tmp_path / "agedb_30" / "memfile"
    ada.mkdir(parents=True)
    write_memfile(ada / "mem_file.dat", ((images.transpose(0, 3, 1, 2) / 255.0 - 0.5) / 0.5).astype(np.float32))
    np.save(tmp_path / "agedb_30_list.npy", issame)
    sets = load_validation_sets(tmp_path)
    assert list(sets) == ["lfw", "cfp_fp", "agedb_30"]  # standard order
    for vset in sets.values():
        np.testing.assert_array_equal(vset.images, images)
        np.testing.assert_array_equal(vset.issame, issame)
    assert isinstance(sets["cfp_fp"].images, np.memmap)
    assert list(load_validation_sets(tmp_path, names=["agedb_30"])) == ["agedb_30"]
    with pytest.raises(DataError, match="calfw not found"):
        load_validation_sets(tmp_path, names=["calfw"])


def test_incomplete_memfile_falls_back_to_bin_or_errors(tmp_path):
    images, _ = faces(4)
    write_validation_set(tmp_path, VerificationSet("lfw", images, [True, False]))
    (tmp_path / "lfw.dat.conf").unlink()
    with pytest.raises(DataError, match="lfw.dat: memfile of 'lfw' is incomplete"):
        load_validation_sets(tmp_path)
    write_bin(tmp_path / "lfw.bin", images, [True, False], ext=".png")
    with pytest.warns(UserWarning, match="incomplete memfile"):
        sets = load_validation_sets(tmp_path)
    np.testing.assert_array_equal(sets["lfw"].images, images)


def test_training_memfile(tmp_path):
    images, labels = faces(6, identities=3)
    write_training_memfile(tmp_path, images, labels)
    mm, lab = open_training_memfile(tmp_path)
    np.testing.assert_array_equal(mm, images)
    assert lab.dtype == np.int64 and lab.tolist() == labels.tolist()
