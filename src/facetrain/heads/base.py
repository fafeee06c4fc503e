"""Shared part of the margin heads: a (E, C) class-weight `kernel` with unit-norm columns.

Subclasses only change the true class's logit, so the margin is computed on the B target
cosines gathered from the (B, C) matrix and scattered back: no one-hot matrices and no
arccos over the whole matrix. Everything runs in float32, also under autocast: bf16 logits
near s=64 are rounded to steps of 0.25 (cosines to ~0.004), which blurs the small logit
differences that the softmax turns into gradients.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class MarginHead(nn.Module):
    """forward(embeddings (B,E) unit-norm, norms (B,1), labels (B,)) -> scaled logits (B,C) float32."""

    name = "base"

    def __init__(self, embedding_size: int, class_num: int, m: float, s: float, eps: float) -> None:
        super().__init__()
        self.embedding_size = embedding_size
        self.class_num = class_num
        self.m = m
        self.s = s
        self.eps = eps
        self.kernel = nn.Parameter(torch.empty(embedding_size, class_num))
        with torch.no_grad():
            # renorm caps every column at norm 1e-5, so after *1e5 each column has unit norm
            self.kernel.uniform_(-1, 1).renorm_(2, 1, 1e-5).mul_(1e5)

    def hparams(self) -> dict[str, float | int | str]:
        return {"head": self.name, "class_num": self.class_num, "embedding_size": self.embedding_size,
                "m": self.m, "s": self.s}

    def cosine(self, embeddings: torch.Tensor) -> torch.Tensor:
        """(B, C) cosines to every class, clamped to [-1+eps, 1-eps] so arccos has finite gradients."""
        with torch.autocast(embeddings.device.type, enabled=False):
            cos = embeddings.float() @ F.normalize(self.kernel.float(), dim=0)
        return cos.clamp(-1 + self.eps, 1 - self.eps)

    def target_logit(self, cos_target: torch.Tensor, norms: torch.Tensor) -> torch.Tensor:
        """Unscaled logit of the true class, from its cosine (B,1) and the feature norms (B,1)."""
        raise NotImplementedError

    def forward(self, embeddings: torch.Tensor, norms: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        cos = self.cosine(embeddings)
        index = labels.long().view(-1, 1)
        with torch.autocast(cos.device.type, enabled=False):
            target = self.target_logit(cos.gather(1, index), norms.float())
            # scaling first gives a fresh tensor to scatter into in place: one B x C buffer fewer
            return (cos * self.s).scatter_(1, index, target * self.s)
