import io
import os
import pickle
import struct
import sys

import cv2
import numpy as np
import pytest

from data_format_fixtures import faces
from facetrain.data.formats.bin import iter_decoded, load_encoded, read_bin, set_name, unique_set_names, write_bin
from facetrain.errors import DataError


def test_write_read_roundtrip(tmp_path):
    images, _ = faces(12)
    issame = [True, False, True, True, False, False]
    write_bin(tmp_path / "lfw.bin", images, issame, ext=".png")
    vset = read_bin(tmp_path / "lfw.bin")
    assert vset.name == "lfw" and vset.images.dtype == np.uint8 and vset.images.shape == (12, 112, 112, 3)
    np.testing.assert_array_equal(vset.images, images)  # PNG is lossless, channel order preserved (BGR)
    assert vset.issame.tolist() == issame and vset.num_genuine == 3


def test_insightface_layout_is_plain_bytes_and_bools(tmp_path):
    images, _ = faces(4)
    write_bin(tmp_path / "x.bin", images, [True, False])
    bins, issame = pickle.loads((tmp_path / "x.bin").read_bytes(), encoding="bytes")
    assert all(type(b) is bytes for b in bins) and issame == [True, False]
    assert cv2.imdecode(np.frombuffer(bins[0], np.uint8), cv2.IMREAD_COLOR).shape == (112, 112, 3)


def test_numpy_encoded_arrays_numpy_bools_and_resize(tmp_path):
    images, _ = faces(4)
    big = cv2.resize(images[3], (150, 150))
    bins = [np.frombuffer(cv2.imencode(".png", im)[1].tobytes(), np.uint8) for im in (*images[:3], big)]
    (tmp_path / "cfp_fp.bin").write_bytes(pickle.dumps((bins, np.array([True, False])), protocol=2))
    vset = read_bin(tmp_path / "cfp_fp.bin")
    np.testing.assert_array_equal(vset.images[:3], images[:3])
    assert vset.images[3].shape == (112, 112, 3)  # resized as InsightFace's loader does
    assert vset.issame.tolist() == [True, False]


def _py2_pickle(strings: list[bytes], flags: list[bool]) -> bytes:
    """What Python 2 writes for (list of str, list of bool) with protocol 2 (SHORT_BINSTRING / BINSTRING)."""
    out = b"\x80\x02]("
    for s in strings:
        out += (b"U" + bytes([len(s)]) if len(s) < 256 else b"T" + struct.pack("<i", len(s))) + s
    out += b"e](" + b"".join(b"\x88" if f else b"\x89" for f in flags) + b"e\x86."
    return out


def test_python2_pickle(tmp_path):
    images, _ = faces(4)
    encoded = [cv2.imencode(".png", im)[1].tobytes() for im in images]
    (tmp_path / "agedb_30.bin").write_bytes(_py2_pickle(encoded, [True, False]))
    vset = read_bin(tmp_path / "agedb_30.bin")
    np.testing.assert_array_equal(vset.images, images)


class _System:
    def __init__(self, cmd):
        self.cmd = cmd

    def __reduce__(self):
        return (os.system, (self.cmd,))


class _Eval:
    def __init__(self, code):
        self.code = code

    def __reduce__(self):
        return (eval, (self.code,))


@pytest.mark.parametrize("kind", ["system", "eval", "nested"])
def test_malicious_pickle_is_refused_and_nothing_runs(tmp_path, kind):
    marker = tmp_path / "pwned"
    if kind == "system":
        payload = _System(f"touch {marker}")
    elif kind == "eval":
        payload = _Eval(f"open({str(marker)!r}, 'w').write('x')")
    else:  # hidden inside an otherwise valid-looking set
        payload = ([b"\xff\xd8", _System(f"touch {marker}")], [True])
    path = tmp_path / "lfw.bin"
    path.write_bytes(pickle.dumps(payload, protocol=2))
    with pytest.raises(DataError, match="lfw.bin.*tries to run code"):
        read_bin(path)
    assert not marker.exists()


def test_truncated_bin_names_the_file(tmp_path):
    images, _ = faces(4)
    write_bin(tmp_path / "calfw.bin", images, [True, False])
    data = (tmp_path / "calfw.bin").read_bytes()
    (tmp_path / "calfw.bin").write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match="calfw.bin.*truncated"):
        read_bin(tmp_path / "calfw.bin")


def test_wrong_pair_count_and_corrupt_image(tmp_path):
    images, _ = faces(4)
    (tmp_path / "a.bin").write_bytes(pickle.dumps(([b"x"] * 3, [True, False])))
    with pytest.raises(DataError, match="a.bin: 3 images for 2 pairs"):
        load_encoded(tmp_path / "a.bin")
    encoded = [cv2.imencode(".jpg", im)[1].tobytes() for im in images]
    encoded[2] = encoded[2][:40]
    (tmp_path / "b.bin").write_bytes(pickle.dumps((encoded, [True, False])))
    with pytest.raises(DataError, match="b.bin image 2"):
        read_bin(tmp_path / "b.bin")


def test_set_names_are_the_file_name_without_bin():
    assert set_name("/data/lfw.old.bin") == "lfw.old" and set_name("x/CFP_FP.BIN") == "CFP_FP"
    assert set_name("agedb_30") == "agedb_30"
    for bad, shown in ((".bin", "''"), ("d/.hidden.bin", "'.hidden'"), ("train.bin", "'train'"), ("imgs.bin", "'imgs'")):
        with pytest.raises(DataError, match=f"{shown} cannot name a verification set"):
            set_name(bad)


def test_unique_set_names_refuse_names_equal_but_for_case(tmp_path):
    paths = [tmp_path / "a" / "lfw.bin", tmp_path / "cplfw.bin"]
    assert unique_set_names(paths) == {"lfw": paths[0], "cplfw": paths[1]}
    with pytest.raises(DataError, match=r"lfw.bin and .*b/LFW.bin both map to verification set 'LFW'"):
        unique_set_names(paths + [tmp_path / "b" / "LFW.bin"])


@pytest.mark.parametrize("payload, message", [
    (([b"x"] * 2, [True], 0), "expected a pickled \\(bins, issame_list\\) pair, got tuple"),
    ({"bins": 1}, "expected a pickled \\(bins, issame_list\\) pair, got dict"),
    (({0: b"x", 1: b"y"}, [True]), "expected lists \\(bins, issame_list\\), got \\(dict, list\\)"),
    (([b"x", b"y"], "1"), "expected lists \\(bins, issame_list\\), got \\(list, str\\)"),
    (([b"x", 7], [True]), "image 1 is a int, expected encoded bytes"),
    (([b"x", np.zeros(3, np.float32)], [True]), "image 1 is a ndarray, expected encoded bytes"),
    (([b"x", b"y", b"z", b"w"], [2, 0]), "issame label 0 is 2; labels are 1 \\(genuine\\) or 0 \\(impostor\\)"),
])
def test_malformed_sets_name_the_file_and_the_problem(tmp_path, payload, message):
    path = tmp_path / "cfp_fp.bin"
    path.write_bytes(pickle.dumps(payload, protocol=2))
    with pytest.raises(DataError, match=f"^{path}: {message}"):
        load_encoded(path)


def test_integer_flags_bytearrays_and_a_missing_file(tmp_path):
    path = tmp_path / "calfw.bin"
    path.write_bytes(pickle.dumps(([bytearray(b"x"), b"y", b"z", b"w"], [1, 0]), protocol=2))
    bins, issame = load_encoded(path)
    assert len(bins) == 4 and issame.dtype == bool and issame.tolist() == [True, False]
    with pytest.raises(DataError, match=f"^{tmp_path / 'none.bin'}: cannot read \\(No such file or directory\\)"):
        load_encoded(tmp_path / "none.bin")


def test_write_bin_defaults_to_jpeg_at_quality_95_and_checks_pairs(tmp_path):
    images, _ = faces(2)
    write_bin(tmp_path / "a.bin", images, [True])
    bins, _ = pickle.loads((tmp_path / "a.bin").read_bytes())
    assert bins[0][:3] == b"\xff\xd8\xff"  # JPEG
    assert bins[0] == cv2.imencode(".jpg", images[0], [cv2.IMWRITE_JPEG_QUALITY, 95])[1].tobytes()
    write_bin(tmp_path / "b.bin", images, [True], quality=40)
    low, _ = pickle.loads((tmp_path / "b.bin").read_bytes())
    assert low[0] == cv2.imencode(".jpg", images[0], [cv2.IMWRITE_JPEG_QUALITY, 40])[1].tobytes()
    with pytest.raises(ValueError, match="write_bin: 2 images for 2 pairs"):
        write_bin(tmp_path / "c.bin", images, [True, False])
    assert not (tmp_path / "c.bin").exists()


class _Terminal(io.StringIO):
    """stderr as a terminal: tqdm's `disable=None` shows bars only there."""

    def isatty(self):
        return True


def test_decoding_progress_is_shown_on_a_terminal_only_when_asked(tmp_path, monkeypatch):
    images, _ = faces(6)
    write_bin(tmp_path / "lfw.bin", images, [True, False, True], ext=".png")
    bins, _ = load_encoded(tmp_path / "lfw.bin")
    terminal = _Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    read_bin(tmp_path / "lfw.bin")
    read_bin(tmp_path / "lfw.bin", progress=False)
    for _ in iter_decoded(bins, str(tmp_path / "lfw.bin"), block=4):
        pass
    assert terminal.getvalue() == ""  # the default is no bar
    read_bin(tmp_path / "lfw.bin", progress=True)
    assert "decode lfw.bin: 100%" in terminal.getvalue() and "| 6/6 [" in terminal.getvalue()
    assert "img/s]" in terminal.getvalue()
    terminal.seek(0)
    terminal.truncate()
    for _ in iter_decoded(bins, str(tmp_path / "lfw.bin"), block=4, progress=True):
        pass
    bars = terminal.getvalue()
    assert "| 6/6 [" in bars and "decode lfw.bin" in bars and "img/s]" in bars
    assert "| 4/4 [" not in bars and "| 2/2 [" not in bars  # one bar for the set, none per block
