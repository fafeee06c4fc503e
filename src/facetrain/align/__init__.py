"""Face detection (MTCNN) and alignment to the 112x112 template.

`facetrain.align` is both this package and the API function `facetrain.align(image)`: importing any
submodule binds the package to the name `align` on `facetrain`, which would hide the function, so the
package itself is made callable and forwards to `facetrain.api.align`.
"""
from __future__ import annotations

import sys
import types
from typing import Any


class _CallablePackage(types.ModuleType):
    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        from facetrain.api import align

        return align(*args, **kwargs)


sys.modules[__name__].__class__ = _CallablePackage
