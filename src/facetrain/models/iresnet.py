"""IResNet ("IR" / "IR-SE") backbones for 112x112 faces, layer for layer as AdaFace's `net.py`.

Module names and their order are part of the checkpoint format: official AdaFace `.ckpt`
files load into these modules strictly (`input_layer.{0,1,2}`, `body.{i}.res_layer.{..}`,
`body.{i}.res_layer.se_block.{fc1,fc2}`, `body.{i}.shortcut_layer.{0,1}`,
`output_layer.{0,3,4}`), so do not rename, reorder or fuse layers here.
"""
from __future__ import annotations

import itertools
from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class IResNetSpec:
    """Units per stage; bottleneck units (ir_152/ir_200) use stage widths 256..2048 instead of 64..512."""

    units: tuple[int, int, int, int]
    bottleneck: bool = False
    se: bool = False

    @property
    def widths(self) -> tuple[int, int, int, int]:
        return (256, 512, 1024, 2048) if self.bottleneck else (64, 128, 256, 512)


_UNITS = {
    18: (2, 2, 2, 2),
    34: (3, 4, 6, 3),
    50: (3, 4, 14, 3),
    101: (3, 13, 30, 3),  # AdaFace builds "ir_101" with its 100-layer table
    152: (3, 8, 36, 3),
    200: (3, 24, 36, 3),
}
IRESNET_SPECS: dict[str, IResNetSpec] = {
    f"ir{'_se' if se else ''}_{depth}": IResNetSpec(units, bottleneck=depth > 101, se=se)
    for se in (False, True)
    for depth, units in _UNITS.items()
    if not se or depth >= 50
}


class SEModule(nn.Module):
    """Squeeze-and-excitation with 1x1 convs (keys `fc1`, `fc2`, no bias), reduction 16."""

    def __init__(self, channels: int, reduction: int = 16) -> None:
        super().__init__()
        self.avg_pool = nn.AdaptiveAvgPool2d(1)
        self.fc1 = nn.Conv2d(channels, channels // reduction, kernel_size=1, bias=False)
        self.relu = nn.ReLU(inplace=True)
        self.fc2 = nn.Conv2d(channels // reduction, channels, kernel_size=1, bias=False)
        self.sigmoid = nn.Sigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = self.sigmoid(self.fc2(self.relu(self.fc1(self.avg_pool(x)))))
        return x * scale


def _shortcut(in_channels: int, out_channels: int, stride: int) -> nn.Module:
    # AdaFace subsamples with a 1x1 max-pool (no parameters) when the width does not change.
    if in_channels == out_channels:
        return nn.MaxPool2d(1, stride)
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 1, stride, bias=False),
        nn.BatchNorm2d(out_channels),
    )


class BasicBlockIR(nn.Module):
    """BN -> conv3x3 -> BN -> PReLU -> conv3x3 (stride) -> BN [-> SE], plus the shortcut."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, se: bool = False) -> None:
        super().__init__()
        self.shortcut_layer = _shortcut(in_channels, out_channels, stride)
        self.res_layer = nn.Sequential(
            nn.BatchNorm2d(in_channels),
            nn.Conv2d(in_channels, out_channels, 3, 1, 1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.PReLU(out_channels),
            nn.Conv2d(out_channels, out_channels, 3, stride, 1, bias=False),
            nn.BatchNorm2d(out_channels),
        )
        if se:
            self.res_layer.add_module("se_block", SEModule(out_channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.res_layer(x) + self.shortcut_layer(x)


class BottleneckIR(nn.Module):
    """BN -> 1x1 -> BN -> PReLU -> 3x3 -> BN -> PReLU -> 1x1 (stride) -> BN [-> SE], width/4 inside."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, se: bool = False) -> None:
        super().__init__()
        inner = out_channels // 4
        self.shortcut_layer = _shortcut(in_channels, out_channels, stride)
        self.res_layer = nn.Sequential(
            nn.BatchNorm2d(in_channels),
            nn.Conv2d(in_channels, inner, 1, 1, 0, bias=False),
            nn.BatchNorm2d(inner),
            nn.PReLU(inner),
            nn.Conv2d(inner, inner, 3, 1, 1, bias=False),
            nn.BatchNorm2d(inner),
            nn.PReLU(inner),
            nn.Conv2d(inner, out_channels, 1, stride, 0, bias=False),
            nn.BatchNorm2d(out_channels),
        )
        if se:
            self.res_layer.add_module("se_block", SEModule(out_channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.res_layer(x) + self.shortcut_layer(x)


def normalize_embedding(features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(emb / ||emb||, ||emb||) in float32: under bf16/fp16 autocast the norm feeds AdaFace's margin."""
    features = features.float()
    norm = torch.linalg.vector_norm(features, ord=2, dim=1, keepdim=True)
    return features / norm, norm


def init_weights(module: nn.Module) -> None:
    """AdaFace's `initialize_weights`: kaiming-normal (fan_out, relu) convs and linears, BN2d = identity."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


class IResNet(nn.Module):
    """forward(x (B,3,112,112)) -> (unit embedding (B,E), norm (B,1)), both float32."""

    def __init__(self, spec: IResNetSpec, embedding_size: int = 512) -> None:
        super().__init__()
        self.spec = spec
        self.embedding_size = embedding_size
        self.input_layer = nn.Sequential(nn.Conv2d(3, 64, 3, 1, 1, bias=False), nn.BatchNorm2d(64), nn.PReLU(64))
        unit = BottleneckIR if spec.bottleneck else BasicBlockIR
        units = []
        in_channels = 64
        for width, count in zip(spec.widths, spec.units):
            for i in range(count):
                units.append(unit(in_channels, width, stride=2 if i == 0 else 1, se=spec.se))
                in_channels = width
        self.body = nn.Sequential(*units)
        self.output_layer = nn.Sequential(
            nn.BatchNorm2d(in_channels),
            nn.Dropout(0.4),
            nn.Flatten(),  # reshape, so channels_last activations work
            nn.Linear(in_channels * 7 * 7, embedding_size),
            nn.BatchNorm1d(embedding_size, affine=False),
        )
        init_weights(self)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return normalize_embedding(self.output_layer(self.body(self.input_layer(x))))

    def stages(self) -> list[list[nn.Module]]:
        """[input stem, stage 1, ..., stage 4]: a stage is the units of one width (`spec.units`), the
        first of which halves the resolution (112 -> 56 -> 28 -> 14 -> 7)."""
        units, groups, start = list(self.body), [[self.input_layer]], 0
        for count in self.spec.units:
            groups.append(units[start:start + count])
            start += count
        return groups


def iresnet_arch_from_state(state: Mapping[str, torch.Tensor]) -> str | None:
    """Name of the IResNet whose stage layout `state` (keys without prefix) has, or None: units are
    counted per stage from the output widths of each unit's last convolution."""
    units = sorted({int(k.split(".")[1]) for k in state if k.startswith("body.")})
    if not units or units != list(range(len(units))):
        return None
    bottleneck = "body.0.res_layer.8.weight" in state
    last_conv = 7 if bottleneck else 4
    try:
        widths = [state[f"body.{i}.res_layer.{last_conv}.weight"].shape[0] for i in units]
    except KeyError:
        return None
    stages = [(width, len(list(group))) for width, group in itertools.groupby(widths)]
    se = "body.0.res_layer.se_block.fc1.weight" in state
    spec = IResNetSpec(tuple(count for _, count in stages), bottleneck=bottleneck, se=se)
    for name, known in IRESNET_SPECS.items():
        if known == spec and known.widths == tuple(width for width, _ in stages):
            return name
    return None
