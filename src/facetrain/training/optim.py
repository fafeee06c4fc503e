"""AdaFace's optimiser: SGD with momentum, batch-norm parameters without weight decay, and a
multi-step schedule by epoch with an optional linear warm-up, stepped once per optimizer step.

The SGD is torch's fused kernel: it takes a `found_inf` flag on the device and skips the update
when it is set, so a step with a non-finite loss is dropped without the host waiting for the GPU.
Momentum buffers start as zeros (the same first update as torch's lazily created ones), so that a
first step skipped this way leaves nothing uninitialised."""
from __future__ import annotations

import bisect

import torch
from torch import nn


def split_parameters(module: nn.Module) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
    """(decay, no_decay): the parameters of batch-norm layers get no weight decay; everything else
    (convolutions, linear layers, PReLU slopes, SE blocks, head kernel) does, as in AdaFace."""
    decay, no_decay = [], []
    for m in module.modules():
        own = list(m.parameters(recurse=False))
        (no_decay if isinstance(m, nn.modules.batchnorm._BatchNorm) else decay).extend(own)
    return decay, no_decay


def build_optimizer(model: nn.Module, head: nn.Module, lr: float, momentum: float,
                    weight_decay: float) -> torch.optim.SGD:
    model_decay, model_no_decay = split_parameters(model)
    head_decay, head_no_decay = split_parameters(head)
    groups = [{"params": model_decay + head_decay, "weight_decay": weight_decay},
              {"params": model_no_decay + head_no_decay, "weight_decay": 0.0}]
    optimizer = torch.optim.SGD([g for g in groups if g["params"]], lr=lr, momentum=momentum, fused=True)
    prepare_optimizer_state(optimizer)
    return optimizer


def prepare_optimizer_state(optimizer: torch.optim.SGD) -> None:
    """Fused steps and zero momentum buffers where there are none yet; also after `load_state_dict`,
    which takes the saved groups' options (a checkpoint written by an unfused SGD says fused=False)."""
    for group in optimizer.param_groups:
        group["fused"], group["foreach"] = True, None
        if group["momentum"] == 0:
            continue
        for p in group["params"]:
            state = optimizer.state[p]
            if state.get("momentum_buffer") is None:
                state["momentum_buffer"] = torch.zeros_like(p, memory_format=torch.preserve_format)


def step_unless(optimizer: torch.optim.SGD, found_inf: torch.Tensor) -> None:
    """optimizer.step(), skipped on the device when `found_inf` (a float tensor on the parameters'
    device) is non-zero: no host synchronisation."""
    optimizer.found_inf = found_inf
    try:
        optimizer.step()
    finally:
        del optimizer.found_inf


def lr_factor(step: int, steps_per_epoch: int, milestones: list[int], gamma: float, warmup_steps: int) -> float:
    """LR multiplier after `step` optimizer steps: gamma ** (milestones passed by the current epoch),
    times a linear ramp from 1/warmup_steps to 1 over the first `warmup_steps` steps."""
    epoch = step // max(1, steps_per_epoch)
    factor = gamma ** bisect.bisect_right(milestones, epoch)
    if step < warmup_steps:
        factor *= (step + 1) / warmup_steps
    return factor


def build_scheduler(optimizer: torch.optim.Optimizer, steps_per_epoch: int, milestones: list[int],
                    gamma: float, warmup_epochs: float = 0.0) -> torch.optim.lr_scheduler.LambdaLR:
    """Equivalent to MultiStepLR stepped per epoch (plus warm-up), but stepped per optimizer step so
    that a run resumed in the middle of an epoch continues with exactly the same learning rates."""
    warmup_steps = int(round(warmup_epochs * steps_per_epoch))
    milestones = list(milestones)
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: lr_factor(step, steps_per_epoch, milestones, gamma, warmup_steps))
