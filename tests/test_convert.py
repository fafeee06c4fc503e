import os
import pickle
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from data_format_fixtures import faces
from facetrain.cli import main
from facetrain.data.formats.bin import read_bin, write_bin
from facetrain.data.tools.dcface import dcface_to_image_folder
from facetrain.data.formats.image_folder import ImageFolder
from facetrain.data.formats.memfile import load_validation_sets
from facetrain.data.formats.recordio import write_insightface_rec
from facetrain.errors import DataError

REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}


def _png(img):
    return cv2.imencode(".png", img)[1].tobytes()


def test_seed_convert_makes_validation_memfiles(tmp_path):
    images, _ = faces(8)
    write_bin(tmp_path / "lfw.bin", images, [True, False, True, False])
    write_bin(tmp_path / "cplfw.bin", images[:4], [False, True])
    proc = subprocess.run([sys.executable, str(REPO / "convert.py"), "--rec_path", str(tmp_path),
                           "--make_validation_memfiles"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "lfw.dat.conf").is_file() and (tmp_path / "cplfw_list.npy").is_file()
    sets = load_validation_sets(tmp_path)
    assert isinstance(sets["lfw"].images, np.memmap)
    np.testing.assert_array_equal(sets["lfw"].images, read_bin(tmp_path / "lfw.bin").images)
    assert sets["cplfw"].issame.tolist() == [False, True]


def test_interrupted_conversion_leaves_no_complete_memfile(tmp_path, capsys):
    images, _ = faces(8)
    encoded = [cv2.imencode(".jpg", im)[1].tobytes() for im in images]
    encoded[5] = encoded[5][:50]  # corrupt image in the middle
    (tmp_path / "agedb_30.bin").write_bytes(pickle.dumps((encoded, [True, False] * 2)))
    assert main(["convert", "--rec_path", str(tmp_path), "--make_validation_memfiles", "--quiet"]) == 1
    err = capsys.readouterr().err
    assert "agedb_30.bin image 5" in err and err.count("\n") == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["agedb_30.bin"]  # no .dat, .conf or temp file


def test_rec_to_image_folder_and_swap(tmp_path):
    images, labels = faces(6, identities=3)
    write_insightface_rec(tmp_path, [_png(i) for i in images], labels)
    assert main(["convert", "--rec_path", str(tmp_path), "--make_image_files", "--quiet"]) == 0
    folder = ImageFolder(tmp_path)
    assert folder.classes == ["0", "1", "2"] and len(folder) == 6
    assert sorted(p.name for p in (tmp_path / "imgs" / "1").iterdir()) == ["3.jpg", "4.jpg"]  # AdaFace: <label>/<key>
    bgr, label = folder.read(0)
    assert label == 0 and np.abs(bgr.astype(int) - images[0]).mean() < 3
    out = tmp_path / "swapped"
    assert main(["convert", "-r", str(tmp_path), "--make_image_files", "--swap_color_channel",
                 "--out", str(out), "--quiet"]) == 0
    swapped, _ = ImageFolder(out).read(0)
    assert np.abs(swapped[:, :, ::-1].astype(int) - images[0]).mean() < 3
    stamp = (tmp_path / "imgs" / "1" / "3.jpg").stat().st_mtime_ns
    assert main(["convert", "--rec_path", str(tmp_path), "--make_image_files", "--quiet"]) == 0  # same: kept
    assert (tmp_path / "imgs" / "1" / "3.jpg").stat().st_mtime_ns == stamp
    assert main(["convert", "--rec_path", str(tmp_path), "--make_image_files", "--swap_color_channel",
                 "--quiet"]) == 1  # imgs exists, made with other options: not overwritten


def test_bins_to_images_also_make_memfiles(tmp_path):
    images, _ = faces(4)
    write_bin(tmp_path / "calfw.bin", images, [True, False], ext=".png")
    assert main(["convert", "--rec_path", str(tmp_path), "--make_image_files", "--quiet"]) == 0
    written = sorted((tmp_path / "calfw" / "imgs").iterdir())
    assert [p.name for p in written] == ["0.jpg", "1.jpg", "2.jpg", "3.jpg"]
    assert (tmp_path / "calfw.dat.conf").is_file()


def test_dcface_release_via_prep_script(tmp_path):
    images, labels = faces(6, identities=2)
    record = tmp_path / "dcface" / "record"
    order = [3, 0, 4, 1, 5, 2]  # shuffled release: no header record, list.txt gives each key's path
    write_insightface_rec(record, [_png(images[i]) for i in order], labels[order], header=False)
    (record / "list.txt").write_text("".join(f"id_{labels[i]}/{i}.jpg\n" for i in order))
    proc = subprocess.run(["bash", str(REPO / "scripts" / "prep_data_train_folder.sh"), str(tmp_path / "dcface")],
                          capture_output=True, text=True, env=ENV)
    assert proc.returncode == 0, proc.stderr
    folder = ImageFolder(tmp_path / "dcface")
    assert folder.classes == ["id_0", "id_1"] and len(folder) == 6
    assert sorted(p.name for p in (tmp_path / "dcface" / "imgs" / "id_1").iterdir()) == ["1.jpg", "3.jpg", "5.jpg"]
    (record / "list.txt").write_text("id_0/0.jpg\n")
    with pytest.raises(DataError, match="list.txt: 1 names for 6 image records"):
        dcface_to_image_folder(tmp_path / "dcface", tmp_path / "other")


def test_prep_validation_script_and_nothing_to_do(tmp_path, capsys):
    images, _ = faces(4)
    write_bin(tmp_path / "cfp_fp.bin", images, [True, False])
    proc = subprocess.run(["bash", str(REPO / "scripts" / "prep_data_validation.sh"), str(tmp_path)],
                          capture_output=True, text=True, env=ENV)
    assert proc.returncode == 0, proc.stderr
    assert "validation_folder" in proc.stdout and (tmp_path / "cfp_fp.dat.conf").is_file()
    assert main(["convert", "--rec_path", str(tmp_path)]) == 1
    assert "nothing to do" in capsys.readouterr().err
