"""Architecture names -> constructors. The names are the `--arch` values AdaFace uses."""
from __future__ import annotations

from functools import partial
from typing import Callable

from torch import nn

from facetrain.errors import ConfigError
from facetrain.models.iresnet import IRESNET_SPECS, IResNet
from facetrain.models.mobilefacenet import MobileFaceNet
from facetrain.models.tinynet import TinyNet

_BUILDERS: dict[str, Callable[..., nn.Module]] = {
    **{name: partial(IResNet, spec) for name, spec in IRESNET_SPECS.items()},
    "mobilefacenet": MobileFaceNet,
    "tinynet": TinyNet,
}
# InsightFace calls the 100-layer IResNet "r100"; AdaFace calls the same network "ir_101".
_ALIASES = {"ir_100": "ir_101", "ir_se_100": "ir_se_101"}


def list_models(include_aliases: bool = False) -> list[str]:
    names = list(_BUILDERS)
    return names + list(_ALIASES) if include_aliases else names


def canonical_name(name: str) -> str:
    """The registry's own name for `name` (resolves aliases); ConfigError for unknown names."""
    name = _ALIASES.get(name, name)
    if name not in _BUILDERS:
        raise ConfigError(f"unknown architecture {name!r}; choose one of: {', '.join(list_models(True))}")
    return name


def build_model(name: str, embedding_size: int = 512) -> nn.Module:
    """A freshly initialised backbone; `model.arch` holds its canonical name (saved in checkpoints)."""
    name = canonical_name(name)
    model = _BUILDERS[name](embedding_size=embedding_size)
    model.arch = name
    return model
