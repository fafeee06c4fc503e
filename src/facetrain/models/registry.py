"""The model registry: one entry per architecture family with everything the project knows about it:
its constructor(s), the state-dict signature that identifies it in a checkpoint, its input
convention, and the released weight files (`facetrain.models.released`). The names are the `--arch`
values AdaFace uses."""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from functools import partial
from typing import Callable

import torch
from torch import nn

from facetrain.errors import ConfigError
from facetrain.models.iresnet import IRESNET_SPECS, IResNet, iresnet_arch_from_state
from facetrain.models.mobilefacenet import MobileFaceNet
from facetrain.models.tinynet import TinyNet

# Every backbone here takes the same input: (B, 3, 112, 112) float, BGR channel order,
# (x / 255 - 0.5) / 0.5, an aligned face (facetrain.data.transforms.to_tensor / normalize_batch).
INPUT_CONVENTION = "112x112 aligned face, BGR, (x/255 - 0.5) / 0.5"


@dataclass(frozen=True)
class ModelFamily:
    """Architectures built by one module. `arch_from_state` names the member whose weights a
    checkpoint holds (keys without the `model.` prefix), or None when they are not this family's."""
    builders: Mapping[str, Callable[..., nn.Module]]
    arch_from_state: Callable[[Mapping[str, torch.Tensor]], str | None]
    input_convention: str = INPUT_CONVENTION


def _by_key(key: str, name: str) -> Callable[[Mapping[str, torch.Tensor]], str | None]:
    return lambda state: name if key in state else None


FAMILIES: dict[str, ModelFamily] = {
    "iresnet": ModelFamily({name: partial(IResNet, spec) for name, spec in IRESNET_SPECS.items()},
                           iresnet_arch_from_state),
    "mobilefacenet": ModelFamily({"mobilefacenet": MobileFaceNet}, _by_key("conv_sep.0.weight", "mobilefacenet")),
    "tinynet": ModelFamily({"tinynet": TinyNet}, _by_key("stem_and_body.0.weight", "tinynet")),
}
_BUILDERS = {name: build for family in FAMILIES.values() for name, build in family.builders.items()}
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


def infer_arch(state: Mapping[str, torch.Tensor]) -> str | None:
    """Registry name of the backbone whose keys and shapes `state` has (no prefix), or None."""
    for family in FAMILIES.values():
        name = family.arch_from_state(state)
        if name is not None:
            return name
    return None
