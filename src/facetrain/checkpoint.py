"""Checkpoints in the layout of AdaFace's PyTorch-Lightning `.ckpt` files, loaded without running code.

Layout written and read: `{"state_dict": {"model.<key>": ..., "head.<key>": ...},
"hyper_parameters": {...}, "facetrain": {"version": ..., "extra": {...}}}`. The backbone keys
are AdaFace's own, so AdaFace's tools read our files and we read theirs.

Loading never unpickles arbitrary objects: `torch.load(weights_only=True)` first. Lightning
files can also name Lightning classes (AttributeDict, callback types, enums) and an
argparse.Namespace; those, and nothing else, are then let through, argparse.Namespace as
itself (it only sets attributes) and every other one as an inert stand-in that stores its
pickled arguments and never imports or calls the original.
"""
from __future__ import annotations

import argparse
import os
import pickle
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from facetrain.errors import ConfigError
from facetrain.io_utils import atomic_path, open_write
from facetrain.models import build_model, canonical_name, infer_arch
from facetrain.version import __version__

PathLike = str | os.PathLike
_PLAIN_SCALARS = (int, float, bool, str, bytes, type(None), torch.dtype, torch.device, torch.Size)
# Modules whose pickled objects are metadata in Lightning checkpoints; they become InertObjects.
_INERT_MODULE_PREFIXES = ("pytorch_lightning.", "lightning.", "lightning_fabric.", "omegaconf.", "numpy.")


def _unwrap(model: nn.Module) -> nn.Module:
    """The module whose state_dict has the plain keys: no DDP `module.`, no torch.compile `_orig_mod.`."""
    while True:
        if isinstance(model, (nn.DataParallel, nn.parallel.DistributedDataParallel)):
            model = model.module
        elif isinstance(getattr(model, "_orig_mod", None), nn.Module):
            model = model._orig_mod
        else:
            return model


def _check_plain(obj: Any, where: str) -> None:
    """Refuse, before writing, anything that `torch.load(weights_only=True)` could not read back."""
    if isinstance(obj, torch.Tensor) or isinstance(obj, _PLAIN_SCALARS):
        return
    if isinstance(obj, Mapping):
        for key, value in obj.items():
            _check_plain(key, f"{where} key")
            _check_plain(value, f"{where}[{key!r}]")
    elif isinstance(obj, (list, tuple)):
        for i, value in enumerate(obj):
            _check_plain(value, f"{where}[{i}]")
    else:
        raise TypeError(f"{where}: {type(obj).__module__}.{type(obj).__qualname__} is not plain data "
                        "(use tensors, numbers, strings, lists, tuples and dicts)")


def _on_cpu(obj: Any) -> Any:
    """Every tensor copied to the CPU: a file of CUDA tensors cannot be loaded without a GPU (by a
    plain `torch.load` or AdaFace's tools)."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu()
    if isinstance(obj, Mapping):
        return {key: _on_cpu(value) for key, value in obj.items()}
    if type(obj) in (list, tuple):
        return type(obj)(_on_cpu(value) for value in obj)
    return obj


def save_checkpoint(
    path: PathLike,
    model: nn.Module,
    head: nn.Module | None = None,
    extra: dict | None = None,
    hyper_parameters: dict | None = None,
) -> None:
    """Write model (+ head) weights, hyper-parameters and `extra` (optimizer, scheduler, scaler, rng,
    epoch, step...) atomically, every tensor on the CPU. `hyper_parameters` is merged over the ones read
    from model and head."""
    model, head = _unwrap(model), None if head is None else _unwrap(head)
    state_dict = {f"model.{k}": v for k, v in model.state_dict().items()}
    hparams: dict[str, Any] = {"arch": getattr(model, "arch", None), "embedding_size": model.embedding_size}
    if head is not None:
        state_dict.update({f"head.{k}": v for k, v in head.state_dict().items()})
        hparams.update(head.hparams())
    hparams.update(hyper_parameters or {})
    checkpoint = {
        "state_dict": state_dict,
        "hyper_parameters": hparams,
        "facetrain": {"version": __version__, "extra": extra or {}},
    }
    write_checkpoint(path, checkpoint)


def write_checkpoint(path: PathLike, checkpoint: dict) -> None:
    """Write a checkpoint dict atomically and durably: plain data only (what `torch.load(weights_only=True)`
    reads back), every tensor on the CPU, the file's own OSError on a full disk."""
    _check_plain(checkpoint, "checkpoint")
    checkpoint = _on_cpu(checkpoint)
    with atomic_path(path) as tmp, open_write(tmp, "wb") as f:  # crash tests can kill inside the file
        save_to_file(checkpoint, f)
        f.flush()
        os.fsync(f.fileno())


def save_to_file(obj: Any, f: Any) -> None:
    """`torch.save` into an open file, raising the file's own OSError (disk full, quota, file too large)
    or the Ctrl-C that stopped it, where torch's writer would turn either into an unrelated RuntimeError
    ("unexpected pos ...") while closing the half-written archive."""
    failures: list[OSError] = []

    class _Reporting:
        def write(self, data: bytes) -> int:
            try:
                return f.write(data)
            except OSError as exc:
                failures.append(exc)
                raise

        def flush(self) -> None:
            f.flush()

    try:
        torch.save(obj, _Reporting())
    except RuntimeError as exc:
        if failures:
            raise failures[0] from None
        if _interrupted(exc):
            raise KeyboardInterrupt from None
        raise


def _interrupted(exc: BaseException) -> bool:
    """Whether a KeyboardInterrupt is among the exceptions `exc` was raised while handling."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, KeyboardInterrupt):
            return True
        seen.add(id(exc))
        exc = exc.__context__
    return False


class InertObject:
    """Stands in for a class named in a checkpoint that is never imported; keeps the pickled data."""

    qualified_name = "?"

    def __new__(cls, *args: Any, **kwargs: Any) -> InertObject:
        obj = super().__new__(cls)
        obj.args = args
        obj.state = None
        return obj

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def __setstate__(self, state: Any) -> None:
        self.state = state

    def __repr__(self) -> str:
        return f"<{self.qualified_name} (not imported) args={self.args!r} state={self.state!r}>"


def _stand_in(name: str) -> type:
    if name == "argparse.Namespace":
        return argparse.Namespace
    if name.endswith(".AttributeDict"):  # Lightning's dict subclass: read it as the dict it is
        return dict
    return type(name.rsplit(".", 1)[-1], (InertObject,), {"qualified_name": name})


def torch_reason(exc: Exception) -> str:
    """torch's refusal without its advice to retry with weights_only=False (which would run the file's code)."""
    text = str(exc)
    if "WeightsUnpickler error:" in text:
        text = text.split("WeightsUnpickler error:", 1)[1].split("Check the documentation", 1)[0]
    return " ".join(text.split())


def _load_lightning(path: Path, map_location: Any, first_error: Exception) -> Any:
    try:
        names = torch.serialization.get_unsafe_globals_in_checkpoint(str(path))
    except (ValueError, RuntimeError, pickle.UnpicklingError) as exc:
        reasons = f"{torch_reason(first_error)}; {torch_reason(exc)}"
        raise ConfigError(f"{path}: cannot be loaded safely ({reasons})") from None
    refused = sorted(n for n in names if n != "argparse.Namespace" and not n.startswith(_INERT_MODULE_PREFIXES))
    if refused:
        raise ConfigError(
            f"{path}: refusing to load, the file references {', '.join(refused)}, which could run code; "
            "only tensors, plain data and Lightning/argparse metadata are accepted"
        )
    with torch.serialization.safe_globals([(_stand_in(n), n) for n in names]):
        try:
            return torch.load(path, map_location=map_location, weights_only=True)
        except (pickle.UnpicklingError, TypeError, AttributeError) as exc:
            raise ConfigError(f"{path}: cannot be loaded safely ({torch_reason(exc)})") from None


def load_checkpoint(path: PathLike, map_location: Any = "cpu") -> dict:
    """The checkpoint as a dict (safetensors files as `{"state_dict": ...}`); never runs pickled code."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: checkpoint not found")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return {"state_dict": load_file(path, device=str(map_location))}
        except Exception as exc:  # safetensors raises its own SafetensorError, not exported stably
            raise ConfigError(f"{path}: unreadable safetensors file ({exc})") from None
    try:
        checkpoint = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        checkpoint = _load_lightning(path, map_location, exc)
    except (RuntimeError, EOFError, OSError, ValueError, IndexError, KeyError, TypeError) as exc:
        # bytes that are not a pickle can break the unpickler anywhere (text starting "a" pops an empty stack)
        raise ConfigError(f"{path}: not a readable PyTorch checkpoint ({type(exc).__name__}: {exc})") from None
    if not isinstance(checkpoint, dict):
        raise ConfigError(f"{path}: expected a dict (state_dict or Lightning checkpoint), got {type(checkpoint).__name__}")
    if "hyper_parameters" in checkpoint:
        checkpoint["hyper_parameters"] = _as_dict(checkpoint["hyper_parameters"])
    return checkpoint


def strip_prefix(state: Mapping[str, Any], prefix: str) -> dict[str, Any]:
    """The entries whose key starts with `prefix` (e.g. "model.", "head."), with the prefix removed."""
    return {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}


def _split_state(checkpoint: Mapping, source: str) -> tuple[dict, dict]:
    """(backbone state, head state) with the `model.` / `head.` (and DDP `module.`) prefixes removed."""
    state = checkpoint.get("state_dict", checkpoint)
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ConfigError(f"{source}: no state_dict of tensors found")
    head = strip_prefix(state, "head.")
    if any(k.startswith("model.") for k in state):
        backbone = strip_prefix(state, "model.")
    else:
        backbone = {k: v for k, v in state.items() if not k.startswith("head.")}
    if backbone and all(k.startswith("module.") for k in backbone):
        backbone = strip_prefix(backbone, "module.")
    return backbone, head


def _as_dict(hyper_parameters: Any) -> dict:
    if isinstance(hyper_parameters, argparse.Namespace):
        return vars(hyper_parameters)
    return dict(hyper_parameters) if isinstance(hyper_parameters, Mapping) else {}


def _warn_non_float(state: Mapping, expected: Mapping, source: str) -> None:
    """load_state_dict casts integer tensors into float parameters silently, without any quantisation
    scale: a quantised checkpoint would load as a model whose every output is wrong, so say so."""
    cast = [k for k, v in state.items() if isinstance(v, torch.Tensor) and not v.is_floating_point()
            and k in expected and expected[k].is_floating_point()]
    if cast:
        warnings.warn(f"{source}: {len(cast)} weight tensor(s) are stored as {state[cast[0]].dtype} (e.g. {cast[0]}), "
                      "not floating point; they are cast to float32 without any dequantisation scale, so the "
                      "model's outputs are probably wrong", stacklevel=3)


def load_backbone(
    path_or_state: PathLike | Mapping, arch: str | None = None, map_location: Any = "cpu"
) -> tuple[nn.Module, dict]:
    """Build the backbone a checkpoint (ours, official AdaFace, a bare state_dict or safetensors) holds
    and load it strictly; returned in eval mode. `arch` None infers it from the keys; a given `arch`
    that does not match the file is an error. info: arch, source, hyper_parameters, head_state_dict,
    facetrain (our extra data, {} for other files)."""
    if isinstance(path_or_state, Mapping):
        source, checkpoint = "<state_dict>", path_or_state
    else:
        source, checkpoint = str(path_or_state), load_checkpoint(path_or_state, map_location)
    backbone_state, head_state = _split_state(checkpoint, source)
    inferred = infer_arch(backbone_state)
    if arch is None:
        if inferred is None:
            raise ConfigError(f"{source}: cannot tell the architecture from the weights; name it (--arch)")
        arch = inferred
    else:
        arch = canonical_name(arch)
        if inferred is not None and inferred != arch:
            raise ConfigError(f"{source}: holds a {inferred} backbone, but the architecture asked for is {arch}")
    embedding_size = backbone_state["output_layer.3.weight"].shape[0] if "output_layer.3.weight" in backbone_state else 512
    model = build_model(arch, embedding_size=embedding_size)
    _warn_non_float(backbone_state, model.state_dict(), source)
    try:
        model.load_state_dict(backbone_state, strict=True)
    except RuntimeError as exc:
        summary = str(exc).splitlines()
        raise ConfigError(f"{source}: the weights do not fit {arch}: {' '.join(summary[1:3]) or summary[0]}") from None
    info = {
        "arch": arch,
        "source": source,
        "hyper_parameters": _as_dict(checkpoint.get("hyper_parameters")),
        "head_state_dict": head_state,
        "facetrain": checkpoint.get("facetrain", {}),
    }
    model.source = source  # errors about its outputs name the file (facetrain.eval.finite)
    return model.eval(), info
