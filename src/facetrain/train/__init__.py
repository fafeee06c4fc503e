"""Training: the AdaFace recipe (config, run folder, loop, checkpoints, DDP, Partial FC).

`facetrain.train` is both this package and the API function `facetrain.train(config)`: importing any
submodule binds the package to the name `train` on `facetrain`, which would hide the function (a second
call would find the module), so the package itself is made callable: both are `launch.train_from`.
"""
from __future__ import annotations

import sys
import types
from typing import Any


class _CallablePackage(types.ModuleType):
    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        from facetrain.train.launch import train_from

        return train_from(*args, **kwargs)


sys.modules[__name__].__class__ = _CallablePackage
