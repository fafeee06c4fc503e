import warnings

import numpy as np
import pytest

from data_format_fixtures import draw_face, faces, make_image_folder
from facetrain.data.formats.image_folder import ImageFolder
from facetrain.data.formats.memfile import write_training_memfile
from facetrain.data.formats.recordio import write_insightface_rec
from facetrain.data.training_source import open_training_source
from facetrain.errors import DataError


def test_classes_follow_sorted_folder_names(tmp_path):
    make_image_folder(tmp_path, {"b": 2, "a": 3, "c": 1})
    (tmp_path / "imgs" / "a" / "notes.txt").write_text("not an image")
    for root in (tmp_path, tmp_path / "imgs"):
        folder = ImageFolder(root)
        assert folder.classes == ["a", "b", "c"] and folder.num_classes == 3 and len(folder) == 6
        assert folder.labels.tolist() == [0, 0, 0, 1, 1, 2]
    bgr, label = folder.read(3)
    assert bgr.shape == (112, 112, 3) and bgr.dtype == np.uint8 and label == 1
    assert np.abs(bgr.astype(int) - draw_face(1, 0)).mean() < 8  # BGR as drawn (JPEG tolerance)


def test_missing_imgs_and_empty_folders(tmp_path):
    (tmp_path / "x").mkdir()
    with pytest.raises(DataError, match="no `imgs` folder"):
        ImageFolder(tmp_path)
    (tmp_path / "imgs").mkdir()
    with pytest.raises(DataError, match="no identity folders"):
        ImageFolder(tmp_path)
    (tmp_path / "imgs" / "a").mkdir()
    with pytest.raises(DataError, match="no images in any"):
        ImageFolder(tmp_path)


def test_empty_identity_keeps_its_index_with_a_warning(tmp_path):
    make_image_folder(tmp_path, {"a": 2, "c": 2})
    (tmp_path / "imgs" / "b").mkdir()
    with pytest.warns(UserWarning, match="1 identity folder.*without images.*: b"):
        folder = ImageFolder(tmp_path)
    assert folder.num_classes == 3 and folder.empty_classes == ["b"]
    assert folder.labels.tolist() == [0, 0, 2, 2]
    with pytest.warns(UserWarning, match="1 identity folder.*without images.*: b"):  # training warns too
        assert open_training_source(tmp_path, "imgs").num_classes == 3


def test_corrupt_image_is_reported_with_its_path(tmp_path):
    make_image_folder(tmp_path, {"a": 2, "b": 2})
    bad = tmp_path / "imgs" / "b" / "1.jpg"
    bad.write_bytes(bad.read_bytes()[:30])
    folder = ImageFolder(tmp_path)
    assert folder.scan_unreadable() == [str(bad)]
    with pytest.raises(DataError, match=f"{bad}: cannot decode"):
        folder.read(3)


def test_training_sources_agree(tmp_path):
    images, labels = faces(9, identities=3)
    write_insightface_rec(tmp_path / "rec", images, labels)
    write_training_memfile(tmp_path / "mem", images, labels)
    make_image_folder(tmp_path / "folder", {"id0": 3, "id1": 3, "id2": 3})
    rec = open_training_source(tmp_path, "rec", use_mxrecord=True)
    mem = open_training_source(tmp_path, "mem", use_mxrecord=False)
    folder = open_training_source(tmp_path, "folder/imgs", use_mxrecord=False)
    for source in (rec, mem, folder):
        assert len(source) == 9 and source.num_classes == 3 and source.labels.dtype == np.int64
        assert sorted(source.labels.tolist()) == sorted(labels.tolist())
        img = source.read(4)
        assert img.shape == (112, 112, 3) and img.dtype == np.uint8
        assert "9 images, 3 classes" in source.describe()
    np.testing.assert_array_equal(mem.read(4), images[4])
    # a path that already includes the root (the seed's prep_and_train.sh) also resolves
    assert len(open_training_source(tmp_path / "unused", str(tmp_path / "folder"), False)) == 9


def test_training_source_errors(tmp_path):
    images, labels = faces(4, identities=2)
    write_insightface_rec(tmp_path / "rec", images, labels)
    with pytest.raises(DataError, match="--use_mxrecord"):
        open_training_source(tmp_path, "rec", use_mxrecord=False)
    with pytest.raises(DataError, match=r"training data \(--train_data_path\) not found"):
        open_training_source(tmp_path, "nope", use_mxrecord=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(DataError, match="no train.rec"):
            open_training_source(tmp_path, ".", use_mxrecord=True)
