"""Training sources refuse class counts that do not match their data, before a classifier is allocated."""
import numpy as np
import pytest

from data_format_fixtures import faces
from facetrain.data.formats.memfile import write_training_memfile
from facetrain.data.formats.recordio import RecordWriter, write_insightface_rec
from facetrain.data.training_source import open_training_source
from facetrain.errors import DataError


def _jpg(img):
    import cv2

    return cv2.imencode(".jpg", img)[1].tobytes()


def test_recordio_label_of_a_billion_is_refused(tmp_path):
    images, _ = faces(4)
    with RecordWriter(tmp_path / "train.rec", tmp_path / "train.idx") as w:
        for k, label in enumerate([0, 1, 1, 1e9]):
            w.write(k, float(label), _jpg(images[k]))
    with pytest.raises(DataError, match=r"1000000001 classes for 4 images"):
        open_training_source(tmp_path, ".", use_mxrecord=True)


def test_recordio_header_declaring_a_trillion_classes_is_refused(tmp_path):
    images, labels = faces(4, identities=2)
    write_insightface_rec(tmp_path, [_jpg(i) for i in images], labels)
    rec = (tmp_path / "train.rec").read_bytes()
    # record 0 is the header: 8-byte record head, 24-byte IR header, then float32 (first, end)
    header_labels = np.frombuffer(rec, "<f4", count=2, offset=32).copy()
    patched = np.array([header_labels[0], 1e12], "<f4").tobytes()
    (tmp_path / "train.rec").write_bytes(rec[:32] + patched + rec[40:])
    with pytest.raises(DataError, match=r"header record 0 declares \d+ identities"):
        open_training_source(tmp_path, ".", use_mxrecord=True)


def test_training_memfile_label_of_a_billion_is_refused(tmp_path):
    images, _ = faces(3)
    write_training_memfile(tmp_path, images, np.array([0, 1, 10 ** 9]))
    with pytest.raises(DataError, match=r"1000000001 classes for 3 images"):
        open_training_source(tmp_path, ".")


def test_consistent_sources_still_open(tmp_path):
    images, labels = faces(6, identities=3)
    write_insightface_rec(tmp_path, [_jpg(i) for i in images], labels)
    assert open_training_source(tmp_path, ".", use_mxrecord=True).num_classes == 3
