"""CosFace (Wang et al., 2018): logit_y = s * (cos_y - m)."""
from __future__ import annotations

import torch

from facetrain.heads.base import MarginHead


class CosFace(MarginHead):
    name = "cosface"

    def __init__(self, embedding_size: int = 512, class_num: int = 70722, m: float = 0.4, s: float = 64.0) -> None:
        super().__init__(embedding_size, class_num, m=m, s=s, eps=1e-4)

    def target_logit(self, cos_target: torch.Tensor, norms: torch.Tensor) -> torch.Tensor:
        return cos_target - self.m
