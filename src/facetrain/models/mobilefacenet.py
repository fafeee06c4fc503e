"""MobileFaceNet (Chen et al., 2018): ~1.2M parameters with a 512-d embedding, for CPU work.

Table 1 of the paper: conv3x3/2 (64) -> depthwise 3x3 (64) -> inverted-residual bottlenecks
(t, c, n, s) = (2,64,5,2), (4,128,1,2), (2,128,6,1), (4,128,1,2), (2,128,2,1) -> conv1x1 (512)
-> global depthwise conv 7x7 (GDC) -> linear 1x1 to the embedding. The embedding is
512-d (not the paper's 128) and ends in BatchNorm1d(affine=False) as the IR models do, so a
MobileFaceNet drops into every place an IResNet does, AdaFace's norm statistics included.
"""
from __future__ import annotations

import torch
from torch import nn

from facetrain.models.iresnet import init_weights, normalize_embedding

# (expansion t, output channels c, repeats n, first stride s)
_BOTTLENECKS = ((2, 64, 5, 2), (4, 128, 1, 2), (2, 128, 6, 1), (4, 128, 1, 2), (2, 128, 2, 1))


class ConvBlock(nn.Sequential):
    """conv -> BN -> PReLU (keys .0 .1 .2)."""

    def __init__(self, in_channels: int, out_channels: int, kernel: int, stride: int = 1, groups: int = 1) -> None:
        super().__init__(
            nn.Conv2d(in_channels, out_channels, kernel, stride, kernel // 2, groups=groups, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.PReLU(out_channels),
        )


class InvertedResidual(nn.Module):
    """1x1 expand -> depthwise 3x3 (stride) -> linear 1x1 project; identity shortcut when shapes allow."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, expansion: int) -> None:
        super().__init__()
        hidden = in_channels * expansion
        self.stride = stride
        self.residual = stride == 1 and in_channels == out_channels
        self.layers = nn.Sequential(
            ConvBlock(in_channels, hidden, 1),
            ConvBlock(hidden, hidden, 3, stride, groups=hidden),
            nn.Conv2d(hidden, out_channels, 1, bias=False),
            nn.BatchNorm2d(out_channels),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.layers(x)
        return x + out if self.residual else out


class MobileFaceNet(nn.Module):
    """forward(x (B,3,112,112)) -> (unit embedding (B,E), norm (B,1)), both float32."""

    def __init__(self, embedding_size: int = 512) -> None:
        super().__init__()
        self.embedding_size = embedding_size
        self.input_layer = nn.Sequential(ConvBlock(3, 64, 3, stride=2), ConvBlock(64, 64, 3, groups=64))
        units = []
        in_channels = 64
        for expansion, channels, repeats, stride in _BOTTLENECKS:
            for i in range(repeats):
                units.append(InvertedResidual(in_channels, channels, stride if i == 0 else 1, expansion))
                in_channels = channels
        self.body = nn.Sequential(*units)
        self.conv_sep = ConvBlock(in_channels, 512, 1)
        self.output_layer = nn.Sequential(
            nn.Conv2d(512, 512, 7, groups=512, bias=False),  # GDC: one 7x7 weight map per channel
            nn.BatchNorm2d(512),
            nn.Flatten(),
            nn.Linear(512, embedding_size, bias=False),
            nn.BatchNorm1d(embedding_size, affine=False),
        )
        init_weights(self)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return normalize_embedding(self.output_layer(self.conv_sep(self.body(self.input_layer(x)))))

    def stages(self) -> list[list[nn.Module]]:
        """[input stem, stage 1, 2, 3]: as for the IR models, a stage runs from one unit that halves the
        resolution to the next (56 -> 28 -> 14 -> 7: bottleneck rows 1, 2-3 and 4-5 of Table 1)."""
        groups: list[list[nn.Module]] = [[self.input_layer]]
        for unit in self.body:
            if unit.stride == 2:
                groups.append([])
            groups[-1].append(unit)
        return groups
