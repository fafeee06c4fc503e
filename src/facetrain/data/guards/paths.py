"""Where `--train_data_path` / `--val_data_path` point, given `--data_root` (AdaFace joins them).

The seed's scripts pass paths that already contain data_root (`--data_root ./all_data
--train_data_path ./all_data/train_1/`), which AdaFace turned into `./all_data/./all_data/train_1`.
We try the joined path first (AdaFace's meaning), then the path as given.
"""
from __future__ import annotations

import os
from pathlib import Path

from facetrain.errors import DataError


def resolve_data_path(data_root: str | os.PathLike | None, path: str | os.PathLike, what: str = "data path") -> Path:
    """Return the existing folder/file meant by `path` under `data_root`; DataError naming both tries."""
    path = Path(path)
    candidates = [path] if path.is_absolute() or not data_root else [Path(data_root) / path, path]
    for candidate in candidates:
        if candidate.exists():
            return candidate
    tried = " or ".join(str(c) for c in candidates)
    raise DataError(f"{what} not found: {tried}")
