"""Backbone + margin head as one module (what DDP wraps), built from the training config."""
from __future__ import annotations

import torch
from torch import nn

from facetrain.checkpoint import load_backbone
from facetrain.data.transforms import normalize_batch
from facetrain.heads import build_head, build_margin
from facetrain.heads.partial_fc import PartialFC
from facetrain.models import build_model
from facetrain.training.amp import Precision
from facetrain.training.config import TrainConfig


class RecognitionNet(nn.Module):
    """forward(uint8 NHWC images on the device, labels) -> (loss, norms). Normalisation happens here,
    on the device; the loss is computed from float32 logits (the heads return float32)."""

    def __init__(self, model: nn.Module, head: nn.Module, precision: Precision, backbone_forward: nn.Module | None = None):
        super().__init__()
        self.model = model
        self.head = head
        self.precision = precision
        # torch.compile'd view of `model` sharing its parameters (not registered: no duplicate state)
        self._backbone = [model if backbone_forward is None else backbone_forward]  # a compiled module has no truth value
        ignored = head.ddp_ignored_names("head.")  # e.g. Partial FC's per-process shard of the centres
        if ignored:
            nn.parallel.DistributedDataParallel._set_params_and_buffers_to_ignore_for_model(self, ignored)

    def forward(self, images: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = normalize_batch(images, memory_format=self.precision.memory_format)
        with self.precision.autocast():
            embeddings, norms = self._backbone[0](x)
            loss = self.head.loss(embeddings, norms, labels)
        return loss, norms.detach()


def build_model_and_head(config: TrainConfig, num_classes: int, model: nn.Module | None = None) -> tuple[nn.Module, nn.Module]:
    """Fresh head, and fresh backbone unless `model` is given; with --start_from_model_statedict the
    backbone weights come from that checkpoint (ConfigError when its architecture is not --arch), the
    head starts fresh (as AdaFace)."""
    if model is None and config.start_from_model_statedict:
        model, _ = load_backbone(config.start_from_model_statedict, arch=config.arch)
        model.train()
    elif model is None:
        model = build_model(config.arch)
    if config.partial_fc:
        margin = build_margin(config.head, m=config.m, h=config.h, s=config.s, t_alpha=config.t_alpha)
        return model, PartialFC(margin, model.embedding_size, num_classes, config.sample_rate, seed=config.seed)
    head = build_head(config.head, embedding_size=model.embedding_size, class_num=num_classes,
                      m=config.m, h=config.h, s=config.s, t_alpha=config.t_alpha)
    return model, head
