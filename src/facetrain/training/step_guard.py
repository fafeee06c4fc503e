"""The run's optimisation (optimizer, schedule, loss scaler) behind one non-finite-step guard.

`step(group_loss)` takes the optimizer step unless the accumulation group's loss is non-finite on
any rank, or (fp16) the loss scaler found gradients that overflowed on any rank. A skipped step
leaves the weights as they were (fused SGD's `found_inf`) and puts back the floating-point buffers
the group's forward passes moved (batch-norm running statistics, AdaFace's norm EMA), copied aside
by `begin_group()`. The guard also keeps the record that logging and `--max_nonfinite_steps` read:
the loss of the steps taken, how many were taken and skipped, and the longest run of consecutive
non-finite losses.

None of this makes the host wait for the device: the flags, the rollback and the sums stay on the
device (the rollback is four kernels whatever the number of buffers: one `_foreach_copy_` into a
preallocated flat tensor before the group; one `cat`, one `where`, one `_foreach_copy_` after).
`collect` is the one point where the host waits: one all-reduce of one tensor on the rank's device
and one device-to-host copy, at logging steps only.
"""
from __future__ import annotations

import torch
from torch import nn

from facetrain.errors import FacetrainError
from facetrain.training import distributed
from facetrain.training.logger import WindowSummary, warn
from facetrain.training.optim import step_unless


class TrainingDiverged(FacetrainError):
    """Too many non-finite losses in a row."""


class StepGuard:
    """`net`: everything the step trains (its floating-point buffers are rolled back with a skipped
    step); `head`: the part whose floating-point buffers are averaged over the ranks after each step
    (AdaFace's norm statistics), so every rank keeps the same."""

    def __init__(self, optimizer: torch.optim.Optimizer, scheduler: torch.optim.lr_scheduler.LRScheduler,
                 scaler: torch.amp.GradScaler, net: nn.Module, head: nn.Module, ctx: distributed.DistContext,
                 max_nonfinite_steps: int = 2**31):
        self.optimizer, self.scheduler, self.scaler, self.ctx = optimizer, scheduler, scaler, ctx
        self.head, self.max_nonfinite_steps = head, max_nonfinite_steps
        self._buffers = [b for b in net.buffers() if b.is_floating_point()]
        sizes = [b.numel() for b in self._buffers]
        device = self._buffers[0].device if self._buffers else ctx.device
        dtype = self._buffers[0].dtype if self._buffers else torch.float32
        if any(b.dtype != dtype or b.device != device for b in self._buffers):
            raise ValueError("StepGuard: the buffers must share one dtype and device")
        self._saved = torch.empty(sum(sizes), device=device, dtype=dtype)
        self._current = torch.empty_like(self._saved)
        self._saved_views = [v.view_as(b) for v, b in zip(self._saved.split(sizes), self._buffers)]
        self._current_views = [v.view_as(b) for v, b in zip(self._current.split(sizes), self._buffers)]
        # [loss sum over steps taken, steps taken, steps skipped]: summed over ranks at `collect`
        self._sums = torch.zeros(3, device=ctx.device)
        # [consecutive non-finite losses up to now, the longest such run, all skipped steps]: the run's,
        # never reset, saved in checkpoints
        self._skips = torch.zeros(3, device=ctx.device)
        self.skipped_total = 0  # the host's copy of the last, as of the last `collect` (or resume)
        self.epoch_loss, self.epoch_steps = 0.0, 0  # the host's sums behind the epoch's mean loss

    @property
    def lr(self) -> float:
        """The learning rate the next step uses."""
        return self.optimizer.param_groups[0]["lr"]

    def begin_group(self) -> None:
        """Copy the buffers aside before an accumulation group's forward passes."""
        if self._buffers:
            torch._foreach_copy_(self._saved_views, self._buffers)

    def backward(self, loss: torch.Tensor) -> None:
        """Gradients of `loss` (scaled by the fp16 loss scaler; unscaled before the step)."""
        self.scaler.scale(loss).backward()

    def step(self, group_loss: torch.Tensor) -> torch.Tensor:
        """Step unless the group's loss is non-finite on any rank (or fp16 gradients overflowed on any
        rank), zero the gradients, and record the step. Returns the all-rank skip flag (a float tensor
        on the device)."""
        nonfinite = (~torch.isfinite(group_loss)).float().reshape(1)
        if self.scaler.is_enabled():
            self.scaler.unscale_(self.optimizer)  # records the overflow flag on the device
            found = _found_inf(self.scaler, self.optimizer)
            flags = distributed.all_reduce_max(torch.cat([nonfinite, found.reshape(1)]), self.ctx)
            nonfinite, skipped = flags[:1], flags.amax().reshape(1)
            # every rank skips together (a Partial FC shard can overflow on one rank only); the scaler
            # lowers its scale for a non-finite loss too
            found.copy_(skipped.reshape(found.shape))
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            skipped = nonfinite = distributed.all_reduce_max(nonfinite, self.ctx)
            step_unless(self.optimizer, skipped)
        self.optimizer.zero_grad(set_to_none=True)
        self._restore_where(skipped)
        distributed.sync_float_buffers(self.head, self.ctx)
        self.record(group_loss, skipped, nonfinite)
        return skipped

    def _restore_where(self, flag: torch.Tensor) -> None:
        """Put the buffers copied aside back when `flag` (a device tensor with one element) is non-zero."""
        if not self._buffers:
            return
        torch.cat([b.reshape(-1) for b in self._buffers], out=self._current)
        torch.where(flag.reshape(()) > 0, self._saved, self._current, out=self._current)
        torch._foreach_copy_(self._buffers, self._current_views)

    def record(self, group_loss: torch.Tensor, skipped: torch.Tensor, nonfinite: torch.Tensor | None = None) -> None:
        """Count a step (`step` does): `skipped` is the all-rank device flag, 1.0 when the step was not
        taken; `nonfinite` (default: `skipped`) 1.0 when that was for a non-finite loss. Steps the fp16
        loss scaler skips for overflowing gradients (skipped, loss finite) neither extend nor break a
        run of non-finite losses: the scaler lowers its scale by itself, a few times in a row at the
        start of a run."""
        skipped = skipped.reshape(())
        nonfinite = skipped if nonfinite is None else nonfinite.reshape(())
        taken = 1.0 - skipped
        loss = torch.where(skipped > 0, torch.zeros_like(group_loss), group_loss.detach().float())
        self._sums += torch.stack([loss, taken, skipped])
        streak, longest, total = self._skips.unbind()
        streak.mul_(1.0 - taken).add_(nonfinite)
        torch.maximum(longest, streak, out=longest)
        total.add_(skipped)

    def collect(self, step: int) -> WindowSummary:
        """Collective, at a logging step (the host waits for the device here): the steps since the last
        call, summed over ranks (the times are the logger's). Warns about skipped steps; raises
        TrainingDiverged after `max_nonfinite_steps` non-finite losses in a row."""
        packed = self._sums.clone()
        distributed.all_reduce_sum(packed, self.ctx)  # ranks take and skip the same steps: counts come back x world
        loss_total, taken, skipped, _, longest, total = torch.cat([packed, self._skips]).tolist()
        world = self.ctx.world_size
        self._sums.zero_()
        self.skipped_total = round(total)
        summary = WindowSummary(loss_total / taken if taken else float("nan"), loss_total / world,
                                round(taken / world), round(skipped / world), round(longest), self.skipped_total)
        if summary.skipped:
            warn(f"non-finite loss in {summary.skipped} of the last {summary.skipped + summary.steps} "
                 f"steps (to step {step}): those steps were skipped")
        if summary.longest_skip_run >= self.max_nonfinite_steps:
            raise TrainingDiverged(f"{summary.longest_skip_run} non-finite losses in a row by step {step}: "
                                   "lower --lr or use --precision fp32")
        self.epoch_loss += summary.loss_sum
        self.epoch_steps += summary.steps
        return summary

    def end_epoch(self) -> float:
        """The epoch's mean training loss; the epoch's sums start again."""
        mean = self.epoch_loss / max(self.epoch_steps, 1)
        self.epoch_loss, self.epoch_steps = 0.0, 0
        return mean

    def state_dict(self) -> dict:
        """The sums behind the logged means and the skip counters, so that a resumed run logs exactly
        what an uninterrupted one does (a host sync: checkpoints only)."""
        return {"epoch_loss": self.epoch_loss, "epoch_steps": self.epoch_steps,
                "window": {"sums": self._sums.tolist(), "skips": self._skips.tolist()}}

    def load_state_dict(self, state: dict) -> None:
        """Continue from `state_dict()` (nothing: a fresh record)."""
        self.epoch_loss, self.epoch_steps = state.get("epoch_loss", 0.0), state.get("epoch_steps", 0)
        window = state.get("window")
        if window:
            self._sums.copy_(torch.tensor(window["sums"]))
            skips = list(window["skips"]) + [0.0] * (3 - len(window["skips"]))  # older checkpoints hold no total
            self._skips.copy_(torch.tensor(skips))
            self.skipped_total = round(skips[2])


def _found_inf(scaler: torch.amp.GradScaler, optimizer: torch.optim.Optimizer) -> torch.Tensor:
    """The device flag `scaler.unscale_(optimizer)` set when a gradient is not finite (what its `step`
    skips on, without reading it on the host when the optimizer is fused). One device per process."""
    (found,) = scaler._per_optimizer_states[id(optimizer)]["found_inf_per_device"].values()
    return found
