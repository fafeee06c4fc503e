import multiprocessing
import pickle
import re
import struct

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
    return images, (labels * 7) % 4  # not already grouped


def test_insightface_layout(tmp_path, images_labels):
    images, labels = images_labels
    rec = write_insightface_rec(tmp_path, [_png(i) for i in images], labels)
    reader = RecordReader(tmp_path)
    assert reader.header_record is not None and reader.header_record.flag == 2
    assert reader.image_keys.tolist() == list(range(1, 13)) and len(reader) == 1 + 12 + 4
    assert reader.num_classes == 4 and (tmp_path / "property").read_text().strip() == "4,112,112"
    order = np.argsort(labels, kind="stable")
    assert reader.labels.tolist() == labels[order].tolist()
    for k, i in zip(reader.image_keys, order):
        bgr, label = reader.read_image(int(k))
        np.testing.assert_array_equal(bgr, images[i])
        assert label == labels[i]
    head, payload = reader.read_record(13)  # first identity record: (first image, end image)
    assert payload == b"" and head.label.tolist() == [1.0, 4.0]
    assert rec == tmp_path / "train.rec"


def test_headerless_with_and_without_index(tmp_path, images_labels):
    images, labels = images_labels
    write_insightface_rec(tmp_path / "a.rec", [_png(i) for i in images], labels, header=False)
    with_idx = RecordReader(tmp_path / "a.rec")
    assert with_idx.header_record is None and with_idx.labels.tolist() == labels.tolist()
    (tmp_path / "a.idx").unlink()
    scanned = RecordReader(tmp_path / "a.rec")
    assert scanned.idx_path is None and scanned.keys.tolist() == list(range(12))
    assert scanned.labels.tolist() == labels.tolist()
    np.testing.assert_array_equal(scanned.read_image(5)[0], images[5])


def test_label_arrays_and_split_records(tmp_path, images_labels):
    images, _ = images_labels
    payload = _png(images[0])
    with RecordWriter(tmp_path / "t.rec", tmp_path / "t.idx") as w:
        w.write(0, [3.0, 9.0], payload)  # flag 2: the class is the first label
    assert RecordReader(tmp_path / "t.rec").read_image(0)[1] == 3
    assert RecordReader(tmp_path / "t.rec").labels.tolist() == [3]
    # a record split by the writer at an aligned magic number: parts joined with the magic
    body = struct.pack("<IfQQ", 0, 5.0, 0, 0) + payload
    body += b"\0" * (-len(body) % 4)
    cut = 24 + 4 * ((len(body) - 24) // 8)
    first, rest = body[:cut], body[cut + 4:]
    raw = struct.pack("<II", MAGIC, (1 << 29) | len(first)) + first + b"\0" * (-len(first) % 4)
    raw += struct.pack("<II", MAGIC, (3 << 29) | len(rest)) + rest + b"\0" * (-len(rest) % 4)
    (tmp_path / "s.rec").write_bytes(raw)
    reader = RecordReader(tmp_path / "s.rec")  # no .idx: sequential scan sees one logical record
    assert reader.keys.tolist() == [0]
    assert reader.read_raw(0) == body[:cut] + struct.pack("<I", MAGIC) + rest


def test_bad_magic_names_file_and_record(tmp_path, images_labels):
    images, labels = images_labels
    write_insightface_rec(tmp_path, [_png(i) for i in images[:4]], labels[:4], header=False)
    offsets = [int(line.split("\t")[1]) for line in (tmp_path / "train.idx").read_text().split("\n") if line]
    data = bytearray((tmp_path / "train.rec").read_bytes())
    data[offsets[2]:offsets[2] + 4] = b"\0\0\0\0"
    (tmp_path / "train.rec").write_bytes(bytes(data))
    reader = RecordReader(tmp_path)
    with pytest.raises(DataError, match=r"train.rec: bad magic in record 2"):
        reader.labels
    with pytest.raises(DataError, match=r"train.rec: bad magic 0x00000000 in record 2"):
        reader.read_image(2)
    (tmp_path / "train.idx").unlink()
    with pytest.raises(DataError, match=r"train.rec: bad magic 0x00000000 at byte \d+ \(record 2\)"):
        RecordReader(tmp_path)


def test_record_past_eof_and_index_past_eof(tmp_path, images_labels):
    images, labels = images_labels
    write_insightface_rec(tmp_path, [_png(i) for i in images[:4]], labels[:4], header=False)
    data = (tmp_path / "train.rec").read_bytes()
    (tmp_path / "train.rec").write_bytes(data[:-50])
    with pytest.raises(DataError, match=r"train.rec: record 3 runs past the end of the file"):
        RecordReader(tmp_path)
    (tmp_path / "train.idx").unlink()
    with pytest.raises(DataError, match=r"train.rec: record 3 runs past the end of the file"):
        RecordReader(tmp_path)
    write_insightface_rec(tmp_path, [_png(i) for i in images[:4]], labels[:4], header=False)
    (tmp_path / "train.rec").write_bytes(data)
    with open(tmp_path / "train.idx", "a") as f:
        f.write(f"4\t{len(data) + 100}\n")
    with pytest.raises(DataError, match=r"train.idx: record 4 has offset \d+ past the end of train.rec"):
        RecordReader(tmp_path)


def test_writer_failure_leaves_nothing(tmp_path):
    with pytest.raises(RuntimeError):
        with RecordWriter(tmp_path / "x.rec", tmp_path / "x.idx") as w:
            w.write(0, 1.0, b"abc")
            raise RuntimeError
    assert list(tmp_path.iterdir()) == []


def _read_in_child(reader, keys, queue):
    queue.put([reader.read_image(k)[1] for k in keys])


def test_reader_works_after_pickle_and_fork(tmp_path, images_labels):
    images, labels = images_labels
    write_insightface_rec(tmp_path, [_png(i) for i in images], labels, header=False)
    reader = RecordReader(tmp_path)
    reader.read_image(0)  # open the descriptor in the parent first
    assert pickle.loads(pickle.dumps(reader)).read_image(3)[1] == labels[3]
    ctx = multiprocessing.get_context("fork")  # the child inherits the parent's open descriptor
    queue = ctx.Queue()
    child = ctx.Process(target=_read_in_child, args=(reader, [1, 2], queue))
    child.start()
    assert queue.get(timeout=30) == labels[1:3].tolist()
    child.join()


# --- hostile or inconsistent files ---

def _one_image_rec(tmp_path, label, key=0):
    with RecordWriter(tmp_path / "train.rec", tmp_path / "train.idx") as w:
        w.write(key, label, _png(faces(1, identities=1)[0][0]))
    return tmp_path


@pytest.mark.parametrize("label", [float("nan"), float("inf"), -float("inf"), 2.5, -1.0, 1e12])
def test_labels_that_are_not_class_numbers_are_refused(tmp_path, label):
    reader = RecordReader(_one_image_rec(tmp_path, label))
    with pytest.raises(DataError, match=r"train.rec: record 0 has label .*whole number >= 0"):
        reader.labels
    with pytest.raises(DataError, match=r"record 0 has label"):
        reader.read_image(0)


def test_header_with_nan_label_is_a_data_error(tmp_path, images_labels):
    images, labels = images_labels
    with RecordWriter(tmp_path / "train.rec", tmp_path / "train.idx") as w:
        w.write(0, [float("nan"), 3.0], b"")
        w.write(1, 0.0, _png(images[0]))
    with pytest.raises(DataError, match=r"header record 0 has labels"):
        RecordReader(tmp_path)


def test_header_class_count_must_match_the_identity_records(tmp_path, images_labels):
    images, labels = images_labels
    with RecordWriter(tmp_path / "train.rec", tmp_path / "train.idx") as w:
        w.write(0, [3.0, 1e12], b"")  # declares ~1e12 identities; there are none
        w.write(1, 0.0, _png(images[0]))
        w.write(2, 0.0, _png(images[1]))
    with pytest.raises(DataError, match=r"declares \d+ identities .* does not match the data"):
        RecordReader(tmp_path)


def test_duplicate_and_non_numeric_index_lines_are_refused(tmp_path, images_labels):
    images, labels = images_labels
    write_insightface_rec(tmp_path, [_png(i) for i in images[:3]], labels[:3], header=False)
    idx = tmp_path / "train.idx"
    lines = idx.read_text().splitlines()
    idx.write_text("\n".join(lines + [lines[1]]) + "\n")
    with pytest.raises(DataError, match=r"train.idx: key 1 is listed more than once"):
        RecordReader(tmp_path)
    idx.write_text("\n".join(lines[:2] + ["2\tabc"]) + "\n")
    with pytest.raises(DataError, match=r"train.idx: line 3 is '2\\tabc'"):
        RecordReader(tmp_path)


def test_a_rec_beside_the_index_of_other_data_is_detected(tmp_path, images_labels):
    images, labels = images_labels
    write_insightface_rec(tmp_path / "old", [_png(i) for i in images[:4]], labels[:4])
    write_insightface_rec(tmp_path / "new", [_png(i) for i in images], labels)
    (tmp_path / "new" / "train.idx").write_bytes((tmp_path / "old" / "train.idx").read_bytes())
    with pytest.raises(DataError, match=r"train.idx: does not match train.rec"):
        RecordReader(tmp_path / "new")


def test_rewriting_a_pair_never_leaves_the_old_index_beside_the_new_rec(tmp_path, images_labels):
    """The commit removes the old index before the new .rec lands: a kill in between leaves a .rec that scans."""
    images, labels = images_labels
    write_insightface_rec(tmp_path, [_png(i) for i in images[:4]], labels[:4])
    seen = []
    real_replace = __import__("os").replace

    def spy(src, dst):
        seen.append((str(dst).rsplit("/", 1)[-1], sorted(p.name for p in tmp_path.iterdir() if ".tmp-" not in p.name)))
        real_replace(src, dst)

    import facetrain.io_utils as io_utils
    monkey = pytest.MonkeyPatch()
    monkey.setattr(io_utils.os, "replace", spy)
    try:
        write_insightface_rec(tmp_path, [_png(i) for i in images], labels)
    finally:
        monkey.undo()
    assert seen[0] == ("train.rec", ["train.rec"])  # old idx and property already gone
    assert seen[1][0] == "train.idx"
    assert RecordReader(tmp_path).num_classes == 4 and (tmp_path / "property").read_text() == "4,112,112\n"


def test_index_lines_are_quoted_cut_at_60_characters_and_overflow_is_malformed(tmp_path, images_labels):
    images, labels = images_labels
    write_insightface_rec(tmp_path, [_png(i) for i in images[:2]], labels[:2], header=False)
    idx = tmp_path / "train.idx"
    long_line = "1\t" + "7x" * 50
    idx.write_text(f"0\t0\n{long_line}\n")
    with pytest.raises(DataError, match=re.escape(f"train.idx: line 2 is {long_line[:60]!r}, expected `key<TAB>offset`")):
        RecordReader(tmp_path)
    idx.write_text("0\t0\n1\t99999999999999999999999\n")  # whole numbers, but not int64 ones
    with pytest.raises(DataError, match=re.escape("train.idx: malformed index (expected `key<TAB>offset` lines)")):
        RecordReader(tmp_path)


def test_closing_an_unpickled_copy_leaves_the_original_open(tmp_path, images_labels):
    images, labels = images_labels
    write_insightface_rec(tmp_path, [_png(i) for i in images[:3]], labels[:3], header=False)
    reader = RecordReader(tmp_path)
    reader.read_image(0)
    copy = pickle.loads(pickle.dumps(reader))
    assert copy.read_image(1)[1] == labels[1]
    copy.close()
    assert reader.read_image(2)[1] == labels[2]
    reader.close()


def _header_rec(tmp_path, header_labels, n_images=2, extra_keys=()):
    """Record 0 = a header with `header_labels`, then images 1..n_images, then empty records at
    `extra_keys` (identity records or others)."""
    png = _png(faces(1, identities=1)[0][0])
    with RecordWriter(tmp_path / "train.rec", tmp_path / "train.idx") as w:
        w.write(0, header_labels, b"")
        for k in range(1, n_images + 1):
            w.write(k, 0.0, png)
        for k in extra_keys:
            w.write(k, [1.0, 2.0], b"")
    return tmp_path


@pytest.mark.parametrize("header", [[2.5, 5.0], [3.0, float("inf")], [3.0], [5.0, 3.0], [0.0, 3.0]])
def test_header_labels_must_be_a_whole_first_end_range(tmp_path, header):
    shown = re.escape(str(np.array(header, np.float32).tolist()))
    with pytest.raises(DataError, match=f"train.rec: header record 0 has labels {shown}, expected "
                                        r"\(first identity record, end\) with 1 <= first <= end$"):
        RecordReader(_header_rec(tmp_path, header, extra_keys=(3, 4)))


def test_header_ranges_at_their_limits(tmp_path):
    """first = end: no identity records; first = 1: no images; a third label and records after the
    identity block are ignored."""
    assert RecordReader(_header_rec(tmp_path / "a", [3.0, 3.0])).num_classes == 1  # labels 0 only
    empty = RecordReader(_header_rec(tmp_path / "b", [1.0, 1.0], n_images=0))
    assert empty.image_keys.tolist() == [] and empty.num_classes == 0
    for third in (0.5, float("nan")):
        extra = RecordReader(_header_rec(tmp_path / f"c{third}", [3.0, 5.0, third], extra_keys=(3, 4, 5)))
        assert extra.image_keys.tolist() == [1, 2] and extra.num_classes == 2


def test_header_identity_count_message(tmp_path):
    with pytest.raises(DataError, match=re.escape("train.rec: header record 0 declares 3 identities (records 3..5) "
                                                  "but 2 of those records exist: the class count does not match")):
        RecordReader(_header_rec(tmp_path, [3.0, 6.0], extra_keys=(3, 4)))


def test_a_scan_names_a_record_cut_after_its_head(tmp_path, images_labels):
    images, labels = images_labels
    write_insightface_rec(tmp_path / "a.rec", [_png(i) for i in images[:2]], labels[:2], header=False)
    (tmp_path / "a.idx").unlink()
    with open(tmp_path / "a.rec", "ab") as f:
        f.write(struct.pack("<II", MAGIC, 100))  # the head of a third record, its 100 bytes missing
    with pytest.raises(DataError, match="a.rec: record 2 runs past the end of the file"):
        RecordReader(tmp_path / "a.rec")
    with open(tmp_path / "b.rec", "wb") as f:  # an empty last record (8 bytes, length 0) is whole
        f.write((tmp_path / "a.rec").read_bytes()[:-8] + struct.pack("<II", MAGIC, 0))
    assert RecordReader(tmp_path / "b.rec").keys.tolist() == [0, 1, 2]


def test_class_labels_up_to_the_largest_int32(tmp_path):
    """2^31 - 128 is the largest float32 below 2^31: a valid class; 2^31 itself does not fit an int32."""
    assert RecordReader(_one_image_rec(tmp_path / "a", 2.0**31 - 128)).read_image(0)[1] == 2**31 - 128
    assert RecordReader(_one_image_rec(tmp_path / "b", 100.0)).read_image(0)[1] == 100
    with pytest.raises(DataError, match=r"train.rec: record 0 has label 2147483648.0: a class label must be a whole"):
        RecordReader(_one_image_rec(tmp_path / "c", 2.0**31)).read_image(0)


def test_read_image_with_a_one_label_array_and_a_corrupt_image(tmp_path):
    png = _png(faces(1, identities=1)[0][0])
    with RecordWriter(tmp_path / "train.rec", tmp_path / "train.idx") as w:
        w.write(0, [7.0], png)  # flag 1: a label array of one
        w.write(1, 2.0, png[:50])
    reader = RecordReader(tmp_path)
    assert reader.read_image(0)[1] == 7  # the class is the first label
    with pytest.raises(DataError, match="train.rec record 1"):
        reader.read_image(1)
