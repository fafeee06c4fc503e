"""Undo what a skipped step's forward passes did to floating-point buffers (batch-norm running
statistics, AdaFace's norm EMA), without the host learning whether the step was skipped.

The buffers are copied into one preallocated flat tensor before each accumulation group (one
`torch._foreach_copy_`), and after the optimizer step they are put back where the device-side
flag says so (one `torch.cat`, one `torch.where`, one `torch._foreach_copy_`): four kernels per step
whatever the number of buffers, and no host synchronisation.
"""
from __future__ import annotations

import torch


class BufferSnapshot:
    def __init__(self, buffers: list[torch.Tensor]):
        self.buffers = [b for b in buffers if b.is_floating_point()]
        sizes = [b.numel() for b in self.buffers]
        device = self.buffers[0].device if self.buffers else torch.device("cpu")
        dtype = self.buffers[0].dtype if self.buffers else torch.float32
        if any(b.dtype != dtype or b.device != device for b in self.buffers):
            raise ValueError("BufferSnapshot: the buffers must share one dtype and device")
        self._saved = torch.empty(sum(sizes), device=device, dtype=dtype)
        self._current = torch.empty_like(self._saved)
        self._saved_views = [v.view_as(b) for v, b in zip(self._saved.split(sizes), self.buffers)]
        self._current_views = [v.view_as(b) for v, b in zip(self._current.split(sizes), self.buffers)]

    def take(self) -> None:
        """Remember the buffers' current values."""
        if self.buffers:
            torch._foreach_copy_(self._saved_views, self.buffers)

    def restore_where(self, flag: torch.Tensor) -> None:
        """Put the remembered values back when `flag` (a device tensor with one element) is non-zero."""
        if not self.buffers:
            return
        torch.cat([b.reshape(-1) for b in self.buffers], out=self._current)
        torch.where(flag.reshape(()) > 0, self._saved, self._current, out=self._current)
        torch._foreach_copy_(self.buffers, self._current_views)
