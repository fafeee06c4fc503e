"""uint8 BGR images -> the model's input: float, BGR, (x/255 - 0.5) / 0.5, NCHW (AdaFace's `to_input`)."""
from __future__ import annotations

import numpy as np
import torch


def to_tensor(bgr: np.ndarray) -> torch.Tensor:
    """One HxWx3 uint8 BGR image -> (3,H,W) float32 in [-1, 1]."""
    if bgr.dtype != np.uint8 or bgr.ndim != 3 or bgr.shape[2] != 3:
        raise ValueError(f"expected an HxWx3 uint8 image, got {bgr.dtype} {bgr.shape}")
    return normalize_batch(torch.from_numpy(np.ascontiguousarray(bgr))[None])[0]


def normalize_batch(batch: torch.Tensor, dtype: torch.dtype = torch.float32,
                    memory_format: torch.memory_format = torch.contiguous_format) -> torch.Tensor:
    """(B,H,W,3) uint8 -> (B,3,H,W) `dtype` in [-1, 1], laid out in `memory_format` (NCHW by default;
    torch.channels_last is the NHWC order the uint8 batch already has); done on the device so loaders
    ship uint8 (4x less)."""
    return batch.permute(0, 3, 1, 2).to(dtype, memory_format=memory_format).div_(127.5).sub_(1.0)
