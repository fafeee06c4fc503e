"""Numeric precision per device: fp32, fp16 autocast with loss scaling, or bf16 autocast.

`auto` picks the fastest safe choice: bf16 on GPUs that support it (no loss scaling needed), bf16 on
CPUs with AMX tiles or AVX512-BF16 instructions (measured 2.3x fp32 for the IR-50 step on an
AVX512-BF16 CPU without AMX), fp32 elsewhere: on AVX2-only CPUs oneDNN emulates bf16 and it is
slower than fp32. `benchmarks/train_throughput.py` prints the choice and the measured ratios.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import ContextManager

import torch
from torch import nn

from facetrain.errors import ConfigError

AUTOCAST_DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16}


FAST_BF16_PROBES = ("_is_amx_tile_supported", "_is_avx512_bf16_supported")


def cpu_has_fast_bf16() -> bool:
    """AMX tiles or AVX512-BF16 make bf16 matmuls/convolutions fast; without both oneDNN emulates bf16."""
    for name in FAST_BF16_PROBES:
        probe = getattr(torch.cpu, name, None)
        if probe is not None and probe():
            return True
    return False


def resolve_precision(requested: str, device: torch.device, use_16bit: bool = False) -> str:
    """The concrete precision ("fp32", "fp16" or "bf16") for `requested` on `device`."""
    if use_16bit and requested == "auto" and device.type == "cuda":
        requested = "fp16"  # AdaFace's precision=16; on a CPU the flag means "auto" (no fast fp16 there)
    if requested == "auto":
        if device.type == "cuda":
            return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
        return "bf16" if device.type == "cpu" and cpu_has_fast_bf16() else "fp32"
    if requested == "fp16" and device.type != "cuda":
        raise ConfigError("--precision fp16 (loss-scaled) needs a GPU; use bf16 or fp32 on CPU")
    return requested


@dataclass
class Precision:
    """How the training step runs: autocast dtype (None = fp32), loss scaler, memory layout."""
    name: str
    device: torch.device
    channels_last: bool = False

    @property
    def autocast_dtype(self) -> torch.dtype | None:
        return AUTOCAST_DTYPES.get(self.name)

    def autocast(self) -> ContextManager:
        dtype = self.autocast_dtype
        if dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=dtype)

    def make_scaler(self) -> torch.amp.GradScaler:
        """Loss scaling only for fp16 (bf16 has fp32's range); a disabled scaler is a no-op."""
        return torch.amp.GradScaler(self.device.type, enabled=self.name == "fp16")

    def prepare_input(self, x: torch.Tensor) -> torch.Tensor:
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

    def prepare_model(self, model: nn.Module) -> nn.Module:
        return model.to(memory_format=torch.channels_last) if self.channels_last else model


def maybe_compile(module: nn.Module, enabled: bool) -> nn.Module:
    """torch.compile the module when asked; parameters stay shared with the original module, so
    optimizer, checkpoints and evaluation use the uncompiled one."""
    return torch.compile(module) if enabled else module
