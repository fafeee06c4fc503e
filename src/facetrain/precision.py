"""Precision names and autocast, said once for training and evaluation.

Training accepts `auto` (resolved per device by `resolve_precision`); evaluation takes a concrete
name, fp32 by default because fp32 gives the reference numbers. bf16 and fp16 run under autocast.
`auto` picks the fastest safe choice: bf16 on GPUs that support it (no loss scaling needed), bf16 on
CPUs with AMX tiles or AVX512-BF16 instructions (measured 2.3x fp32 for the IR-50 step on an
AVX512-BF16 CPU without AMX), fp32 elsewhere: on AVX2-only CPUs oneDNN emulates bf16 and it is
slower than fp32. `benchmarks/train_throughput.py` prints the choice and the measured ratios.

torch is imported inside the functions: the names are read by argument parsers (`facetrain.training.config`,
the verbs), which stay importable without torch.
"""
from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, ContextManager

from facetrain.errors import ConfigError

if TYPE_CHECKING:
    import torch

EVAL_PRECISIONS = ("fp32", "bf16", "fp16")
TRAIN_PRECISIONS = ("auto",) + EVAL_PRECISIONS
FAST_BF16_PROBES = ("_is_amx_tile_supported", "_is_avx512_bf16_supported")


def cpu_has_fast_bf16() -> bool:
    """AMX tiles or AVX512-BF16 make bf16 matmuls/convolutions fast; without both oneDNN emulates bf16."""
    import torch

    for name in FAST_BF16_PROBES:
        probe = getattr(torch.cpu, name, None)
        if probe is not None and probe():
            return True
    return False


def resolve_precision(requested: str, device: torch.device, use_16bit: bool = False) -> str:
    """The concrete precision ("fp32", "fp16" or "bf16") for `requested` on `device`."""
    import torch

    if requested not in TRAIN_PRECISIONS:
        raise ConfigError(f"precision must be one of {TRAIN_PRECISIONS}, got {requested!r}")
    if use_16bit and requested == "auto" and device.type == "cuda":
        requested = "fp16"  # AdaFace's precision=16; on a CPU the flag means "auto" (no fast fp16 there)
    if requested == "auto":
        if device.type == "cuda":
            return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
        return "bf16" if device.type == "cpu" and cpu_has_fast_bf16() else "fp32"
    if requested == "fp16" and device.type != "cuda":
        raise ConfigError("--precision fp16 (loss-scaled) needs a GPU; use bf16 or fp32 on CPU")
    return requested


def autocast_dtype(name: str) -> torch.dtype | None:
    """The autocast dtype of a concrete precision; None for fp32 (no autocast)."""
    import torch

    if name not in EVAL_PRECISIONS:
        raise ValueError(f"precision must be one of {EVAL_PRECISIONS}, got {name!r}")
    return {"fp16": torch.float16, "bf16": torch.bfloat16}.get(name)


def autocast(name: str, device: torch.device) -> ContextManager:
    """Autocast to `name`'s dtype on `device`'s type; a no-op context for fp32."""
    import torch

    dtype = autocast_dtype(name)
    return contextlib.nullcontext() if dtype is None else torch.autocast(device_type=device.type, dtype=dtype)
