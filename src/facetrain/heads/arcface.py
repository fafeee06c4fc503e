"""ArcFace (Deng et al., 2019): logit_y = s * cos(clip(theta_y + m, eps, pi - eps))."""
from __future__ import annotations

import math

import torch

from facetrain.heads.base import MarginHead


class ArcFace(MarginHead):
    name = "arcface"

    def __init__(self, embedding_size: int = 512, class_num: int = 70722, m: float = 0.5, s: float = 64.0) -> None:
        super().__init__(embedding_size, class_num, m=m, s=s, eps=1e-4)

    def target_logit(self, cos_target: torch.Tensor, norms: torch.Tensor) -> torch.Tensor:
        # the clip keeps theta + m below pi, where cos would turn back up and reward wrong classes
        return (cos_target.acos() + self.m).clamp(self.eps, math.pi - self.eps).cos()
