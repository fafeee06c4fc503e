"""The default device, said once: the first GPU when CUDA is available, else the CPU. A device asked
for by name is checked here, where every verb and the API resolve it: an unknown name or one this
machine does not have is one ConfigError line, not a traceback at the first tensor moved there."""
from __future__ import annotations

import torch

from facetrain.errors import ConfigError

# device type -> (is it usable here, how many of it)
_KINDS = {
    "cpu": (lambda: True, lambda: 1),
    "cuda": (lambda: torch.cuda.is_available(), lambda: torch.cuda.device_count()),
    "mps": (lambda: torch.backends.mps.is_available(), lambda: 1),
    "xpu": (lambda: hasattr(torch, "xpu") and torch.xpu.is_available(), lambda: torch.xpu.device_count()),
}


def default_device() -> torch.device:
    return torch.device("cuda", 0) if torch.cuda.is_available() else torch.device("cpu")


def resolve_device(name: str | torch.device | None) -> torch.device:
    """`None` or "auto" -> `default_device()`; anything else as torch names it ("cpu", "cuda:1"), when
    this machine has it."""
    if name is None or name == "auto":
        return default_device()
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError, ValueError):
        raise ConfigError(f"--device {name!r}: not a device name (auto, cpu, cuda, cuda:1, mps, ...)") from None
    if device.type not in _KINDS:
        raise ConfigError(f"--device {name!r}: facetrain runs on {', '.join(_KINDS)}, not {device.type}")
    usable, count = _KINDS[device.type]
    if not usable():
        raise ConfigError(f"--device {name!r}: this machine has no {device.type} device (torch "
                          f"{torch.__version__}); use --device cpu or auto")
    if device.index is not None and device.index >= count():
        raise ConfigError(f"--device {name!r}: this machine has {count()} {device.type} device(s)")
    return device
