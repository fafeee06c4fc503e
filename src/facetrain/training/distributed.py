"""Process-group plumbing for multi-GPU / multi-node training under `torchrun` (or our own spawn for
`--gpus N`): gloo on CPU, nccl on GPUs; rank 0 logs and saves, the others wait at barriers.

Collectives get tensors on the rank's own device (NCCL accepts only CUDA tensors). Rank-0-only work
(per-epoch validation, plots, checkpoint copies, the final test) keeps the other ranks in a barrier
for at most the process group's timeout: `FACETRAIN_DIST_TIMEOUT_MIN` minutes (default 60), after
which the job fails instead of hanging. An error on any rank ends every rank within seconds
(`facetrain.training.failure`).
"""
from __future__ import annotations

import contextlib
import datetime
import os
import socket
import warnings
from dataclasses import dataclass
from typing import Any, Callable, Iterator

import torch
import torch.distributed as dist
from torch import nn

from facetrain.errors import ConfigError

TIMEOUT_ENV, DEFAULT_TIMEOUT_MIN = "FACETRAIN_DIST_TIMEOUT_MIN", 60.0
CUBLAS_WORKSPACE_ENV = "CUBLAS_WORKSPACE_CONFIG"


@dataclass(frozen=True)
class DistContext:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    local_world_size: int = 1  # processes on this node

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def launched_by_torchrun() -> bool:
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


def pick_device(gpus: int, local_rank: int, local_world_size: int = 1) -> torch.device:
    """cuda:<local_rank> when GPUs are asked for and present; ConfigError when this node runs more
    processes than it has GPUs (two ranks on one GPU would silently halve its speed and memory)."""
    if gpus > 0 and torch.cuda.is_available():
        count = torch.cuda.device_count()
        if local_world_size > count:
            raise ConfigError(f"{local_world_size} processes on this node but {count} CUDA device(s) visible: "
                              f"start at most {count} (torchrun --nproc_per_node {count}), or --gpus 0 for CPU processes")
        return torch.device("cuda", local_rank)
    if gpus > 0 and local_rank == 0:
        warnings.warn("no CUDA device available: training on the CPU", stacklevel=2)
    return torch.device("cpu")


def process_group_timeout() -> datetime.timedelta:
    """How long a collective (a barrier while rank 0 validates, tests or saves) may wait."""
    text = os.environ.get(TIMEOUT_ENV, "")
    try:
        minutes = float(text) if text else DEFAULT_TIMEOUT_MIN
    except ValueError:
        raise ConfigError(f"{TIMEOUT_ENV}={text!r}: expected minutes, e.g. 60") from None
    if minutes <= 0:
        raise ConfigError(f"{TIMEOUT_ENV}={text!r}: must be > 0 minutes")
    return datetime.timedelta(minutes=minutes)


def init_distributed(gpus: int) -> DistContext:
    """Join the process group described by torchrun's environment, or run as a single process."""
    if not launched_by_torchrun() or int(os.environ["WORLD_SIZE"]) == 1:
        return DistContext(device=pick_device(gpus, 0))
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local_rank = int(os.environ.get("LOCAL_RANK", rank))
    local_world = int(os.environ.get("LOCAL_WORLD_SIZE", world))
    device = pick_device(gpus, local_rank, local_world)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo", rank=rank, world_size=world,
                                timeout=process_group_timeout())
    return DistContext(rank=rank, world_size=world, local_rank=local_rank, device=device,
                       local_world_size=local_world)


@contextlib.contextmanager
def training_backends(device: torch.device, deterministic: bool = False) -> Iterator[None]:
    """The backend settings of a training run, restored when it ends (evaluation, the audit's exact
    fp32 search or other work later in the same process must not inherit them).

    On GPUs, cuDNN picks the fastest convolution algorithms once (`cudnn.benchmark`), and float32
    matrix products may use TF32 (the head's cosine matrix in fp32 runs: its logit error is ~1e-3 at
    s=64, far below bf16's, see benchmarks/tf32_logits.py). `deterministic`: no autotuning, torch's
    deterministic algorithms (an op that has none on the device warns) and cuBLAS's deterministic
    workspace, on every device."""
    tf32, benchmark = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.benchmark
    cudnn_deterministic = torch.backends.cudnn.deterministic
    algorithms = torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled()
    workspace = os.environ.get(CUBLAS_WORKSPACE_ENV)
    try:
        if device.type == "cuda":
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.benchmark = not deterministic
        if deterministic:
            os.environ[CUBLAS_WORKSPACE_ENV] = workspace or ":4096:8"  # read when cuBLAS starts on a device
            torch.backends.cudnn.deterministic = True
            torch.use_deterministic_algorithms(True, warn_only=True)
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.benchmark = tf32, benchmark
        torch.backends.cudnn.deterministic = cudnn_deterministic
        torch.use_deterministic_algorithms(algorithms[0], warn_only=algorithms[1])
        if workspace is None:
            os.environ.pop(CUBLAS_WORKSPACE_ENV, None)


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


def all_reduce_sum(tensor: torch.Tensor, ctx: DistContext) -> torch.Tensor:
    if ctx.enabled:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
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


@dataclass(frozen=True)
class _TensorSlot:
    shape: tuple[int, ...]
    dtype: torch.dtype


def broadcast_state(obj: Any, ctx: DistContext) -> Any:
    """Rank 0's `obj` (dicts, lists and tuples of tensors and plain data, e.g. a training state) on
    every rank, without pickling its tensors: the structure travels as one small object, each tensor
    with the backend on the rank's device (where the other ranks keep it; rank 0's stay as loaded).
    A checkpoint's gigabytes of class centres and momentum are then never copied through host memory
    on every process."""
    if not ctx.enabled:
        return obj
    sent: list[torch.Tensor] = []

    def strip(x: Any) -> Any:
        if isinstance(x, torch.Tensor):
            sent.append(x)
            return _TensorSlot(tuple(x.shape), x.dtype)
        if isinstance(x, dict):
            return {k: strip(v) for k, v in x.items()}
        if type(x) in (list, tuple):
            return type(x)(strip(v) for v in x)
        return x

    skeleton = broadcast_object(strip(obj) if ctx.is_main else None, ctx)
    tensors = iter(sent)

    def fill(x: Any) -> Any:
        if isinstance(x, _TensorSlot):
            if ctx.is_main:
                mine = next(tensors)
                dist.broadcast(mine.detach().to(ctx.device).contiguous(), src=0)
                return mine
            received = torch.empty(x.shape, dtype=x.dtype, device=ctx.device)
            dist.broadcast(received, src=0)
            return received
        if isinstance(x, dict):
            return {k: fill(v) for k, v in x.items()}
        if type(x) in (list, tuple):
            return type(x)(fill(v) for v in x)
        return x

    return fill(skeleton)


def sync_float_buffers(module: nn.Module, ctx: DistContext) -> None:
    """Average floating-point buffers (AdaFace's norm-statistics EMA) over processes, in one
    all-reduce, so every rank keeps identical head buffers and the saved ones summarise all
    processes' batches."""
    if not ctx.enabled:
        return
    buffers = [b for b in module.buffers() if b.is_floating_point()]
    if not buffers:
        return
    flat = torch.cat([b.detach().reshape(-1).float() for b in buffers])
    all_reduce_mean(flat, ctx)
    torch._foreach_copy_(buffers, [part.view_as(b) for part, b in zip(flat.split([b.numel() for b in buffers]), buffers)])


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _spawned_entry(local_rank: int, world: int, port: int, fn: Callable, args: tuple) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(local_rank),
                      LOCAL_RANK=str(local_rank), WORLD_SIZE=str(world), LOCAL_WORLD_SIZE=str(world))
    fn(*args)


def spawn(fn: Callable, nprocs: int, args: tuple = ()) -> None:
    """Run `fn(*args)` in `nprocs` local processes with torchrun's environment (one node)."""
    if nprocs < 1:
        raise ConfigError(f"need at least one process, got {nprocs}")
    torch.multiprocessing.spawn(_spawned_entry, args=(nprocs, free_port(), fn, args), nprocs=nprocs, join=True)
