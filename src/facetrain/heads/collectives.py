"""Differentiable collectives for model-parallel heads (Partial FC).

`all_gather_with_grad`: every rank gets the concatenation of all ranks' tensors; the gradient that
flows back to a rank's own slice is the sum of the gradients every rank computed for it (the
adjoint of all-gather is reduce-scatter). `distributed_cross_entropy`: softmax cross-entropy over
logits whose columns (classes) are spread over the ranks, made stable by the global row maximum.

Both run their collectives on the tensors' own device (gloo on CPU, NCCL on GPU) and never read a
value back to the host.
"""
from __future__ import annotations

import torch
import torch.distributed as dist


def _gather_into(out: torch.Tensor, tensor: torch.Tensor, group: dist.ProcessGroup | None) -> None:
    # `all_gather_single` replaced `all_gather_into_tensor` (deprecated since) only in recent torch;
    # the builds this project supports (>= 2.6) all have the older name
    gather = getattr(dist, "all_gather_single", None) or dist.all_gather_into_tensor
    gather(out, tensor.contiguous(), group=group)


def _reduce_scatter_sum(out: torch.Tensor, tensor: torch.Tensor, group: dist.ProcessGroup | None) -> None:
    scatter = getattr(dist, "reduce_scatter_single", None) or dist.reduce_scatter_tensor
    scatter(out, tensor.contiguous(), op=dist.ReduceOp.SUM, group=group)


def _world(group: dist.ProcessGroup | None) -> int:
    return dist.get_world_size(group) if dist.is_available() and dist.is_initialized() else 1


class _AllGather(torch.autograd.Function):
    @staticmethod
    def forward(ctx, tensor: torch.Tensor, group: dist.ProcessGroup | None) -> torch.Tensor:  # type: ignore[override]
        ctx.group = group
        world = _world(group)
        out = tensor.new_empty((world * tensor.shape[0], *tensor.shape[1:]))
        _gather_into(out, tensor, group)
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:  # type: ignore[override]
        world = _world(ctx.group)
        out = grad.new_empty((grad.shape[0] // world, *grad.shape[1:]))
        _reduce_scatter_sum(out, grad, ctx.group)
        return out, None


def all_gather_with_grad(tensor: torch.Tensor, group: dist.ProcessGroup | None = None) -> torch.Tensor:
    """(W*B, ...) = the ranks' (B, ...) tensors in rank order (every rank must pass the same shape).
    Identity in a single process."""
    if _world(group) == 1:
        return tensor
    return _AllGather.apply(tensor, group)


def all_gather(tensor: torch.Tensor, group: dist.ProcessGroup | None = None) -> torch.Tensor:
    """All-gather without gradient (labels, detached norms)."""
    if _world(group) == 1:
        return tensor
    out = tensor.new_empty((_world(group) * tensor.shape[0], *tensor.shape[1:]))
    _gather_into(out, tensor, group)
    return out


def _all_reduce(tensor: torch.Tensor, op: dist.ReduceOp, group: dist.ProcessGroup | None) -> torch.Tensor:
    if _world(group) > 1:
        dist.all_reduce(tensor, op=op, group=group)
    return tensor


class _DistributedCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, logits: torch.Tensor, labels: torch.Tensor,  # type: ignore[override]
                group: dist.ProcessGroup | None) -> torch.Tensor:
        logits = logits.float()
        row_max = _all_reduce(logits.detach().amax(dim=1, keepdim=True), dist.ReduceOp.MAX, group)
        probs = (logits - row_max).exp_()
        row_sum = _all_reduce(probs.sum(dim=1, keepdim=True), dist.ReduceOp.SUM, group)
        present = (labels >= 0).view(-1, 1)
        column = labels.clamp(min=0).view(-1, 1)
        # the true class's shifted logit, from the one rank that holds it (zero from the others)
        target = torch.where(present, logits.gather(1, column) - row_max, torch.zeros_like(row_max))
        target = _all_reduce(target, dist.ReduceOp.SUM, group)
        # log-sum-exp minus the target logit: exact even where the true class's probability underflows
        loss = (row_sum.log() - target).mean()
        probs.div_(row_sum)
        ctx.save_for_backward(probs, column, present)
        return loss

    @staticmethod
    def backward(ctx, grad_loss: torch.Tensor) -> tuple[torch.Tensor, None, None]:  # type: ignore[override]
        probs, column, present = ctx.saved_tensors
        # d(mean CE)/d logits = (softmax - one_hot) / rows; the one-hot only where this rank holds the class
        grad = probs.scatter_add_(1, column, -present.to(probs.dtype))
        return grad.mul_(grad_loss / probs.shape[0]), None, None


def distributed_cross_entropy(logits: torch.Tensor, labels: torch.Tensor,
                              group: dist.ProcessGroup | None = None) -> torch.Tensor:
    """Mean softmax cross-entropy over all rows of the global batch, identical on every rank.

    logits (N, K_rank) hold this rank's classes (float32); labels (N,) give the column of the true
    class on this rank, or -1 where another rank holds it (exactly one rank must hold each row's class).
    The softmax runs over the classes of all ranks: row maximum and sum of exponentials are all-reduced.
    In a single process this is `F.cross_entropy(logits, labels)`."""
    return _DistributedCrossEntropy.apply(logits, labels, group)
