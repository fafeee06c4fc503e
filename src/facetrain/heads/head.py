"""The whole head in one process: every class centre (a (E, C) `kernel` with unit-norm columns, no
bias) plus a margin. Its state-dict keys are AdaFace's (`kernel`, and for AdaFace `t`, `batch_mean`,
`batch_std`, not `margin.*`), so official checkpoints load and AdaFace's tools read ours."""
from __future__ import annotations

import os
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from facetrain.errors import ConfigError
from facetrain.heads.adaface import AdaFaceMargin
from facetrain.heads.arcface import ArcFaceMargin
from facetrain.heads.cosface import CosFaceMargin
from facetrain.heads.margin import Margin
from facetrain.heads.partial_fc_checkpoint import shard_dir

MARGIN_PREFIX = "margin."


def init_class_centres(embedding_size: int, class_num: int) -> torch.Tensor:
    """AdaFace's initialisation: uniform(-1, 1), then every column scaled to unit norm."""
    kernel = torch.empty(embedding_size, class_num)
    # renorm caps every column at norm 1e-5, so after *1e5 each column has unit norm
    return kernel.uniform_(-1, 1).renorm_(2, 1, 1e-5).mul_(1e5)


class MarginHead(nn.Module):
    """forward(embeddings (B,E) unit-norm, norms (B,1), labels (B,)) -> scaled logits (B,C) float32."""

    def __init__(self, margin: Margin, embedding_size: int, class_num: int) -> None:
        super().__init__()
        self.embedding_size = embedding_size
        self.class_num = class_num
        self.kernel = nn.Parameter(init_class_centres(embedding_size, class_num))
        self.margin = margin
        self.register_state_dict_post_hook(_flatten_margin_keys)
        self.register_load_state_dict_pre_hook(_nest_margin_keys)

    # the margin's settings, read (and in tests set) through the head as before the split
    name = property(lambda self: self.margin.name)
    m = property(lambda self: self.margin.m)
    s = property(lambda self: self.margin.s)
    eps = property(lambda self: self.margin.eps, lambda self, value: setattr(self.margin, "eps", value))

    def hparams(self) -> dict[str, Any]:
        return {**self.margin.hparams(), "class_num": self.class_num, "embedding_size": self.embedding_size}

    def cosine(self, embeddings: torch.Tensor) -> torch.Tensor:
        """(B, C) cosines of the embeddings to every class centre, in float32 (see heads.margin)."""
        with torch.autocast(embeddings.device.type, enabled=False):
            return embeddings.float() @ F.normalize(self.kernel.float(), dim=0)

    def forward(self, embeddings: torch.Tensor, norms: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return self.margin(self.cosine(embeddings), labels, norms)

    # The training interface every head answers (Partial FC too), so that the trainer, checkpoints
    # and resume never ask which head they hold.

    def loss(self, embeddings: torch.Tensor, norms: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """The batch's mean cross-entropy, from float32 logits, outside autocast."""
        logits = self(embeddings, norms, labels)
        with torch.autocast(logits.device.type, enabled=False):
            return F.cross_entropy(logits.float(), labels)

    def ddp_ignored_names(self, prefix: str) -> list[str]:
        """Nothing: DistributedDataParallel keeps every centre equal across the processes."""
        return []

    def save_rank_state(self, checkpoint: str | os.PathLike, optimizer: torch.optim.Optimizer, step: int) -> None:
        """Files each process writes before the main checkpoint file: none, the main file holds everything."""

    def checkpoint_state(self, optimizer: torch.optim.Optimizer, step: int) -> tuple[nn.Module, dict[str, Any]]:
        """(the module saved as `head.*`, extra entries of the main file): the whole head, nothing more."""
        return self, {}

    def remove_stale_rank_state(self, checkpoint: str | os.PathLike, step: int) -> None:
        """Files older than `step` to remove once the main file is written: none."""

    def link_rank_state(self, src: str | os.PathLike, dst: str | os.PathLike, step: int) -> None:
        """Per-process files of `src` to give `dst` too before it is copied: none."""

    def load_checkpoint_state(self, checkpoint: str | os.PathLike, head_state: dict, extra: dict,
                              optimizer: torch.optim.Optimizer) -> None:
        """Load the head and the optimizer from a saved full head; a Partial FC checkpoint is refused
        (it resumes with --partial_fc, or after `facetrain consolidate`)."""
        if "partial_fc" in extra:
            raise ConfigError(f"{checkpoint}: holds a Partial FC head (shards in {shard_dir(checkpoint)}): resume "
                              "with --partial_fc, or write a full-head checkpoint with `facetrain consolidate`")
        self.load_state_dict(head_state, strict=True)
        optimizer.load_state_dict(extra["optimizer_states"][0])


def _flatten_margin_keys(module: nn.Module, state_dict: dict, prefix: str, local_metadata: dict) -> None:
    for key in [k for k in state_dict if k.startswith(prefix + MARGIN_PREFIX)]:
        state_dict[prefix + key[len(prefix + MARGIN_PREFIX):]] = state_dict.pop(key)


def _nest_margin_keys(module: nn.Module, state_dict: dict, prefix: str, *args: Any) -> None:
    for name in dict(module.margin.named_buffers()):
        if prefix + name in state_dict:
            state_dict[prefix + MARGIN_PREFIX + name] = state_dict.pop(prefix + name)


class AdaFace(MarginHead):
    def __init__(self, embedding_size: int = 512, class_num: int = 70722, m: float = 0.4, h: float = 0.333,
                 s: float = 64.0, t_alpha: float = 0.01) -> None:
        super().__init__(AdaFaceMargin(m=m, h=h, s=s, t_alpha=t_alpha), embedding_size, class_num)

    h = property(lambda self: self.margin.h)
    t_alpha = property(lambda self: self.margin.t_alpha)
    t = property(lambda self: self.margin.t)
    batch_mean = property(lambda self: self.margin.batch_mean)
    batch_std = property(lambda self: self.margin.batch_std)


class ArcFace(MarginHead):
    def __init__(self, embedding_size: int = 512, class_num: int = 70722, m: float = 0.5, s: float = 64.0) -> None:
        super().__init__(ArcFaceMargin(m=m, s=s), embedding_size, class_num)


class CosFace(MarginHead):
    def __init__(self, embedding_size: int = 512, class_num: int = 70722, m: float = 0.4, s: float = 64.0) -> None:
        super().__init__(CosFaceMargin(m=m, s=s), embedding_size, class_num)
