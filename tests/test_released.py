"""Released weights are found where a user puts them, checked against a sha256, and read from a local
Hugging Face cache without any network access."""
import hashlib

import pytest

from facetrain.errors import ConfigError
from facetrain.models.released import HOME_ENV, resolve_checkpoint


def test_names_resolve_in_the_current_folder_then_facetrain_home(tmp_path, monkeypatch):
    home, work = tmp_path / "home", tmp_path / "work"
    (home / "pretrained").mkdir(parents=True)
    (home / "pretrained" / "adaface_ir50_ms1mv2.ckpt").write_bytes(b"home")
    work.mkdir()
    monkeypatch.chdir(work)
    monkeypatch.setenv(HOME_ENV, str(home))
    assert resolve_checkpoint("ir_50") == (home / "pretrained" / "adaface_ir50_ms1mv2.ckpt", "ir_50")
    (work / "pretrained").mkdir()
    (work / "pretrained" / "adaface_ir50_ms1mv2.ckpt").write_bytes(b"work")
    assert resolve_checkpoint("ir50_ms1mv2")[0] == work / "pretrained" / "adaface_ir50_ms1mv2.ckpt"
    with pytest.raises(ConfigError, match=f"adaface_ir101_webface12m.ckpt not found .looked in {work}"):
        resolve_checkpoint("ir_101")


def test_sha256_is_checked(tmp_path):
    path = tmp_path / "model.ckpt"
    path.write_bytes(b"weights")
    good = hashlib.sha256(b"weights").hexdigest()
    assert resolve_checkpoint(path, sha256=good.upper())[0] == path
    with pytest.raises(ConfigError, match="sha256 .* does not match the expected 00"):
        resolve_checkpoint(path, sha256="00" * 32)


def test_hub_references_read_the_local_cache_offline(tmp_path, monkeypatch):
    constants = pytest.importorskip("huggingface_hub.constants")
    cache = tmp_path / "hub"
    snapshot = cache / "models--owner--faces" / "snapshots" / ("a" * 40)
    (snapshot / "ckpt").mkdir(parents=True)
    (snapshot / "ckpt" / "ir50.ckpt").write_bytes(b"cached")
    (cache / "models--owner--faces" / "refs").mkdir()
    (cache / "models--owner--faces" / "refs" / "main").write_text("a" * 40)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    path, arch = resolve_checkpoint("hf://owner/faces/ckpt/ir50.ckpt", sha256=hashlib.sha256(b"cached").hexdigest())
    assert path.read_bytes() == b"cached" and arch is None
    with pytest.raises(ConfigError, match="not in the local Hugging Face cache"):
        resolve_checkpoint("hf://owner/faces/other.ckpt")
    with pytest.raises(ConfigError, match="expected hf://owner/repo/path/to/file"):
        resolve_checkpoint("hf://owner/faces")
