"""Process-group plumbing for multi-GPU / multi-node training under `torchrun` (or our own spawn for
`--gpus N`): gloo on CPU, nccl on GPUs; rank 0 logs and saves, the others wait at barriers."""
from __future__ import annotations

import os
import socket
import warnings
from dataclasses import dataclass
from typing import Any, Callable

import torch
import torch.distributed as dist
from torch import nn

from facetrain.errors import ConfigError


@dataclass(frozen=True)
class DistContext:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def launched_by_torchrun() -> bool:
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


def pick_device(gpus: int, local_rank: int) -> torch.device:
    if gpus > 0 and torch.cuda.is_available():
        return torch.device("cuda", local_rank % torch.cuda.device_count())
    if gpus > 0 and local_rank == 0:
        warnings.warn("no CUDA device available: training on the CPU", stacklevel=2)
    return torch.device("cpu")


def init_distributed(gpus: int) -> DistContext:
    """Join the process group described by torchrun's environment, or run as a single process."""
    if not launched_by_torchrun() or int(os.environ["WORLD_SIZE"]) == 1:
        return DistContext(device=pick_device(gpus, 0))
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local_rank = int(os.environ.get("LOCAL_RANK", rank))
    device = pick_device(gpus, local_rank)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo", rank=rank, world_size=world)
    return DistContext(rank=rank, world_size=world, local_rank=local_rank, device=device)


def cleanup_distributed() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def barrier(ctx: DistContext) -> None:
    if ctx.enabled:
        if ctx.device.type == "cuda":
            dist.barrier(device_ids=[ctx.device.index])
        else:
            dist.barrier()


def all_reduce_mean(tensor: torch.Tensor, ctx: DistContext) -> torch.Tensor:
    """Mean over processes (in place; returned for chaining). No-op in a single process."""
    if ctx.enabled:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        tensor.div_(ctx.world_size)
    return tensor


def all_reduce_max(tensor: torch.Tensor, ctx: DistContext) -> torch.Tensor:
    if ctx.enabled:
        dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
    return tensor


def broadcast_object(obj: Any, ctx: DistContext) -> Any:
    """Rank 0's `obj` on every rank."""
    if not ctx.enabled:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def sync_float_buffers(module: nn.Module, ctx: DistContext) -> None:
    """Average floating-point buffers (AdaFace's norm-statistics EMA) over processes, so every rank
    keeps identical head buffers and the saved ones summarise all processes' batches."""
    if not ctx.enabled:
        return
    for buf in module.buffers():
        if buf.is_floating_point():
            all_reduce_mean(buf.data, ctx)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _spawned_entry(local_rank: int, world: int, port: int, fn: Callable, args: tuple) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(local_rank),
                      LOCAL_RANK=str(local_rank), WORLD_SIZE=str(world))
    fn(*args)


def spawn(fn: Callable, nprocs: int, args: tuple = ()) -> None:
    """Run `fn(*args)` in `nprocs` local processes with torchrun's environment (one node)."""
    if nprocs < 1:
        raise ConfigError(f"need at least one process, got {nprocs}")
    torch.multiprocessing.spawn(_spawned_entry, args=(nprocs, free_port(), fn, args), nprocs=nprocs, join=True)
