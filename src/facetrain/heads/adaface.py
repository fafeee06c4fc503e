"""AdaFace (Kim et al., CVPR 2022): a margin that adapts to image quality via the feature norm.

The batch-normalised norm zhat = clip(h * (||z|| - mu) / (sigma + eps), -1, 1) moves the
target-class margin between ArcFace-like (zhat = -1: angular margin m, for low-quality
images) and CosFace-like (zhat = 0: additive margin m) and beyond (zhat = 1: both shifted):
    theta' = clip(theta_y - m * zhat, eps, pi - eps),  logit_y = s * (cos(theta') - (m + m * zhat)).
mu and sigma are EMAs of the batch mean/std of the norms, kept as buffers with AdaFace's
names and shapes (`t`, `batch_mean`, `batch_std`, all shape (1,)) so official checkpoints load.

Defaults are the paper's (m=0.4, h=0.333). AdaFace's own command line defaults to m=0.5,
h=0.0, with which zhat is always 0 and the "adaface" head is simply a CosFace with m=0.5.
"""
from __future__ import annotations

import math

import torch

from facetrain.heads.margin import Margin


class AdaFaceMargin(Margin):
    name = "adaface"

    def __init__(
        self,
        m: float = 0.4,
        h: float = 0.333,
        s: float = 64.0,
        t_alpha: float = 0.01,
    ) -> None:
        super().__init__(m=m, s=s, eps=1e-3)
        self.h = h
        self.t_alpha = t_alpha
        # `t` is unused, as in AdaFace; it exists so that state_dicts match key for key.
        self.register_buffer("t", torch.zeros(1))
        self.register_buffer("batch_mean", torch.ones(1) * 20)
        self.register_buffer("batch_std", torch.ones(1) * 100)

    def hparams(self) -> dict[str, float | int | str]:
        return {**super().hparams(), "h": self.h, "t_alpha": self.t_alpha}

    def margin_scaler(self, norms: torch.Tensor) -> torch.Tensor:
        """zhat (B,1) from the norms; in training mode the EMA statistics are updated first, as AdaFace does.
        Under Partial FC the norms are the global batch's, so the statistics are too."""
        safe_norms = norms.detach().float().clamp(0.001, 100)
        # a single sample has no (unbiased) std: keep the statistics rather than poison them with NaN
        if self.training and safe_norms.numel() > 1:
            with torch.no_grad():
                a = self.t_alpha
                self.batch_mean.copy_(safe_norms.mean() * a + (1 - a) * self.batch_mean)
                self.batch_std.copy_(safe_norms.std() * a + (1 - a) * self.batch_std)
        zhat = (safe_norms - self.batch_mean) / (self.batch_std + self.eps) * self.h
        return zhat.clamp(-1, 1)

    def target_logit(self, cos_target: torch.Tensor, norms: torch.Tensor) -> torch.Tensor:
        zhat = self.margin_scaler(norms)
        theta = (cos_target.acos() - self.m * zhat).clamp(self.eps, math.pi - self.eps)
        return theta.cos() - (self.m + self.m * zhat)
