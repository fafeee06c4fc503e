"""Formats against bytes written by hand from the published layouts (.bin, RecordIO, memfile), both ways,
over random sizes and contents: what we read is what the format says, what we write is the format.

- `.bin`: `pickle.dumps((bins, issame_list))`, bins = 2N encoded images (bytes or uint8 arrays);
- RecordIO: per record `<I` magic 0xced7230a, `<I` lrecord (upper 3 bits continuation, lower 29
  length), payload, zero padding to 4; payload = `<IfQQ` (flag, label, id, id2), `flag` float32
  labels when flag > 0, then the image; `.idx` lines `key\\toffset`;
- memfile: the raw C-order array plus `<file>.conf` = JSON {"shape": [...], "dtype": name}.
"""
from __future__ import annotations

import json
import pickle
import struct

import cv2
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from facetrain.data.formats.bin import find_unreadable, iter_decoded, read_bin, write_bin
from facetrain.data.formats.memfile import open_memfile, write_memfile
from facetrain.data.formats.recordio import RecordReader, RecordWriter, write_insightface_rec
from facetrain.errors import DataError

RECORD_MAGIC = 0xCED7230A  # typed in from mxnet's recordio.py
SETTINGS = settings(max_examples=15, deadline=None, derandomize=True)


def _faces(seed: int, n: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, 112, 112, 3), dtype=np.uint8)


def _png(img: np.ndarray) -> bytes:
    return cv2.imencode(".png", img)[1].tobytes()


@SETTINGS
@given(seed=st.integers(0, 2**31), n_pairs=st.integers(2, 4), as_arrays=st.booleans(), numpy_flags=st.booleans(),
       protocol=st.sampled_from([2, 4]))
def test_bin_read_from_a_hand_made_pickle(tmp_path_factory, seed, n_pairs, as_arrays, numpy_flags, protocol):
    images = _faces(seed, 2 * n_pairs)
    # a set holds both kinds of pair (check_issame); where they fall is random
    issame = [bool(b) for b in np.random.default_rng(seed + 1).permutation([1, 0] + [1] * (n_pairs - 2))]
    bins = [np.frombuffer(_png(i), np.uint8) if as_arrays else _png(i) for i in images]
    flags = np.array(issame) if numpy_flags else issame
    path = tmp_path_factory.mktemp("bin") / "lfw.bin"
    path.write_bytes(pickle.dumps((bins, flags), protocol=protocol))
    vset = read_bin(path)
    assert vset.name == "lfw"
    np.testing.assert_array_equal(vset.images, images)
    assert vset.issame.dtype == bool and vset.issame.tolist() == issame


@SETTINGS
@given(seed=st.integers(0, 2**31), n_pairs=st.integers(1, 4))
def test_bin_written_is_a_plain_pickle_of_bytes_and_bools(tmp_path_factory, seed, n_pairs):
    images = _faces(seed, 2 * n_pairs)
    issame = [bool(b) for b in np.random.default_rng(seed + 1).integers(0, 2, n_pairs)]
    path = tmp_path_factory.mktemp("bin") / "agedb_30.bin"
    write_bin(path, images, np.array(issame), ext=".png")
    raw = path.read_bytes()
    assert raw[:2] == b"\x80\x04"  # pickle protocol 4
    bins, flags = pickle.loads(raw, encoding="bytes")  # how insightface / AdaFace load it
    assert type(flags) is list and all(type(f) is bool for f in flags) and flags == issame
    assert type(bins) is list and all(type(b) is bytes for b in bins) and len(bins) == 2 * n_pairs
    for b, img in zip(bins, images):
        np.testing.assert_array_equal(cv2.imdecode(np.frombuffer(b, np.uint8), cv2.IMREAD_COLOR), img)


def _record(key: int, label, payload: bytes) -> bytes:
    """One RecordIO record, packed by hand: scalar label (flag 0) or a list (flag = its length)."""
    if isinstance(label, list):
        body = struct.pack("<IfQQ", len(label), 0.0, key, 0) + struct.pack(f"<{len(label)}f", *label) + payload
    else:
        body = struct.pack("<IfQQ", 0, float(label), key, 0) + payload
    return struct.pack("<II", RECORD_MAGIC, len(body)) + body + b"\0" * (-len(body) % 4)


RECORDS = st.lists(st.tuples(st.one_of(st.integers(0, 70000), st.lists(st.integers(0, 70000), min_size=1, max_size=3)),
                             st.binary(min_size=1, max_size=37)), min_size=1, max_size=8)  # empty = a header record


@SETTINGS
@given(records=RECORDS, with_index=st.booleans())
def test_recordio_read_from_hand_packed_bytes(tmp_path_factory, records, with_index):
    folder = tmp_path_factory.mktemp("rec")
    data, index = b"", ""
    for key, (label, payload) in enumerate(records):
        index += f"{key}\t{len(data)}\n"
        data += _record(key, [float(v) for v in label] if isinstance(label, list) else label, payload)
    (folder / "x.rec").write_bytes(data)
    if with_index:
        (folder / "x.idx").write_text(index)
    reader = RecordReader(folder / "x.rec")
    assert reader.keys.tolist() == list(range(len(records)))
    assert reader.labels.tolist() == [lab[0] if isinstance(lab, list) else lab for lab, _ in records]
    for key, (label, payload) in enumerate(records):
        head, got = reader.read_record(key)
        assert got == payload and head.id == key
        if isinstance(label, list):
            assert head.flag == len(label) and head.label.tolist() == label
        else:
            assert head.flag == 0 and head.label == label


@SETTINGS
@given(records=RECORDS)
def test_recordio_written_is_the_published_layout(tmp_path_factory, records):
    folder = tmp_path_factory.mktemp("rec")
    with RecordWriter(folder / "y.rec", folder / "y.idx") as writer:
        for key, (label, payload) in enumerate(records):
            writer.write(key, [float(v) for v in label] if isinstance(label, list) else float(label), payload)
    expected, index = b"", ""
    for key, (label, payload) in enumerate(records):
        index += f"{key}\t{len(expected)}\n"
        expected += _record(key, [float(v) for v in label] if isinstance(label, list) else label, payload)
    assert (folder / "y.rec").read_bytes() == expected
    assert (folder / "y.idx").read_text() == index


def test_insightface_header_layout_packed_by_hand(tmp_path):
    """Record 0: flag 2, label (first identity record, end); images 1..N grouped by class; then one
    record per identity with (first image, end image)."""
    images = _faces(5, 5)
    labels = [1, 0, 1, 2, 0]
    write_insightface_rec(tmp_path, [_png(i) for i in images], labels)
    order = [1, 4, 0, 2, 3]  # stable sort by label
    expected, index = b"", ""
    records = [(0, [6.0, 9.0], b"")]
    records += [(k + 1, labels[i], _png(images[i])) for k, i in enumerate(order)]
    records += [(6, [1.0, 3.0], b""), (7, [3.0, 5.0], b""), (8, [5.0, 6.0], b"")]
    for key, label, payload in records:
        index += f"{key}\t{len(expected)}\n"
        expected += _record(key, label, payload)
    assert (tmp_path / "train.rec").read_bytes() == expected
    assert (tmp_path / "train.idx").read_text() == index
    reader = RecordReader(tmp_path)
    assert reader.image_keys.tolist() == [1, 2, 3, 4, 5] and reader.num_classes == 3
    assert reader.labels.tolist() == [0, 0, 1, 1, 2]


def test_a_split_record_is_joined_with_the_magic(tmp_path):
    """mxnet splits a record at an aligned magic number inside it: cflag 1 (first), 3 (last)."""
    magic = struct.pack("<I", RECORD_MAGIC)
    body = struct.pack("<IfQQ", 0, 7.0, 0, 0) + b"abcd" + magic + b"efgh"
    first, rest = body[:28], body[32:]
    raw = struct.pack("<II", RECORD_MAGIC, (1 << 29) | len(first)) + first
    raw += struct.pack("<II", RECORD_MAGIC, (3 << 29) | len(rest)) + rest
    (tmp_path / "s.rec").write_bytes(raw)
    (tmp_path / "s.idx").write_text("0\t0\n")
    reader = RecordReader(tmp_path / "s.rec")
    head, payload = reader.read_record(0)
    assert head.label == 7.0 and payload == b"abcd" + magic + b"efgh"


DTYPES = st.sampled_from(["uint8", "float32", "int64", "float16"])
SHAPES = st.lists(st.integers(0, 5), min_size=1, max_size=4)


@SETTINGS
@given(shape=SHAPES, dtype=DTYPES, seed=st.integers(0, 2**31))
def test_memfile_read_from_hand_written_bytes_and_conf(tmp_path_factory, shape, dtype, seed):
    array = (np.random.default_rng(seed).random(shape) * 200).astype(dtype)
    path = tmp_path_factory.mktemp("mem") / "set.dat"
    path.write_bytes(array.tobytes())
    (path.parent / "set.dat.conf").write_text(json.dumps({"shape": shape, "dtype": dtype}))
    got = open_memfile(path)
    assert got.shape == tuple(shape) and got.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(np.asarray(got), array)


@SETTINGS
@given(shape=SHAPES, dtype=DTYPES, seed=st.integers(0, 2**31))
def test_memfile_written_is_raw_bytes_and_a_json_conf(tmp_path_factory, shape, dtype, seed):
    array = (np.random.default_rng(seed).random(shape) * 200).astype(dtype)
    path = tmp_path_factory.mktemp("mem") / "set.dat"
    write_memfile(path, array, chunk=2)
    assert path.read_bytes() == array.tobytes()
    assert json.loads((path.parent / "set.dat.conf").read_text()) == {"shape": shape, "dtype": dtype}


def test_memfile_size_mismatch_is_refused(tmp_path):
    path = tmp_path / "x.dat"
    path.write_bytes(bytes(10))
    (tmp_path / "x.dat.conf").write_text(json.dumps({"shape": [3, 4], "dtype": "uint8"}))
    with pytest.raises(DataError, match="10 bytes"):
        open_memfile(path)


def test_bin_streamed_decoding_and_unreadable_images():
    images = _faces(9, 6)
    bins = [_png(i) for i in images]
    blocks = [b.copy() for b in iter_decoded(bins, "x.bin", block=4)]  # the buffer is reused between blocks
    assert [len(b) for b in blocks] == [4, 2] and all(b.dtype == np.uint8 for b in blocks)
    np.testing.assert_array_equal(np.concatenate(blocks), images)
    assert find_unreadable(bins, "x.bin") == []
    bins[1], bins[5] = b"not an image", np.zeros(0, np.uint8)
    assert find_unreadable(bins, "x.bin") == ["x.bin image 1", "x.bin image 5"]
    with pytest.raises(DataError, match="x.bin image 5: cannot decode"):  # numbered in the whole set
        for _ in iter_decoded([_png(i) for i in images[:5]] + [bins[5]], "x.bin", block=3):  # 2nd block: 3..5
            pass
