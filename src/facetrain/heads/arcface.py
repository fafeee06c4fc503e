"""ArcFace (Deng et al., 2019): logit_y = s * cos(clip(theta_y + m, eps, pi - eps))."""
from __future__ import annotations

import math

import torch

from facetrain.heads.margin import Margin


class ArcFaceMargin(Margin):
    name = "arcface"

    def __init__(self, m: float = 0.5, s: float = 64.0) -> None:
        super().__init__(m=m, s=s, eps=1e-4)

    def target_logit(self, cos_target: torch.Tensor, norms: torch.Tensor) -> torch.Tensor:
        # the clip keeps theta + m below pi, where cos would turn back up and reward wrong classes
        return (cos_target.acos() + self.m).clamp(self.eps, math.pi - self.eps).cos()
