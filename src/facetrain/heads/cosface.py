"""CosFace (Wang et al., 2018): logit_y = s * (cos_y - m)."""
from __future__ import annotations

import torch

from facetrain.heads.margin import Margin


class CosFaceMargin(Margin):
    name = "cosface"

    def __init__(self, m: float = 0.4, s: float = 64.0) -> None:
        super().__init__(m=m, s=s, eps=1e-4)

    def target_logit(self, cos_target: torch.Tensor, norms: torch.Tensor) -> torch.Tensor:
        return cos_target - self.m
