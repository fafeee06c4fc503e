"""Load InsightFace `.bin` pickles without letting them run code.

A pickle names callables that the loader imports and calls; a crafted `.bin` can name
`os.system` or `builtins.eval`. This unpickler resolves only the handful of globals that
real verification sets need (numpy array/scalar reconstruction, and `_codecs.encode`, which
Python 3 uses for `bytes` in protocol-2 pickles) and refuses everything else before calling it.
"""
from __future__ import annotations

import io
import pickle
from typing import Any, Callable

from facetrain.errors import DataError

_ALLOWED: frozenset[tuple[str, str]] = frozenset(
    {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("_codecs", "encode"),
        ("builtins", "bytes"),
        ("builtins", "bytearray"),
        ("builtins", "bool"),
        ("builtins", "list"),
        ("builtins", "tuple"),
        # Python 2 names, mapped by fix_imports to the builtins above
        ("__builtin__", "bytes"),
        ("__builtin__", "bytearray"),
        ("__builtin__", "bool"),
        ("__builtin__", "list"),
        ("__builtin__", "tuple"),
    }
)


class UnsafePickleError(pickle.UnpicklingError):
    """The pickle references a global outside the allow-list."""


class UnsizedPickleError(pickle.UnpicklingError):
    """The pickle asks for an object larger than the whole file."""


def _bounded(make: type, limit: int) -> Callable[..., Any]:
    """`bytes`/`bytearray` that refuse `bytes(n)` for an n larger than the pickle (memory bounded by the file)."""
    def build(*args: Any) -> Any:
        if args and isinstance(args[0], int) and args[0] > limit:
            raise UnsizedPickleError(f"asks for a {args[0]}-byte {make.__name__}, larger than the file")
        return make(*args)
    return build


class RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, data: bytes) -> None:
        super().__init__(io.BytesIO(data), encoding="bytes")
        self._size = len(data)

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in _ALLOWED:
            raise UnsafePickleError(f"refusing to load global {module}.{name}")
        if module == "__builtin__":  # Python 2 name; fix_imports maps it only in protocol < 3 pickles
            module = "builtins"
        if module == "builtins" and name in ("bytes", "bytearray"):
            return _bounded(bytes if name == "bytes" else bytearray, self._size)
        return super().find_class(module, name)


def safe_loads(data: bytes, source: str) -> Any:
    """Unpickle `data` (Python 2 or 3, any protocol) with the allow-list; `source` names the file in errors."""
    try:
        return RestrictedUnpickler(data).load()
    except UnsafePickleError as exc:
        raise DataError(f"{source}: not a plain verification set, the pickle tries to run code ({exc})") from None
    except (UnsizedPickleError, MemoryError, OverflowError) as exc:
        raise DataError(f"{source}: corrupt pickle: it declares an object larger than the file "
                        f"({len(data)} bytes){f' ({exc})' if str(exc) else ''}") from None
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, IndexError, KeyError, AttributeError) as exc:
        raise DataError(f"{source}: truncated or corrupt pickle ({type(exc).__name__}: {exc})") from None
