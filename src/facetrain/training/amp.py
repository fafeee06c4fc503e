"""How the training step runs: precision (names and `auto` in `facetrain.precision`), loss scaling, layout."""
from __future__ import annotations

from dataclasses import dataclass
from typing import ContextManager

import torch
from torch import nn

from facetrain.precision import autocast, autocast_dtype


@dataclass
class Precision:
    """How the training step runs: autocast dtype (None = fp32), loss scaler, memory layout."""
    name: str
    device: torch.device
    channels_last: bool = False

    @property
    def autocast_dtype(self) -> torch.dtype | None:
        return autocast_dtype(self.name)

    def autocast(self) -> ContextManager:
        return autocast(self.name, self.device)

    def make_scaler(self) -> torch.amp.GradScaler:
        """Loss scaling only for fp16 (bf16 has fp32's range); a disabled scaler is a no-op."""
        return torch.amp.GradScaler(self.device.type, enabled=self.name == "fp16")

    @property
    def memory_format(self) -> torch.memory_format:
        """Of the input batch and the backbone's weights."""
        return torch.channels_last if self.channels_last else torch.contiguous_format

    def prepare_model(self, model: nn.Module) -> nn.Module:
        return model.to(memory_format=torch.channels_last) if self.channels_last else model


def maybe_compile(module: nn.Module, enabled: bool) -> nn.Module:
    """torch.compile the module when asked; parameters stay shared with the original module, so
    optimizer, checkpoints and evaluation use the uncompiled one."""
    return torch.compile(module) if enabled else module
