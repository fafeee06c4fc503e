import pytest

from facetrain.data.guards.paths import resolve_data_path
from facetrain.errors import DataError


def test_joined_path_wins(tmp_path):
    (tmp_path / "root" / "train").mkdir(parents=True)
    assert resolve_data_path(tmp_path / "root", "train") == tmp_path / "root" / "train"


def test_seed_doubled_root_falls_back_to_path_as_given(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "all_data" / "train_1").mkdir(parents=True)
    got = resolve_data_path("./all_data", "./all_data/train_1/")
    assert got.resolve() == (tmp_path / "all_data" / "train_1").resolve()


def test_missing_names_every_try(tmp_path):
    with pytest.raises(DataError, match="nope"):
        resolve_data_path(tmp_path, "nope", "training data")
