"""RecordIO records packed by hand (each field written with struct): the reader's header scan, index
checks, split records and the messages that name the file, record and byte (InsightFace's layout)."""
import re
import struct
from pathlib import Path

import cv2
import numpy as np
import pytest

from data_format_fixtures import faces
from facetrain.data.formats.recordio import MAGIC, RecordReader, RecordWriter, write_insightface_rec
from facetrain.errors import DataError


def _png(img):
    return cv2.imencode(".png", img)[1].tobytes()


@pytest.fixture
def images_labels():
    images, labels = faces(12, identities=4)
    return images, (labels * 7) % 4


# --- the vectorised header scan (`labels`) on hand-packed records ---

def _record(flag, label, labels=b"", payload=b"", length=None):
    body = struct.pack("<IfQQ", flag, label, 0, 0) + labels + payload
    n = len(body) if length is None else length
    return struct.pack("<II", MAGIC, n) + body + b"\0" * (-len(body) % 4)


def _hand_rec(tmp_path, records, first_key=1):
    """Records packed by hand at keys first_key.. (no key 0: no header), with their index."""
    raw, index = b"", ""
    tmp_path.mkdir(parents=True, exist_ok=True)
    for k, rec in enumerate(records, start=first_key):
        index += f"{k}\t{len(raw)}\n"
        raw += rec
    (tmp_path / "train.rec").write_bytes(raw)
    (tmp_path / "train.idx").write_text(index)
    return RecordReader(tmp_path)


def test_scanned_labels_are_int64_whatever_the_record_sizes(tmp_path):
    """A 32-byte record (header only) at the end of the file, and a label array of one with no image."""
    one = struct.pack("<f", 7.0)
    reader = _hand_rec(tmp_path / "a", [_record(0, 3.0, payload=b"\x01" * 9), _record(1, 0.0, one), _record(0, 5.0)])
    assert reader.labels.tolist() == [3, 7, 5] and reader.labels.dtype == np.int64
    reader = _hand_rec(tmp_path / "b", [_record(0, 3.0), _record(1, 0.0, one)])  # 36 bytes at the end
    assert reader.labels.tolist() == [3, 7]


@pytest.mark.parametrize("labels, bad_key, shown", [([100.0, 0.0, 2.5], 3, "2.5"), ([1.0, 2.0**31, 0.0], 2, "2147483648.0"),
                                                     ([0.0, 4.0, -3.0], 3, "-3.0")])
def test_every_scanned_label_is_checked(tmp_path, labels, bad_key, shown):
    reader = _hand_rec(tmp_path, [_record(0, v) for v in labels])
    with pytest.raises(DataError, match=f"train.rec: record {bad_key} has label {re.escape(shown)}: a class label"):
        reader.labels


@pytest.mark.parametrize("bad", [
    _record(3, 0.0, struct.pack("<f", 7.0)),  # declares 3 labels, holds 1
    _record(1, 0.0),  # declares 1 label, holds none
    _record(0, 2.0, payload=b"\x01" * 8, length=10**6),  # claims more bytes than the file has
])
def test_a_record_too_short_for_its_header_is_named(tmp_path, bad):
    reader = _hand_rec(tmp_path, [_record(0, 1.0), bad, _record(0, 1.0)])
    with pytest.raises(DataError, match=re.escape("train.rec: record 2 runs past the end of the file or is too short "
                                                  "for its header")):
        reader.labels


def test_a_bad_magic_in_the_middle_is_named_by_the_scan(tmp_path):
    good = _record(0, 1.0)
    reader = _hand_rec(tmp_path, [good, b"\0" * 4 + good[4:], good])
    with pytest.raises(DataError, match=f"train.rec: bad magic in record 2 at byte {len(good)}$"):
        reader.labels


def test_image_arrays_are_written_as_jpeg_at_quality_95_and_only_header_sets_get_a_property_file(tmp_path):
    images, _ = faces(3, identities=3)
    write_insightface_rec(tmp_path / "a", list(images), [2, 0, 1], header=False)
    reader = RecordReader(tmp_path / "a")
    for k in range(3):
        assert reader.read_record(k)[1] == cv2.imencode(".jpg", images[k], [cv2.IMWRITE_JPEG_QUALITY, 95])[1].tobytes()
    assert not (tmp_path / "a" / "property").exists()
    write_insightface_rec(tmp_path / "b", list(images), [2, 0, 1], quality=50)
    reader = RecordReader(tmp_path / "b")
    assert reader.read_record(1)[1] == cv2.imencode(".jpg", images[1], [cv2.IMWRITE_JPEG_QUALITY, 50])[1].tobytes()
    assert (tmp_path / "b" / "property").read_text() == "3,112,112\n"


def test_missing_keys_are_named_whatever_the_index(tmp_path):
    reader = _hand_rec(tmp_path / "three", [_record(0, 1.0), _record(0, 2.0), _record(0, 3.0)])
    for keys, missing in (([99], 99), ([0], 0), ([[2, 99]], 99), ([1, 3, 7], 7)):
        with pytest.raises(DataError, match=f"three/train.rec: no record with key {missing}$"):
            reader.positions(np.array(keys))
    assert reader.positions([3, 1]).tolist() == [2, 0]
    single = _hand_rec(tmp_path / "one", [_record(0, 1.0)])
    with pytest.raises(DataError, match="no record with key 5$"):
        single.read_record(5)
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "train.rec").write_bytes(b"")
    (tmp_path / "empty" / "train.idx").write_text("")
    with pytest.raises(DataError, match="empty/train.rec: no record with key 0$"):
        RecordReader(tmp_path / "empty").positions([0])


def test_one_descriptor_per_reader_reopened_after_close(tmp_path, images_labels):
    images, labels = images_labels
    write_insightface_rec(tmp_path, [_png(i) for i in images[:3]], labels[:3], header=False)
    reader = RecordReader(tmp_path)
    reader.read_image(0)
    fds = Path("/proc/self/fd")
    open_now = len(list(fds.iterdir())) if fds.is_dir() else None
    for k in (1, 2, 0):
        assert reader.read_image(k)[1] == labels[k]
    if open_now is not None:
        assert len(list(fds.iterdir())) == open_now  # no new descriptor per read
    reader.close()
    assert reader.read_image(1)[1] == labels[1]  # opened again on demand
    reader.close()
    if open_now is not None:
        assert len(list(fds.iterdir())) == open_now - 1


def test_a_file_cut_while_open_names_the_record(tmp_path, images_labels):
    images, labels = images_labels
    write_insightface_rec(tmp_path, [_png(i) for i in images[:2]], labels[:2], header=False)
    reader = RecordReader(tmp_path)
    second = int(reader.offsets[1])
    with open(tmp_path / "train.rec", "r+b") as f:
        f.truncate(second + 4)
    with pytest.raises(DataError, match=f"train.rec: record 1 at byte {second} is cut off \\(file ends\\)"):
        reader.read_record(1)


def test_reading_records_that_do_not_fit(tmp_path):
    huge = _record(0, 2.0, payload=b"\x01" * 8, length=10**6)
    short = struct.pack("<II", MAGIC, 10) + b"\x02" * 10 + b"\0\0"
    reader = _hand_rec(tmp_path, [_record(0, 1.0), huge, short, _record(0, 4.0)])
    size = reader.size
    with pytest.raises(DataError, match=re.escape(f"train.rec: record 2 runs past the end of the file (1000000 bytes at "
                                                  f"byte 32, file has {size})")):
        reader.read_record(2)
    with pytest.raises(DataError, match=re.escape("train.rec: record 3 is too short for a header (10 bytes)")):
        reader.read_record(3)
    head, payload = reader.read_record(4)  # a header and nothing else (24 bytes) is a whole record
    assert (head.flag, head.label, payload) == (0, 4.0, b"")


def _split(body: bytes, cut: int) -> bytes:
    """`body` as two physical parts (continuation flags 1 and 3), each padded to 4 bytes."""
    first, rest = body[:cut], body[cut + 4:]
    raw = struct.pack("<II", MAGIC, (1 << 29) | len(first)) + first + b"\0" * (-len(first) % 4)
    return raw + struct.pack("<II", MAGIC, (3 << 29) | len(rest)) + rest + b"\0" * (-len(rest) % 4)


@pytest.mark.parametrize("cut", [25, 26, 27, 28])
def test_split_records_with_any_part_length(tmp_path, cut):
    """Every physical part is padded to 4 bytes, whatever its length."""
    body = struct.pack("<IfQQ", 0, 5.0, 0, 0) + bytes(range(1, 40))
    reader = _hand_rec(tmp_path, [_record(0, 1.0), _split(body, cut), _record(0, 3.0)])
    assert reader.read_raw(2) == body[:cut] + struct.pack("<I", MAGIC) + body[cut + 4:]
    assert reader.labels.tolist() == [1, 5, 3]


def test_a_broken_continuation_names_the_record(tmp_path):
    body = struct.pack("<IfQQ", 0, 5.0, 0, 0) + bytes(range(1, 40))
    split = bytearray(_split(body, 28))
    split[8 + 28:8 + 32] = b"\0\0\0\0"  # the second part's magic
    reader = _hand_rec(tmp_path, [_record(0, 1.0), bytes(split), _record(0, 3.0)])
    with pytest.raises(DataError, match=r"train.rec: bad magic 0x00000000 in record 2 at byte 68$"):
        reader.read_raw(2)


def test_an_index_of_other_writes_is_explained(tmp_path):
    reader_files = _hand_rec(tmp_path / "a", [_record(0, 1.0), _record(0, 2.0)])
    (tmp_path / "a" / "train.idx").write_text("")
    with pytest.raises(DataError, match=re.escape(f"a/train.idx: empty index for train.rec of {reader_files.size} bytes: "
                                                  "they do not belong together")):
        RecordReader(tmp_path / "a")
    _hand_rec(tmp_path / "b", [_record(0, 1.0), _record(0, 2.0)])
    (tmp_path / "b" / "train.idx").write_text("1\t0\n2\t8\n")  # the second offset points into record 1
    with pytest.raises(DataError, match=re.escape("b/train.idx: does not match train.rec (no record at byte 8); the two "
                                                  "files come from different writes: re-create them together")):
        RecordReader(tmp_path / "b")


def test_rec_and_index_paths(tmp_path):
    with pytest.raises(DataError, match=re.escape(f"{tmp_path / 'train.rec'}: RecordIO file not found")):
        RecordReader(tmp_path)
    with RecordWriter(tmp_path / "x" / "y" / "t.rec", tmp_path / "x" / "y" / "t.idx") as w:  # parents made
        w.write(0, 1.0, b"\x01\x02")
        w.write(1, 2.0, b"\x03")
    (tmp_path / "x" / "y" / "t.idx").rename(tmp_path / "elsewhere.idx")
    assert RecordReader(tmp_path / "x" / "y" / "t.rec").idx_path is None  # scanned
    given = RecordReader(tmp_path / "x" / "y" / "t.rec", tmp_path / "elsewhere.idx")
    assert given.idx_path == tmp_path / "elsewhere.idx" and given.keys.tolist() == [0, 1]
    (tmp_path / "elsewhere.idx").write_text("0\t0\n1\t40\n")  # a wrong second offset: the given index is read
    with pytest.raises(DataError, match="elsewhere.idx: does not match t.rec"):
        RecordReader(tmp_path / "x" / "y" / "t.rec", tmp_path / "elsewhere.idx")


def test_index_text_that_is_not_key_offset_pairs(tmp_path):
    _hand_rec(tmp_path, [_record(0, 1.0), _record(0, 2.0)])
    idx = tmp_path / "train.idx"
    idx.write_bytes(b"1\t0\n2\t\xc3\xa9\n")  # non-ASCII bytes are shown replaced, not decoded
    with pytest.raises(DataError, match=re.escape("train.idx: line 2 is '2\\t\ufffd\ufffd', expected")):
        RecordReader(tmp_path)
    idx.write_text("1\t0\n2\n")  # an odd number of values
    with pytest.raises(DataError, match=re.escape(f"{idx}: line 2 is '2', expected `key<TAB>offset`")):
        RecordReader(tmp_path)


def test_index_offsets_must_leave_room_for_a_record_head(tmp_path):
    """An 8-byte empty record ends the file: its offset (size - 8) is in range; one byte further is not."""
    reader = _hand_rec(tmp_path, [_record(0, 1.0), struct.pack("<II", MAGIC, 0)])
    assert reader.keys.tolist() == [1, 2] and reader.offsets.tolist() == [0, 32]
    (tmp_path / "train.idx").write_text("1\t0\n2\t33\n")
    with pytest.raises(DataError, match=re.escape("train.idx: record 2 has offset 33 past the end of train.rec (40 bytes)")):
        RecordReader(tmp_path)


def test_an_empty_set_and_a_headerless_record_0(tmp_path):
    (tmp_path / "e").mkdir()
    (tmp_path / "e" / "train.rec").write_bytes(b"")
    (tmp_path / "e" / "train.idx").write_text("")
    empty = RecordReader(tmp_path / "e")
    assert len(empty) == 0 and empty.keys.dtype == np.int64 and empty.header_record is None
    assert empty.labels.tolist() == [] and empty.num_classes == 0
    # record 0 without labels array nor image is not an InsightFace header (flag 0): just a record
    plain = _hand_rec(tmp_path / "p", [_record(0, 1.0), _record(0, 2.0)], first_key=0)
    assert plain.header_record is None and plain.image_keys.tolist() == [0, 1]


def test_the_index_must_end_where_the_file_ends(tmp_path):
    _hand_rec(tmp_path, [_record(0, 1.0), _record(0, 2.0)])
    with open(tmp_path / "train.rec", "ab") as f:
        f.write(b"\0" * 12)
    with pytest.raises(DataError, match=re.escape("train.idx: does not match train.rec: its last record ends at byte 64, "
                                                  "the file has 76 bytes; the two files come from different writes")):
        RecordReader(tmp_path)


def test_a_three_part_record_at_the_end_of_an_indexed_file(tmp_path):
    body = struct.pack("<IfQQ", 0, 5.0, 0, 0) + bytes(range(1, 60))
    first, middle, last = body[:28], body[32:44], body[48:]
    raw = struct.pack("<II", MAGIC, (1 << 29) | len(first)) + first
    raw += struct.pack("<II", MAGIC, (2 << 29) | len(middle)) + middle
    raw += struct.pack("<II", MAGIC, (3 << 29) | len(last)) + last + b"\0" * (-len(last) % 4)
    reader = _hand_rec(tmp_path, [_record(0, 1.0), raw])
    magic = struct.pack("<I", MAGIC)
    assert reader.read_raw(2) == first + magic + middle + magic + last


def test_a_record_running_a_few_bytes_past_the_end(tmp_path):
    """Only the last record by offset is checked when opening; an earlier one whose length reaches
    4 bytes past the end of the file is caught when read or scanned."""
    records = [_record(0, 1.0, payload=b"\x01" * 8), _record(0, 2.0), _record(0, 3.0)]
    size = sum(len(r) for r in records)
    records[0] = records[0][:4] + struct.pack("<I", size - 8 + 4) + records[0][8:]
    reader = _hand_rec(tmp_path, records)
    with pytest.raises(DataError, match=f"train.rec: record 1 runs past the end of the file \\({size - 4} bytes at byte 0"):
        reader.read_record(1)
    with pytest.raises(DataError, match="train.rec: record 1 runs past the end of the file or is too short"):
        reader.labels


def test_a_scan_names_trailing_bytes_and_short_records(tmp_path):
    raw = _record(0, 1.0) + _record(0, 2.0)
    (tmp_path / "a.rec").write_bytes(raw + b"\0" * 4)
    with pytest.raises(DataError, match=re.escape("a.rec: 4 trailing bytes after record 1 (truncated file?)")):
        RecordReader(tmp_path / "a.rec")
    (tmp_path / "b.rec").write_bytes(raw[:-4])  # the second record's last 4 bytes missing
    with pytest.raises(DataError, match="b.rec: record 1 runs past the end of the file"):
        RecordReader(tmp_path / "b.rec")


def test_record_headers_keep_both_ids_and_a_short_label_array_is_named(tmp_path):
    with RecordWriter(tmp_path / "train.rec", tmp_path / "train.idx") as w:
        w.write(4, 1.0, b"\x01\x02", id2=77)
    head, payload = RecordReader(tmp_path).read_record(4)
    assert (head.flag, head.label, head.id, head.id2, payload) == (0, 1.0, 4, 77, b"\x01\x02")
    reader = _hand_rec(tmp_path / "short", [_record(0, 1.0), _record(3, 0.0, struct.pack("<f", 7.0))])
    with pytest.raises(DataError, match=re.escape("short/train.rec: record 2 declares 3 labels but is only 28 bytes")):
        reader.read_record(2)
    reader.close()
    reader.close()  # closing twice is harmless
