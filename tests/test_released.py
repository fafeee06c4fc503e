"""Released weights are found where a user puts them, checked against a sha256, and read from a local
Hugging Face cache without any network access."""
import hashlib
import re

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


def _hub_cache(tmp_path, monkeypatch, files: dict[str, bytes]):
    constants = pytest.importorskip("huggingface_hub.constants")
    cache = tmp_path / "hub"
    snapshot = cache / "models--owner--faces" / "snapshots" / ("a" * 40)
    for name, data in files.items():
        (snapshot / name).parent.mkdir(parents=True, exist_ok=True)
        (snapshot / name).write_bytes(data)
    (cache / "models--owner--faces" / "refs").mkdir()
    (cache / "models--owner--faces" / "refs" / "main").write_text("a" * 40)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return cache


def test_hub_file_names_may_hold_spaces_and_unicode(tmp_path, monkeypatch):
    _hub_cache(tmp_path, monkeypatch, {"ünï cödé/ir 50.ckpt": b"cached"})
    assert resolve_checkpoint("hf://owner/faces/ünï cödé/ir 50.ckpt")[0].read_bytes() == b"cached"


@pytest.mark.parametrize("reference, fragment", [
    ("hf://owner/fa ces/ir50.ckpt", "'fa ces' is not a Hub owner or repository name"),
    ("hf://ownér/faces/ir50.ckpt", "'ownér' is not a Hub owner or repository name"),
    ("hf://owner/faces--x/ir50.ckpt", "is not a Hub owner or repository name"),
    ("hf://owner/faces/ir50\n.ckpt", "not a file inside a Hub repository"),
    ("hf://owner/faces/../../outside.ckpt", "not a file inside a Hub repository"),
    ("hf://owner/faces/ckpt/../../../outside.ckpt", "not a file inside a Hub repository"),
    ("hf://owner/faces/./ir50.ckpt", "not a file inside a Hub repository"),
    ("hf://owner/faces/..\\outside.ckpt", "not a file inside a Hub repository"),
    ("hf://owner//ir50.ckpt", "expected hf://owner/repo/path/to/file"),
])
def test_hub_references_outside_the_hub_rules_are_refused_without_traversal(tmp_path, monkeypatch, reference,
                                                                             fragment):
    cache = _hub_cache(tmp_path, monkeypatch, {"ckpt/ir50.ckpt": b"cached"})
    (cache / "outside.ckpt").write_bytes(b"not in the repository")  # where a traversal would land
    (cache / "models--owner--faces" / "outside.ckpt").write_bytes(b"not in the repository")
    with pytest.raises(ConfigError, match=re.escape(fragment)) as refused:
        resolve_checkpoint(reference)
    assert repr(reference) in str(refused.value) and "\n" not in str(refused.value)
