"""Fine-tuning a trained backbone on new data (`--finetune_from`).

- The backbone comes from our checkpoints, AdaFace's released files (by name, from `./pretrained/` or
  `$FACETRAIN_HOME/pretrained/`) or an `hf://owner/repo/file` in the local Hugging Face cache, resolved
  as `facetrain.load_model` resolves them. Its architecture must be `--arch`.
- The head is new, sized to this data's classes, unless the checkpoint's head can go on as it is: the
  same head kind, the same class count and the same training data (its recorded data fingerprint).
- `--freeze_stages N` freezes the input stem and the first N stages (`model.stages()`: a stage runs
  from one unit that halves the resolution to the next; IR models have 4, MobileFaceNet and TinyNet 3):
  no gradients, left out of the optimizer, and their batch normalisation kept in eval mode, so their
  running statistics stay those of the checkpoint across every `train()` call.
- `--backbone_lr_scale` and `--head_warmup_epochs` shape the backbone's learning rate in the per-step
  schedule (`training.optim`), so a resumed run continues them exactly, and under DDP no parameter
  changes whether it needs a gradient in the middle of a run.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

from torch import nn

from facetrain.checkpoint import load_backbone
from facetrain.errors import ConfigError, FacetrainError
from facetrain.models import build_model, canonical_name
from facetrain.models.released import resolve_checkpoint
from facetrain.training import distributed
from facetrain.training.config import FINETUNE_FLAGS, TrainConfig


@dataclass
class FinetuneStart:
    model: nn.Module  # in training mode; other ranks get rank 0's weights with DDP's first broadcast
    head_state: dict[str, Any] | None  # rank 0: the checkpoint's head when it goes on; else None
    note: str  # what the run's log says about where it started


def load_start(config: TrainConfig, ctx: distributed.DistContext, num_classes: int, fingerprint: str) -> FinetuneStart:
    """Rank 0 reads `--finetune_from` and decides about the head; every rank gets the same backbone shape,
    the decision and its note (a bad file is the same ConfigError on every rank)."""
    model, head_state, outcome = None, None, None
    if ctx.is_main:
        try:
            path, released_arch = resolve_checkpoint(config.finetune_from)
            if released_arch and canonical_name(released_arch) != canonical_name(config.arch):
                raise ConfigError(f"{path} holds an {released_arch} backbone: give --arch {released_arch}")
            model, info = load_backbone(path, arch=config.arch)
            head_state, head_note = _head_decision(info, config, num_classes, fingerprint)
            outcome = (model.embedding_size, f"fine-tuning from {path} ({model.arch}); {head_note}")
        except FacetrainError as exc:
            outcome = ConfigError(f"--finetune_from {config.finetune_from}: {exc}")
    outcome = distributed.broadcast_object(outcome, ctx)
    if isinstance(outcome, FacetrainError):
        raise outcome
    embedding_size, note = outcome
    if model is None:
        model = build_model(config.arch, embedding_size=embedding_size)
    return FinetuneStart(model.train(), head_state, note)


def prepare(start: FinetuneStart, config: TrainConfig, model: nn.Module, head: nn.Module) -> list[str]:
    """The kept head's weights (rank 0; DDP hands them to the others) and the frozen stages; the notes."""
    if start.head_state is not None:
        head.load_state_dict(start.head_state, strict=True)
    freeze_stages(model, config.freeze_stages)
    return [start.note]


def _head_decision(info: dict, config: TrainConfig, num_classes: int, fingerprint: str) -> tuple[dict | None, str]:
    """(the head's state to keep, or None; the note saying which and why)."""
    head_state, hyper = info["head_state_dict"], info["hyper_parameters"]
    extra = (info["facetrain"] or {}).get("extra", {})
    kernel = head_state.get("kernel")
    fresh = f"new {config.head} head for this data's {num_classes} classes"
    if config.partial_fc:
        return None, f"{fresh} (--partial_fc starts its shards of the centres fresh)"
    if kernel is None:
        where = "in Partial FC shards" if "partial_fc" in extra else "not in the file"
        return None, f"{fresh} (the checkpoint's head is {where})"
    if hyper.get("head") != config.head:
        return None, f"{fresh} (the checkpoint's head is {hyper.get('head') or 'of an unknown kind'})"
    if kernel.shape[1] != num_classes:
        return None, f"{fresh} (the checkpoint's head has {kernel.shape[1]} classes)"
    saved = extra.get("data_fingerprint")
    if not saved:
        return None, f"{fresh} (the checkpoint does not record which data its {kernel.shape[1]} classes are)"
    if saved != fingerprint:
        return None, f"{fresh} (the checkpoint's {kernel.shape[1]} classes are of other data)"
    return head_state, f"kept the checkpoint's {config.head} head (the same {num_classes} classes of the same data)"


def stage_count(model: nn.Module) -> int:
    return len(model.stages()) - 1


def freeze_stages(model: nn.Module, count: int) -> None:
    """Freeze the input stem and the first `count` stages: no gradients, and batch normalisation in eval
    mode whatever `train()` asks (their running statistics stay the checkpoint's). Before the optimizer
    and DDP are built: both leave out parameters that need no gradient."""
    if count == 0:
        return
    available = stage_count(model)
    if count > available:
        raise ConfigError(f"--freeze_stages {count}: {model.arch} has {available} stages (plus the input stem)")
    for module in [m for stage in model.stages()[:count + 1] for m in stage]:
        module.requires_grad_(False)
        module.train = functools.partial(_stay_in_eval, module)  # also when a parent's train() recurses
        module.eval()


def _stay_in_eval(module: nn.Module, mode: bool = True) -> nn.Module:
    return nn.Module.train(module, False)


def describe(config: TrainConfig, model: nn.Module, steps_per_epoch: int) -> str:
    """One line on how the fine-tuning flags shape this run."""
    parts = []
    if config.freeze_stages:
        parts.append(f"frozen: the input stem and stages 1-{config.freeze_stages} of {stage_count(model)} "
                     "(weights and batch-norm statistics)")
    parts.append(f"backbone lr = --lr x {config.backbone_lr_scale}, head lr = --lr")
    if config.head_warmup_epochs:
        steps = int(round(config.head_warmup_epochs * steps_per_epoch))
        parts.append(f"the head alone for the first {config.head_warmup_epochs:g} epoch(s) ({steps} steps: "
                     "backbone lr 0, its batch-norm statistics still adapt)")
    return "; ".join(parts)


def check_same_finetuning(path: str, saved: dict, config: TrainConfig) -> None:
    """A run resumes with the fine-tuning flags it was trained with: they decide the optimizer's groups,
    what is frozen and the backbone's schedule (a checkpoint without them was trained from scratch)."""
    defaults = TrainConfig()
    for name in ("finetune_from", *FINETUNE_FLAGS):
        was = saved.get(name, getattr(defaults, name))
        now = getattr(config, name)
        if (bool(was) != bool(now)) if name == "finetune_from" else was != now:
            raise ConfigError(f"{path}: was trained with --{name} {was!r}, this run has {now!r}; resume with "
                              "the flags it was trained with (--config its config.json)")
