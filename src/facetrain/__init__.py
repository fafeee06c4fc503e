"""facetrain: train, evaluate and use face-recognition models (AdaFace recipe, no mxnet).

The Python API (`facetrain.api`), imported on first use so that `import facetrain` stays light:
`load_model`, `align`, `align_all`, `embed`, `verify`, `train`, `evaluate`.
"""
from __future__ import annotations

import importlib
from typing import Any

from facetrain.version import __version__  # noqa: F401 (the package version, as usual)

__all__ = ["align", "align_all", "embed", "evaluate", "load_model", "train", "verify"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        return getattr(importlib.import_module("facetrain.api"), name)
    raise AttributeError(f"module 'facetrain' has no attribute {name!r}")
