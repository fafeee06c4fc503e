"""Partial FC (An et al., CVPR 2022; arcface_torch's `partial_fc_v2`): the class centres sharded over
the ranks of a process group, a sample of each shard's negative classes per step, and a softmax
cross-entropy computed across the ranks. With the same margins as the single-process head.

Rank r holds the columns `[start, stop)` of AdaFace's (E, C) `head.kernel` as its `kernel`
(C split as evenly as possible: the first C % W ranks hold one class more). A step:
1. embeddings, norms and labels of every rank are all-gathered (embeddings with gradient);
2. each rank keeps every class of its shard that is a label in the global batch, plus negatives
   drawn uniformly without replacement, `k = max(int(sample_rate * shard), min(global batch, shard))`
   columns in all (a fixed count: shapes never depend on the data, so nothing syncs with the host;
   arcface_torch takes exactly the positives when they outnumber int(sample_rate * shard));
3. cosines to the sampled centres -> the margin (AdaFace's statistics over the global batch, the
   same on every rank) -> distributed cross-entropy, the mean over the global batch.

Gradients: each rank's kernel gets the exact gradient of the global loss (only sampled columns are
non-zero). Each rank's embeddings get the exact gradient too (the reduce-scatter adjoint of the
all-gather); it is multiplied by W because DistributedDataParallel then averages the backbone's
gradients over the W ranks. The kernel must therefore stay out of DDP (see `ddp_ignored_names`).

Optimizer: as arcface_torch v2 (train_v2.py), the shard is one dense parameter of the ordinary SGD
optimizer, so its momentum buffer is sharded with it; unsampled columns get a zero gradient and
still move by their momentum and weight decay (v1's per-step momentum bookkeeping was dropped in v2).
"""
from __future__ import annotations

import os
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from facetrain.errors import ConfigError
from facetrain.heads.collectives import all_gather, all_gather_with_grad, distributed_cross_entropy
from facetrain.heads.head import _flatten_margin_keys, _nest_margin_keys
from facetrain.heads.margin import Margin
from facetrain.heads.partial_fc_checkpoint import (link_shard, main_file_entries, remove_stale_shards, resume_head,
                                                  save_shard, shard_name)
from facetrain.heads.shard import Shard, all_shards

INIT_BLOCK = 8192  # classes per independently seeded block of the initial centres


def init_centres(embedding_size: int, start: int, stop: int, seed: int) -> torch.Tensor:
    """Columns [start, stop) of the initial (E, C) kernel: AdaFace's distribution (uniform(-1, 1), each
    column scaled to unit norm), drawn in blocks of INIT_BLOCK classes from generators seeded by
    (seed, block), so every rank draws only its own columns and the centres do not depend on W."""
    parts = []
    for block in range(start // INIT_BLOCK, (stop - 1) // INIT_BLOCK + 1):
        generator = torch.Generator().manual_seed(seed * 1_000_003 + block)
        values = torch.empty(embedding_size, INIT_BLOCK).uniform_(-1, 1, generator=generator)
        lo, hi = max(start, block * INIT_BLOCK), min(stop, (block + 1) * INIT_BLOCK)
        parts.append(values[:, lo - block * INIT_BLOCK:hi - block * INIT_BLOCK])
    kernel = torch.cat(parts, dim=1) if parts else torch.empty(embedding_size, 0)
    return F.normalize(kernel, dim=0)


class _ScaleGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx, tensor: torch.Tensor, factor: float) -> torch.Tensor:  # type: ignore[override]
        ctx.factor = factor
        return tensor.view_as(tensor)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:  # type: ignore[override]
        return grad * ctx.factor, None


class _GatherColumns(torch.autograd.Function):
    """kernel[:, kept] (distinct columns) whose backward builds the dense gradient in place: one
    zero-filled (E, shard) tensor with the sampled columns added, where index_select's backward
    would copy it once more (a shard-sized pass and allocation saved per step)."""

    @staticmethod
    def forward(ctx, kernel: torch.Tensor, kept: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        ctx.save_for_backward(kept)
        ctx.shape = kernel.shape
        return kernel.index_select(1, kept)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:  # type: ignore[override]
        (kept,) = ctx.saved_tensors
        return grad.new_zeros(ctx.shape).index_add_(1, kept, grad), None


def sample_columns(labels: torch.Tensor, shard_size: int, num_sample: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(sorted columns kept (num_sample,), labels mapped to positions among them or -1).

    `labels` are shard-local (-1 = held elsewhere); every positive is kept (it scores 2 against
    uniform [0, 1) scores of the others), the rest of the `num_sample` are uniform negatives."""
    in_shard = labels >= 0
    scores = torch.rand(shard_size + 1, device=labels.device)
    # the extra slot absorbs the rows whose class is held elsewhere (no boolean indexing: no sync)
    scores.index_fill_(0, torch.where(in_shard, labels, shard_size), 2.0)
    kept = scores[:shard_size].topk(num_sample, sorted=False).indices.sort().values
    position = torch.searchsorted(kept, labels.clamp(min=0))
    return kept, torch.where(in_shard, position, -1)


class PartialFC(nn.Module):
    """forward(embeddings (B,E) unit-norm, norms (B,1), labels (B,) global class ids) -> the global
    batch's mean loss (scalar, the same on every rank). Every rank of `group` must call it together,
    with the same B."""

    def __init__(self, margin: Margin, embedding_size: int, num_classes: int, sample_rate: float = 1.0,
                 seed: int = 0, group: dist.ProcessGroup | None = None) -> None:
        super().__init__()
        if not 0.0 < sample_rate <= 1.0:
            raise ConfigError(f"--sample_rate must be in (0, 1], got {sample_rate}")
        distributed = dist.is_available() and dist.is_initialized()
        world, rank = (dist.get_world_size(group), dist.get_rank(group)) if distributed else (1, 0)
        if num_classes < world:
            raise ConfigError(f"Partial FC needs at least one class per process: {num_classes} classes, "
                              f"{world} processes")
        self.shard = Shard(num_classes, world, rank)
        self.group = group
        self.embedding_size = embedding_size
        self.class_num = num_classes
        self.sample_rate = sample_rate
        self.margin = margin
        self.kernel = nn.Parameter(init_centres(embedding_size, self.shard.start, self.shard.stop, seed))

    name = property(lambda self: self.margin.name)
    m = property(lambda self: self.margin.m)
    s = property(lambda self: self.margin.s)

    def hparams(self) -> dict[str, Any]:
        return {**self.margin.hparams(), "class_num": self.class_num, "embedding_size": self.embedding_size,
                "partial_fc": True, "sample_rate": self.sample_rate}

    def ddp_ignored_names(self, prefix: str) -> list[str]:
        """Names (under `prefix`) DistributedDataParallel must neither average nor broadcast: the
        shard differs per rank; the margin's statistics are already equal on every rank."""
        return [prefix + name for name, _ in [*self.named_parameters(), *self.named_buffers()]]

    def num_sample(self, global_batch: int) -> int:
        return min(self.shard.size, max(int(self.sample_rate * self.shard.size), global_batch))

    def forward(self, embeddings: torch.Tensor, norms: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        world = self.shard.world_size
        if world > 1:
            embeddings = _ScaleGrad.apply(embeddings, float(world))
        embeddings = all_gather_with_grad(embeddings, self.group)
        norms = all_gather(norms.detach().float(), self.group)
        labels = all_gather(labels.long().view(-1), self.group)
        local = labels - self.shard.start
        local = torch.where((local >= 0) & (local < self.shard.size), local, -1)
        kernel = self.kernel
        if self.sample_rate < 1.0:
            kept, local = sample_columns(local, self.shard.size, self.num_sample(labels.shape[0]))
            kernel = _GatherColumns.apply(kernel, kept)
        with torch.autocast(embeddings.device.type, enabled=False):
            cos = embeddings.float() @ F.normalize(kernel.float(), dim=0)
        logits = self.margin(cos, local, norms)
        return distributed_cross_entropy(logits, local, self.group)

    # The training interface of every head (see MarginHead); the shard files are
    # `facetrain.heads.partial_fc_checkpoint`'s.

    def loss(self, embeddings: torch.Tensor, norms: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """The global batch's mean loss (forward already computes it across the processes)."""
        return self(embeddings, norms, labels)

    def save_rank_state(self, checkpoint: str | os.PathLike, optimizer: torch.optim.Optimizer, step: int) -> None:
        """This process's shard of the centres and their momentum, written before the main file names it."""

        save_shard(checkpoint, self, optimizer, step)

    def checkpoint_state(self, optimizer: torch.optim.Optimizer, step: int) -> tuple[nn.Module, dict[str, Any]]:
        """(the margin's state, saved as `head.*`; the optimizer state without the centres' momentum and
        the entry naming every process's shard file)."""

        names = [shard_name(s, step) for s in all_shards(self.class_num, self.shard.world_size)]
        optimizer_state, entry = main_file_entries(self, optimizer, names)
        return MarginState(self), {"optimizer_state": optimizer_state, "partial_fc": entry}

    def remove_stale_rank_state(self, checkpoint: str | os.PathLike, step: int) -> None:
        """This process's shard files of `checkpoint` older than `step` (after the main file names the new one)."""

        remove_stale_shards(checkpoint, self.shard, keep=shard_name(self.shard, step))

    def link_rank_state(self, src: str | os.PathLike, dst: str | os.PathLike, step: int) -> None:
        """This process's shard of `src` made one of `dst` (before `dst`'s main file is copied)."""

        link_shard(src, dst, shard_name(self.shard, step))

    def load_checkpoint_state(self, checkpoint: str | os.PathLike, head_state: dict, extra: dict,
                              optimizer: torch.optim.Optimizer) -> None:
        """The margin, the optimizer and this process's columns of the centres, from a checkpoint of
        any layout: shards of any number of processes, or a full head."""

        resume_head(checkpoint, head_state, extra, self, MarginState(self), optimizer)


class MarginState(nn.Module):
    """What every rank of a Partial FC head holds alike: the margin (AdaFace's statistics), under
    AdaFace's state-dict keys (`t`, `batch_mean`, `batch_std`) and with the head's hparams. The main
    checkpoint file stores this as `head.*`; the centres go to per-rank shard files."""

    def __init__(self, head: PartialFC) -> None:
        super().__init__()
        self.margin = head.margin
        self._head = [head]  # not registered: the shard is not part of this state
        self.register_state_dict_post_hook(_flatten_margin_keys)
        self.register_load_state_dict_pre_hook(_nest_margin_keys)

    def hparams(self) -> dict[str, Any]:
        return self._head[0].hparams()
