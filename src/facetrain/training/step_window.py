"""What the loop reports per logging interval, kept without host synchronisation in between.

Per optimizer step the device accumulates the loss of the steps taken, how many were taken and
skipped (non-finite loss on some rank, or fp16 gradient overflow) and the longest run of consecutive
non-finite losses; the host only
counts steps and times (waiting for data vs everything else). `collect` is the one point where
the host waits for the device: one all-reduce of one tensor on the rank's device and one
device-to-host copy, at logging steps only.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from facetrain.training import distributed


@dataclass
class WindowSummary:
    loss: float  # mean over the interval's steps taken, over all ranks (nan when none was taken)
    loss_sum: float  # this interval's sum over steps taken of the all-rank mean loss
    steps: int
    skipped: int
    longest_skip_run: int  # longest run of consecutive non-finite losses so far (continues across intervals)
    skipped_total: int  # steps skipped since the run began (continues across intervals and resumes)
    data_time: float = 0.0  # mean seconds per batch waiting for the loader (this rank)
    step_time: float = 0.0  # mean seconds per batch for everything else


class StepWindow:
    def __init__(self, device: torch.device):
        self.device = device
        # [loss sum over steps taken, steps taken, steps skipped]: summed over ranks at `collect`
        self._sums = torch.zeros(3, device=device)
        # [consecutive non-finite losses up to now, the longest such run, all skipped steps]: the run's,
        # never reset, saved in checkpoints
        self._skips = torch.zeros(3, device=device)
        self.skipped_total = 0  # the host's copy of the last, as of the last `collect` (or resume)
        self.steps = 0
        self.batches = 0
        self.data_time = 0.0
        self.step_time = 0.0

    def state_dict(self) -> dict[str, list[float]]:
        """The device sums and skip counters (a host sync: checkpoints only)."""
        return {"sums": self._sums.tolist(), "skips": self._skips.tolist()}

    def load_state_dict(self, state: dict[str, list[float]]) -> None:
        """Continue from `state_dict()` (nothing: a fresh window)."""
        if state:
            self._sums.copy_(torch.tensor(state["sums"]))
            skips = list(state["skips"]) + [0.0] * (3 - len(state["skips"]))  # older checkpoints hold no total
            self._skips.copy_(torch.tensor(skips))
            self.skipped_total = round(skips[2])

    def add_times(self, data_time: float, step_time: float) -> None:
        self.batches += 1
        self.data_time += data_time
        self.step_time += step_time

    def add_step(self, group_loss: torch.Tensor, skipped: torch.Tensor, nonfinite: torch.Tensor | None = None) -> None:
        """`skipped` is the (all-reduced) device flag: 1.0 when the step was not taken; `nonfinite`
        (default: `skipped`) 1.0 when that was for a non-finite loss. Steps the fp16 loss scaler skips
        for overflowing gradients (skipped, loss finite) neither extend nor break a run of non-finite
        losses: the scaler lowers its scale by itself, a few times in a row at the start of a run."""
        skipped = skipped.reshape(())
        nonfinite = skipped if nonfinite is None else nonfinite.reshape(())
        taken = 1.0 - skipped
        loss = torch.where(skipped > 0, torch.zeros_like(group_loss), group_loss.detach().float())
        self._sums += torch.stack([loss, taken, skipped])
        streak, longest, total = self._skips.unbind()
        streak.mul_(1.0 - taken).add_(nonfinite)
        torch.maximum(longest, streak, out=longest)
        total.add_(skipped)
        self.steps += 1

    def collect(self, ctx: distributed.DistContext) -> WindowSummary:
        """Collective: every rank calls it at the same steps (this waits for the device). Resets the
        interval's device sums; the times are taken separately (`take_times`) so that this wait counts."""
        packed = self._sums.clone()
        distributed.all_reduce_sum(packed, ctx)  # ranks take and skip the same steps: counts come back x world
        loss_total, taken, skipped, _, longest, total = torch.cat([packed, self._skips]).tolist()
        world = ctx.world_size
        self._sums.zero_()
        self.steps = 0
        self.skipped_total = round(total)
        return WindowSummary(loss_total / taken if taken else float("nan"), loss_total / world,
                             round(taken / world), round(skipped / world), round(longest), self.skipped_total)

    def take_times(self) -> tuple[float, float]:
        """(data_time, step_time): mean seconds per batch since the last call; resets them."""
        batches = max(self.batches, 1)
        times = self.data_time / batches, self.step_time / batches
        self.batches, self.data_time, self.step_time = 0, 0.0, 0.0
        return times
