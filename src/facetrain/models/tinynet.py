"""TinyNet: a plain 7-conv network (~0.03 GMACs, ~3.5M parameters) for the CPU demo and smoke tests.

On a 2-core CPU without bf16 units MobileFaceNet trains at ~20 img/s, too slow to learn anything in
the demo's 10 minutes; TinyNet trains ~10x faster. It keeps the IResNet interface and output block
(keys `output_layer.{0,3,4}`, embedding ending in BatchNorm1d(affine=False)), so heads, checkpoints
and evaluation treat it like any backbone. Not meant for real benchmarks.

Layout: conv3x3/2 (16) -> [conv3x3/2, conv3x3] x 3 with widths 32, 64, 128 (112 -> 56 -> 28 -> 14 -> 7),
each conv followed by BN and PReLU.
"""
from __future__ import annotations

import torch
from torch import nn

from facetrain.models.iresnet import init_weights, normalize_embedding

_WIDTHS = (16, 32, 64, 128)


def _conv(in_channels: int, out_channels: int, stride: int) -> list[nn.Module]:
    return [nn.Conv2d(in_channels, out_channels, 3, stride, 1, bias=False), nn.BatchNorm2d(out_channels),
            nn.PReLU(out_channels)]


class TinyNet(nn.Module):
    """forward(x (B,3,112,112)) -> (unit embedding (B,E), norm (B,1)), both float32."""

    def __init__(self, embedding_size: int = 512, widths: tuple[int, ...] = _WIDTHS) -> None:
        super().__init__()
        layers = _conv(3, widths[0], 2)
        for in_channels, out_channels in zip(widths, widths[1:]):
            layers += _conv(in_channels, out_channels, 2) + _conv(out_channels, out_channels, 1)
        self.stem_and_body = nn.Sequential(*layers)
        self.output_layer = nn.Sequential(
            nn.BatchNorm2d(widths[-1]),
            nn.Dropout(0.4),
            nn.Flatten(),
            nn.Linear(widths[-1] * 7 * 7, embedding_size),
            nn.BatchNorm1d(embedding_size, affine=False),
        )
        self.embedding_size = embedding_size
        init_weights(self)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return normalize_embedding(self.output_layer(self.stem_and_body(x)))

    def stages(self) -> list[list[nn.Module]]:
        """[input stem (the first conv/2), stage 1, 2, 3]: each stage is one [conv/2, conv] pair of
        widths 32, 64, 128 (56 -> 28 -> 14 -> 7), as the IR models' stages start by halving the resolution."""
        layers = list(self.stem_and_body)
        return [layers[:3]] + [layers[i:i + 6] for i in range(3, len(layers), 6)]
