import json

import cv2
import pytest

from data_format_fixtures import faces, make_image_folder
from facetrain.cli import main
from facetrain.data.formats.bin import write_bin
from facetrain.data.formats.memfile import write_training_memfile, write_validation_set
from facetrain.data.formats.recordio import write_insightface_rec
from facetrain.data.formats.verification_set import VerificationSet


def _info(path, capsys, *extra):
    assert main(["info", str(path), "--json", *extra]) == 0
    return json.loads(capsys.readouterr().out)


def test_info_every_format(tmp_path, capsys):
    images, labels = faces(8, identities=4)
    write_bin(tmp_path / "val" / "lfw.bin", images, [True, False, True, True])
    info = _info(tmp_path / "val" / "lfw.bin", capsys)
    assert (info["format"], info["images"], info["pairs"], info["genuine"], info["unreadable"]) == ("bin", 8, 4, 3, [])
    write_validation_set(tmp_path / "val", VerificationSet("cfp_fp", images, [False, False, False, True]))
    for path in (tmp_path / "val" / "cfp_fp.dat", tmp_path / "val" / "cfp_fp.dat.conf"):
        info = _info(path, capsys)
        assert (info["format"], info["pairs"], info["genuine"]) == ("memfile", 4, 1)
    folder = _info(tmp_path / "val", capsys)
    assert folder["format"] == "validation_folder" and set(folder["sets"]) == {"lfw", "cfp_fp"}
    assert folder["images"] == 16
    write_insightface_rec(tmp_path / "rec", images, labels)
    for path in (tmp_path / "rec", tmp_path / "rec" / "train.rec"):
        info = _info(path, capsys)
        assert (info["format"], info["images"], info["classes"], info["insightface_header"]) == ("recordio", 8, 4, True)
    write_training_memfile(tmp_path / "mem", images, labels)
    info = _info(tmp_path / "mem", capsys)
    assert (info["format"], info["kind"], info["images"], info["classes"]) == ("memfile", "training", 8, 4)
    make_image_folder(tmp_path / "ds", {"a": 2, "b": 3})
    (tmp_path / "ds" / "imgs" / "empty").mkdir()
    for path in (tmp_path / "ds", tmp_path / "ds" / "imgs"):
        with pytest.warns(UserWarning):
            info = _info(path, capsys)
        assert (info["format"], info["images"], info["classes"], info["empty_classes"]) == ("image_folder", 5, 3, ["empty"])


def test_info_reports_unreadable_and_text_output(tmp_path, capsys):
    make_image_folder(tmp_path, {"a": 2})
    bad = tmp_path / "imgs" / "a" / "0.jpg"
    bad.write_bytes(b"not a jpeg")
    assert _info(tmp_path, capsys)["unreadable"] == [str(bad)]
    assert _info(tmp_path, capsys, "--quick")["unreadable"] is None
    images, labels = faces(3)
    encoded = [cv2.imencode(".jpg", im)[1].tobytes() for im in images]
    write_insightface_rec(tmp_path / "r", [encoded[0], b"\xff\xd8\xff garbage", encoded[2]], labels, header=False)
    assert _info(tmp_path / "r", capsys)["unreadable"] == [f"{tmp_path / 'r' / 'train.rec'} record 1"]
    assert main(["info", str(tmp_path / "r")]) == 0
    out = capsys.readouterr().out
    assert "recordio" in out and "unreadable: 1" in out


@pytest.mark.parametrize("make", ["missing", "text_file", "empty_dir", "truncated_rec"])
def test_info_invalid_input_is_one_line_and_nonzero(tmp_path, capsys, make):
    path = tmp_path / "x"
    if make == "text_file":
        path.write_text("hello")
    elif make == "empty_dir":
        path.mkdir()
    elif make == "truncated_rec":
        images, labels = faces(2)
        write_insightface_rec(path, images, labels, header=False)
        data = (path / "train.rec").read_bytes()
        (path / "train.rec").write_bytes(data[:-20])
    assert main(["info", str(path), "--json"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and str(path) in err
