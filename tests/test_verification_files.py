"""Verification-set files under hostile conditions: names, huge declarations, failed re-conversions."""
import pickle
import struct
import subprocess
import sys

import cv2
import numpy as np
import pytest

from data_format_fixtures import faces
from facetrain.cli import main
from facetrain.data.formats.bin import read_bin, set_name, write_bin
from facetrain.data.tools.convert import bin_to_memfile
from facetrain.data.formats.memfile import load_validation_sets, open_memfile
from facetrain.data.guards.safe_pickle import safe_loads
from facetrain.errors import DataError


def test_set_names_come_from_the_whole_stem(tmp_path):
    images, _ = faces(8)
    write_bin(tmp_path / "lfw.bin", images[:4], [True, False])
    write_bin(tmp_path / "lfw.old.bin", images[4:], [False, True])
    sets = load_validation_sets(tmp_path)
    assert sorted(sets) == ["lfw", "lfw.old"]
    assert sets["lfw"].issame.tolist() == [True, False] and sets["lfw.old"].issame.tolist() == [False, True]
    assert main(["convert", "-r", str(tmp_path), "--make_validation_memfiles", "--quiet"]) == 0
    np.testing.assert_array_equal(open_memfile(tmp_path / "lfw.dat"), read_bin(tmp_path / "lfw.bin").images)
    np.testing.assert_array_equal(open_memfile(tmp_path / "lfw.old.dat"), read_bin(tmp_path / "lfw.old.bin").images)


@pytest.mark.parametrize("name", ["..bin", ".bin", "train.bin"])
def test_names_that_would_write_hidden_or_foreign_outputs_are_refused(tmp_path, capsys, name):
    images, _ = faces(4)
    write_bin(tmp_path / name, images, [True, False])
    out = tmp_path / "out"
    assert main(["convert", "-r", str(tmp_path), "--make_validation_memfiles", "--out", str(out), "--quiet"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and name in err and len(err.strip().splitlines()) == 1
    assert not out.exists()
    with pytest.raises(DataError, match="cannot name a verification set"):
        set_name(tmp_path / name)


def test_two_files_mapping_to_one_set_name_is_an_error_naming_both(tmp_path):
    images, _ = faces(4)
    write_bin(tmp_path / "lfw.bin", images, [True, False])
    write_bin(tmp_path / "LFW.bin", images, [True, True])
    with pytest.raises(DataError, match=r"LFW.bin and .*lfw.bin both map to verification set"):
        load_validation_sets(tmp_path)


HUGE_PICKLES = {
    "bytes8": b"\x80\x04\x8e" + struct.pack("<Q", 10 ** 12) + b"abc",
    "bytes_of_int": b"\x80\x02c__builtin__\nbytes\n\x8a\x05\x00\x00\x00\x00\x7f\x85R.",
    "bytearray_of_int": b"\x80\x04c__builtin__\nbytearray\nJ\x00\x00\x00\x7f\x85R.",
}


@pytest.mark.parametrize("kind", sorted(HUGE_PICKLES))
def test_pickles_declaring_huge_objects_are_data_errors_within_bounded_memory(kind):
    code = ("import resource, sys; resource.setrlimit(resource.RLIMIT_AS, (3 << 30, 3 << 30));"
            "from facetrain.data.guards.safe_pickle import safe_loads; from facetrain.errors import DataError\n"
            f"try:\n    safe_loads({HUGE_PICKLES[kind]!r}, 'x.bin')\n"
            "except DataError as e:\n    print(e)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "x.bin: corrupt pickle: it declares an object larger than the file" in proc.stdout


def test_python2_builtin_names_load_in_any_protocol():
    data = b"\x80\x04c__builtin__\nbytearray\nC\x02ab\x85R."  # protocol 4 header, GLOBAL of a Python 2 name
    assert safe_loads(data, "x.bin") == bytearray(b"ab")


def test_images_over_the_pixel_limit_are_refused_before_decoding(tmp_path):
    huge = cv2.imencode(".png", np.zeros((20000, 20000), np.uint8))[1].tobytes()  # 400 Mpx in ~0.4 MB
    small = cv2.imencode(".jpg", faces(1)[0][0])[1].tobytes()
    (tmp_path / "lfw.bin").write_bytes(pickle.dumps(([small, huge, small, small], [True, False]), protocol=4))
    code = ("import resource; resource.setrlimit(resource.RLIMIT_AS, (3 << 30, 3 << 30));"
            "from facetrain.cli import main; import sys;"
            f"sys.exit(main(['info', {str(tmp_path / 'lfw.bin')!r}]))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr  # info lists it as unreadable, within 3 GB of address space
    assert proc.stdout.strip().endswith("lfw.bin image 1")
    with pytest.raises(DataError, match=r"lfw.bin image 1: image of 20000x20000 pixels is over the limit"):
        read_bin(tmp_path / "lfw.bin")


def test_a_failed_reconversion_keeps_the_old_memfile_valid(tmp_path, monkeypatch):
    images, _ = faces(8)
    write_bin(tmp_path / "lfw.bin", images, [True, False, True, False])
    bin_to_memfile(tmp_path / "lfw.bin", tmp_path)
    old = np.array(open_memfile(tmp_path / "lfw.dat"))
    write_bin(tmp_path / "lfw.bin", images[::-1], [False, True, True, True])

    import facetrain.data.tools.convert as convert

    def failing_decode(bins, source, **kwargs):  # the disk fills up halfway through the new data
        yield np.zeros((2, 112, 112, 3), np.uint8)
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(convert, "iter_decoded", failing_decode)
    with pytest.raises(OSError):
        bin_to_memfile(tmp_path / "lfw.bin", tmp_path)
    sets = load_validation_sets(tmp_path)
    np.testing.assert_array_equal(sets["lfw"].images, old)
    assert sets["lfw"].issame.tolist() == [True, False, True, False]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["lfw.bin", "lfw.dat", "lfw.dat.conf", "lfw_list.npy"]


def test_a_killed_reconversion_keeps_the_old_memfile_and_its_leftovers_go_next_time(tmp_path):
    images, _ = faces(8)
    write_bin(tmp_path / "lfw.bin", images, [True, False, True, False])
    bin_to_memfile(tmp_path / "lfw.bin", tmp_path)
    old = np.array(open_memfile(tmp_path / "lfw.dat"))
    write_bin(tmp_path / "lfw.bin", images[::-1], [False, True, True, True])
    env = {**__import__("os").environ, "FACETRAIN_CRASH_AFTER_WRITES": "1"}  # mid-way through the data file
    proc = subprocess.run([sys.executable, "-m", "facetrain", "convert", "-r", str(tmp_path),
                           "--make_validation_memfiles", "--quiet"], env=env, capture_output=True, timeout=120)
    assert proc.returncode == -9
    assert any(".tmp-" in p.name for p in tmp_path.iterdir())
    np.testing.assert_array_equal(load_validation_sets(tmp_path)["lfw"].images, old)
    assert main(["convert", "-r", str(tmp_path), "--make_validation_memfiles", "--quiet"]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["lfw.bin", "lfw.dat", "lfw.dat.conf", "lfw_list.npy"]
    np.testing.assert_array_equal(load_validation_sets(tmp_path)["lfw"].images, read_bin(tmp_path / "lfw.bin").images)
