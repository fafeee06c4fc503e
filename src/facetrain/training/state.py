"""Resumable training state on top of `facetrain.checkpoint` (Lightning-like layout, model./head. keys).

`extra` holds everything else a run needs to continue exactly: optimizer, scheduler and loss-scaler
states, the RNG states of every process (python, numpy, torch, and the CUDA generator of the
process's own GPU only: GPU indices and counts may differ when resuming), the position (epoch,
batches done in it, optimizer steps), the best validation result, and the config.
"""
from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from facetrain.checkpoint import load_checkpoint, save_checkpoint, strip_prefix
from facetrain.errors import ConfigError

STATE_VERSION = 1


@dataclass
class Position:
    """Where a run stands: `epoch` in progress, `batch` batches of it done, `global_step` optimizer steps."""
    epoch: int = 0
    batch: int = 0
    global_step: int = 0


@dataclass
class BestResult:
    metric: float = float("-inf")
    epoch: int = -1
    path: str = ""
    history: list[dict[str, Any]] = field(default_factory=list)
    # the best validation's mean decision threshold, in both units (facetrain.verify's default)
    threshold_l2: float | None = None
    threshold_cosine: float | None = None


def capture_rng(device: torch.device | None = None) -> dict[str, Any]:
    """RNG states as plain data (tensors, ints, tuples) so `torch.load(weights_only=True)` reads them.
    With a CUDA `device`, its generator's state too (that one device's, not every visible GPU's)."""
    version, mt_state, gauss = random.getstate()
    np_name, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state()
    state = {
        "python": (version, list(mt_state), gauss),
        "numpy": (np_name, torch.from_numpy(np_keys.astype(np.int64)), int(np_pos), int(np_has_gauss), float(np_gauss)),
        "torch": torch.get_rng_state(),
    }
    if device is not None and device.type == "cuda":
        state["cuda_device"] = torch.cuda.get_rng_state(device)
    return state


def restore_rng(state: dict[str, Any], device: torch.device | None = None) -> None:
    """Restore what `capture_rng` saved; the saved CUDA state goes to this process's own `device`.
    (Checkpoints written before kept every visible GPU's state under "cuda": their streams restart.)"""
    version, mt_state, gauss = state["python"]
    random.setstate((version, tuple(mt_state), gauss))
    np_name, np_keys, np_pos, np_has_gauss, np_gauss = state["numpy"]
    np.random.set_state((np_name, np_keys.cpu().numpy().astype(np.uint32), np_pos, np_has_gauss, np_gauss))
    torch.set_rng_state(state["torch"].cpu())
    if "cuda_device" in state and device is not None and device.type == "cuda":
        torch.cuda.set_rng_state(state["cuda_device"].cpu(), device)


def save_training_state(path: str | Path, model: nn.Module, head: nn.Module, optimizer: torch.optim.Optimizer,
                        scheduler: Any, scaler: torch.amp.GradScaler, position: Position, best: BestResult,
                        config: dict[str, Any], rng_per_rank: list[dict[str, Any]], world_size: int,
                        optimizer_state: dict[str, Any] | None = None, partial_fc: dict[str, Any] | None = None,
                        loss_totals: dict[str, float] | None = None, data_fingerprint: str = "") -> None:
    """Atomic `.ckpt` (rank 0 only). AdaFace tools read its `state_dict`; we read the rest to resume.
    A Partial FC run passes its optimizer state without the centres' momentum and `partial_fc`, the
    entry naming the per-rank shard files (`facetrain.heads.partial_fc_checkpoint`). `loss_totals`: the logged
    means' running sums, so a resumed run logs the same values. `data_fingerprint`: of the training data, so
    that a resume onto other data is noticed."""
    extra = {
        "state_version": STATE_VERSION,
        "epoch": position.epoch,
        "batch_in_epoch": position.batch,
        "global_step": position.global_step,
        "optimizer_states": [optimizer.state_dict() if optimizer_state is None else optimizer_state],
        "lr_schedulers": [scheduler.state_dict()],
        "scaler": scaler.state_dict(),
        "rng_per_rank": rng_per_rank,
        "world_size": world_size,
        "best": {"metric": best.metric, "epoch": best.epoch, "path": best.path, "history": best.history,
                 "threshold_l2": best.threshold_l2, "threshold_cosine": best.threshold_cosine},
        "config": _plain(config),
        "loss_totals": dict(loss_totals or {}),
        "data_fingerprint": data_fingerprint,
    }
    if partial_fc is not None:
        extra["partial_fc"] = partial_fc
    # the model and head report their own canonical arch and resolved m/h/s/t_alpha
    hyper = {k: v for k, v in _plain(config).items() if k not in ("arch", "m", "h", "s", "t_alpha")}
    hyper.update(epoch=position.epoch, global_step=position.global_step)
    save_checkpoint(path, model, head, extra=extra, hyper_parameters=hyper)


def _plain(config: dict[str, Any]) -> dict[str, Any]:
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in config.items()}


@dataclass
class TrainingState:
    model_state: dict[str, torch.Tensor]
    head_state: dict[str, torch.Tensor]
    extra: dict[str, Any]
    hyper_parameters: dict[str, Any]

    @property
    def position(self) -> Position:
        return Position(self.extra["epoch"], self.extra["batch_in_epoch"], self.extra["global_step"])

    @property
    def best(self) -> BestResult:
        return recorded_best(self.extra)


def recorded_best(extra: dict[str, Any]) -> BestResult:
    """The best result a checkpoint's `extra` recorded when it was written."""
    b = extra["best"]
    return BestResult(b["metric"], b["epoch"], b["path"], list(b["history"]), b.get("threshold_l2"),
                      b.get("threshold_cosine"))


def load_training_state(path: str | Path, arch: str, head_name: str, num_classes: int) -> TrainingState:
    """Read a checkpoint written by `save_training_state`; ConfigError when it cannot continue this run."""
    checkpoint = load_checkpoint(path, map_location="cpu")
    extra = checkpoint.get("facetrain", {}).get("extra", {})
    if extra.get("state_version") != STATE_VERSION:
        raise ConfigError(f"{path}: not a facetrain training checkpoint (no optimizer/scheduler state to resume "
                          "from); use --start_from_model_statedict to start from its weights")
    hp = checkpoint.get("hyper_parameters", {})
    checks = {"arch": arch, "head": head_name, "class_num": num_classes}
    for key, wanted in checks.items():
        if key in hp and hp[key] != wanted:
            raise ConfigError(f"{path}: was trained with {key}={hp[key]}, this run has {key}={wanted}")
    state = checkpoint["state_dict"]
    return TrainingState(strip_prefix(state, "model."), strip_prefix(state, "head."), extra, hp)
