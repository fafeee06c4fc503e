"""The margin: how a head changes the true class's logit (AdaFace, ArcFace, CosFace).

A head has two jobs, kept apart: the classifier holds the class centres and gives the cosines of
the embeddings to them (whole in `MarginHead`, sharded across processes in Partial FC), and the
margin turns those cosines into scaled logits. Only the true class's column changes, so the margin
is computed on the B target cosines gathered from the (B, K) matrix and scattered back: no one-hot
matrices and no arccos over the whole matrix. Everything runs in float32, also under autocast:
bf16 logits near s=64 are rounded to steps of 0.25 (cosines to ~0.004), which blurs the small logit
differences that the softmax turns into gradients.
"""
from __future__ import annotations

import torch
from torch import nn


class Margin(nn.Module):
    """forward(cos (B,K), labels (B,), norms (B,1)) -> scaled logits (B,K) float32.

    `labels[i]` is the column of sample i's true class among the K given, or -1 when its class is
    not among them (a Partial FC shard that does not hold it): that row gets plain s*cos everywhere.
    """

    name = "base"

    def __init__(self, m: float, s: float, eps: float) -> None:
        super().__init__()
        self.m = m
        self.s = s
        self.eps = eps

    def hparams(self) -> dict[str, float | str]:
        return {"head": self.name, "m": self.m, "s": self.s}

    def target_logit(self, cos_target: torch.Tensor, norms: torch.Tensor) -> torch.Tensor:
        """Unscaled logit of the true class, from its cosine (B,1) and the feature norms (B,1)."""
        raise NotImplementedError

    def forward(self, cos: torch.Tensor, labels: torch.Tensor, norms: torch.Tensor) -> torch.Tensor:
        with torch.autocast(cos.device.type, enabled=False):
            # clamped so that arccos has finite gradients
            cos = cos.float().clamp(-1 + self.eps, 1 - self.eps)
            labels = labels.long().view(-1, 1)
            index = labels.clamp(min=0)
            cos_target = cos.gather(1, index)
            # every row goes through target_logit, so AdaFace's statistics see the whole batch
            target = self.target_logit(cos_target, norms.float())
            # rows whose class is elsewhere keep their cosine (torch.where: no host sync on the mask)
            target = torch.where(labels >= 0, target, cos_target)
            # scaling first gives a fresh tensor to scatter into in place: one B x K buffer fewer
            return (cos * self.s).scatter_(1, index, target * self.s)
