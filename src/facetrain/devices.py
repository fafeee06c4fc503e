"""The default device, said once: the first GPU when CUDA is available, else the CPU."""
from __future__ import annotations

import torch


def default_device() -> torch.device:
    return torch.device("cuda", 0) if torch.cuda.is_available() else torch.device("cpu")


def resolve_device(name: str | torch.device | None) -> torch.device:
    """`None` or "auto" -> `default_device()`; anything else as torch names it ("cpu", "cuda:1")."""
    if name is None or name == "auto":
        return default_device()
    return torch.device(name)
