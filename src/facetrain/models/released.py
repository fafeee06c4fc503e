"""Released weights: AdaFace's published checkpoints by name, where to find them on disk, and
`hf://owner/repo/file` references to the Hugging Face Hub (when `huggingface_hub` is installed).

Nothing is downloaded unless the caller asks (`download=True`). A name resolves to a file in
`./pretrained/`, then `$FACETRAIN_HOME/pretrained/` (default `~/.cache/facetrain`). A sha256 (given
by the caller, or recorded here) is checked before the file is used.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from facetrain.errors import ConfigError
from facetrain.fingerprint import file_sha256

PRETRAINED_DIR = "pretrained"
HOME_ENV = "FACETRAIN_HOME"
HUB_SCHEME = "hf://"
_CHECKPOINT_SUFFIXES = (".ckpt", ".pt", ".pth", ".safetensors")
# the Hub's rule for an owner or repository name: ASCII letters, digits, '-', '_', '.', at most 96,
# not starting or ending with '-' or '.', no '--' or '..'
_HUB_NAME = re.compile(r"(?!.*(?:--|\.\.))[A-Za-z0-9_](?:[A-Za-z0-9._-]{0,94}[A-Za-z0-9_])?")
_CONTROL = re.compile(r"[\x00-\x1f\x7f\\]")  # control characters (a newline) and backslashes


@dataclass(frozen=True)
class ReleasedModel:
    arch: str
    filename: str
    training_data: str
    sha256: str | None = None  # None: AdaFace publishes no digests; pass one to check a download


# AdaFace's README table; the file names are the ones it publishes. The weights are licensed by their
# authors for non-commercial research, and so are the datasets they were trained on (see README).
ADAFACE_RELEASES: dict[str, ReleasedModel] = {
    "ir18_casia": ReleasedModel("ir_18", "adaface_ir18_casia.ckpt", "CASIA-WebFace"),
    "ir18_vgg2": ReleasedModel("ir_18", "adaface_ir18_vgg2.ckpt", "VGGFace2"),
    "ir18_webface4m": ReleasedModel("ir_18", "adaface_ir18_webface4m.ckpt", "WebFace4M"),
    "ir50_casia": ReleasedModel("ir_50", "adaface_ir50_casia.ckpt", "CASIA-WebFace"),
    "ir50_webface4m": ReleasedModel("ir_50", "adaface_ir50_webface4m.ckpt", "WebFace4M"),
    "ir50_ms1mv2": ReleasedModel("ir_50", "adaface_ir50_ms1mv2.ckpt", "MS1MV2"),
    "ir101_ms1mv2": ReleasedModel("ir_101", "adaface_ir101_ms1mv2.ckpt", "MS1MV2"),
    "ir101_ms1mv3": ReleasedModel("ir_101", "adaface_ir101_ms1mv3.ckpt", "MS1MV3"),
    "ir101_webface4m": ReleasedModel("ir_101", "adaface_ir101_webface4m.ckpt", "WebFace4M"),
    "ir101_webface12m": ReleasedModel("ir_101", "adaface_ir101_webface12m.ckpt", "WebFace12M"),
}
# A bare architecture name means: the seed's ir_50 file, else the largest-data release.
ARCH_DEFAULTS = {"ir_50": "ir50_ms1mv2", "ir_101": "ir101_webface12m", "ir_18": "ir18_webface4m"}


def facetrain_home() -> Path:
    return Path(os.environ.get(HOME_ENV) or Path.home() / ".cache" / "facetrain")


def pretrained_dirs() -> list[Path]:
    """Where released files are looked for, in order: ./pretrained, then $FACETRAIN_HOME/pretrained."""
    return list(dict.fromkeys([Path.cwd() / PRETRAINED_DIR, facetrain_home() / PRETRAINED_DIR]))


def check_sha256(path: Path, expected: str) -> None:
    digest = file_sha256(path)
    if digest != expected.lower():
        raise ConfigError(f"{path}: sha256 {digest} does not match the expected {expected}")


def resolve_checkpoint(name_or_path: str | os.PathLike, sha256: str | None = None,
                       download: bool = False) -> tuple[Path, str | None]:
    """(file, architecture or None) for a checkpoint path, a released-model name (`ir_50`,
    `ir101_webface12m`) or `hf://owner/repo/file`; the file's sha256 is checked when one is known."""
    text = str(name_or_path)
    if text.startswith(HUB_SCHEME):
        path, arch = _from_hub(text, download), None
    elif Path(text).is_file():
        path, arch = Path(text), None
    else:
        release = _release(text)
        path, arch = _find_release_file(text, release), release.arch
        sha256 = sha256 or release.sha256
    if sha256:
        check_sha256(path, sha256)
    return path, arch


def _release(text: str) -> ReleasedModel:
    name = ARCH_DEFAULTS.get(text, text)
    if name in ADAFACE_RELEASES:
        return ADAFACE_RELEASES[name]
    if Path(text).suffix in _CHECKPOINT_SUFFIXES or os.sep in text:
        raise ConfigError(f"{text}: checkpoint not found")
    known = ", ".join([*ARCH_DEFAULTS, *ADAFACE_RELEASES])
    raise ConfigError(f"{text!r} is neither a checkpoint file, an hf://owner/repo/file reference nor a released "
                      f"model name ({known})")


def _find_release_file(name: str, release: ReleasedModel) -> Path:
    folders = pretrained_dirs()
    for folder in folders:
        if (folder / release.filename).is_file():
            return folder / release.filename
    raise ConfigError(
        f"{release.filename} not found (looked in {', '.join(map(str, folders))}). Download AdaFace's "
        f"{ARCH_DEFAULTS.get(name, name)} checkpoint from the AdaFace README's model table and put it in one of "
        "those folders (nothing is downloaded automatically), or pass the path of a checkpoint.")


def _from_hub(reference: str, download: bool) -> Path:
    _check_hub_reference(reference)
    parts = reference[len(HUB_SCHEME):].split("/")
    try:
        from huggingface_hub import hf_hub_download
        from huggingface_hub.errors import LocalEntryNotFoundError
    except ImportError:
        raise ConfigError(f"{reference}: reading from the Hugging Face Hub needs `pip install facetrain[hub]`") from None
    repo_id, filename = "/".join(parts[:2]), "/".join(parts[2:])
    try:
        return Path(hf_hub_download(repo_id, filename, local_files_only=not download))
    except LocalEntryNotFoundError:
        raise ConfigError(f"{reference}: not in the local Hugging Face cache; pass download=True "
                          "(--download) to fetch it") from None
    except ValueError as exc:  # the Hub library's own validation (HFValidationError), should its rules grow
        raise ConfigError(f"{reference!r}: {exc}") from None


def _check_hub_reference(reference: str) -> None:
    """ConfigError for a reference the Hub cannot hold, before the Hub library sees it: owner and
    repository names by the Hub's rule; a file path of non-empty segments, none of them '.' or '..'
    (the file stays inside its repository's snapshot), without control characters or backslashes.
    Spaces and other Unicode characters are allowed in file names, as on the Hub."""
    parts = reference[len(HUB_SCHEME):].split("/")
    if len(parts) < 3 or not all(parts):
        raise ConfigError(f"{reference!r}: expected hf://owner/repo/path/to/file")
    for name in parts[:2]:
        if not _HUB_NAME.fullmatch(name):
            raise ConfigError(f"{reference!r}: {name!r} is not a Hub owner or repository name (ASCII letters, "
                              "digits, '-', '_', '.'; at most 96)")
    if any(part in (".", "..") for part in parts[2:]) or _CONTROL.search(reference):
        raise ConfigError(f"{reference!r}: not a file inside a Hub repository (its path may not hold '.' or '..' "
                          "segments, control characters or backslashes)")
