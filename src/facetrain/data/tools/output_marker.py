"""A hidden file beside an output folder saying what it was made from, so running a command again resumes.

Folder outputs (`convert`'s image folders, `compound`'s merged folder) are built under a
temporary name and renamed when complete; just before the rename, `.<name>.facetrain-output.json`
is written next to it with the recipe (options and the sources' paths, sizes and modification
times). Running the same command again finds the folder with a matching recipe and keeps it
instead of refusing it as "not empty", which is how a killed multi-output run completes. The
marker is only written while the folder does not exist, so it never vouches for a folder made
otherwise; a folder without a marker, or made from other sources, is never overwritten.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Iterable

from facetrain.io_utils import atomic_write_bytes


def fingerprint(paths: Iterable[str | os.PathLike]) -> list[list]:
    """[absolute path, size, mtime_ns] of each source file (a changed source means a different output)."""
    out = []
    for path in paths:
        st = os.stat(path)
        out.append([str(Path(path).resolve()), st.st_size, st.st_mtime_ns])
    return out


def marker_path(folder: Path) -> Path:
    return folder.parent / f".{folder.name}.facetrain-output.json"


def _canonical(recipe: dict[str, Any]) -> str:
    return json.dumps(recipe, sort_keys=True) + "\n"


def write_marker(folder: Path, recipe: dict[str, Any]) -> None:
    """Call right before the completed temporary folder is renamed onto `folder` (which must not exist)."""
    atomic_write_bytes(marker_path(folder), _canonical(recipe).encode())


def made_from(folder: Path, recipe: dict[str, Any]) -> bool:
    """True when `folder` is a complete output of this very recipe."""
    try:
        return folder.is_dir() and marker_path(folder).read_text() == _canonical(recipe)
    except OSError:
        return False
