"""Checkpoints of a Partial FC head: one shard file per rank next to the main `.ckpt`.

`<output_dir>/last.ckpt` (rank 0) holds the backbone, the margin's `head.*` buffers, the optimizer state
without the centres' momentum, and `extra["partial_fc"]` naming the shard files. Rank r writes
`run/last.ckpt.pfc/rank<r>of<W>-step<S>.pt` = {kernel: columns [start, stop) of AdaFace's (E, C)
`head.kernel`, momentum: the same columns of its SGD momentum (None before the first step), ...}.

Crash safety (kill -9 at any point): every file is written atomically, the shards of step S are all
written before the main file that names them, and older shards are removed only after it: the main
file on disk always names shards that exist.

Loading reslices: a rank reads the columns it holds now from whatever was saved (shards of any
number of processes, or a consolidated / full-head `head.kernel`), so a run resumes with another
world size, and a full-head checkpoint continues as Partial FC. `consolidate` turns the shards back
into one AdaFace-layout checkpoint (which also resumes without --partial_fc).
"""
from __future__ import annotations

import contextlib
import os
import pickle
import re
from pathlib import Path
from typing import Any

import torch
from torch import nn

from facetrain.checkpoint import load_checkpoint, save_to_file, torch_reason
from facetrain.errors import ConfigError
from facetrain.heads.shard import Shard
from facetrain.io_utils import atomic_path

SHARD_DIR_SUFFIX = ".pfc"
KERNEL_KEY = "head.kernel"


def shard_dir(checkpoint: str | os.PathLike) -> Path:
    path = Path(checkpoint)
    return path.with_name(path.name + SHARD_DIR_SUFFIX)


def shard_name(shard: Shard, step: int) -> str:
    return f"rank{shard.rank}of{shard.world_size}-step{step}.pt"


def param_index(optimizer: torch.optim.Optimizer, param: torch.nn.Parameter) -> int:
    """The number `optimizer.state_dict()` gives `param` (parameters counted across the groups)."""
    flat = [p for group in optimizer.param_groups for p in group["params"]]
    return next(i for i, p in enumerate(flat) if p is param)


def _save(obj: Any, path: Path) -> None:
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        save_to_file(obj, f)  # a failed write (disk full) is the file's OSError
        f.flush()
        os.fsync(f.fileno())


def save_shard(checkpoint: str | os.PathLike, head: nn.Module, optimizer: torch.optim.Optimizer, step: int) -> str:
    """Write this rank's shard (centres and their momentum) for the main file `checkpoint`; returns its name."""
    momentum = optimizer.state.get(head.kernel, {}).get("momentum_buffer")
    s = head.shard
    record = {"kernel": head.kernel.detach().cpu(), "momentum": None if momentum is None else momentum.cpu(),
              "start": s.start, "stop": s.stop, "num_classes": s.num_classes, "rank": s.rank,
              "world_size": s.world_size}
    name = shard_name(s, step)
    _save(record, shard_dir(checkpoint) / name)
    return name


def main_file_entries(head: nn.Module, optimizer: torch.optim.Optimizer, shard_names: list[str]) -> tuple[dict, dict]:
    """(optimizer state without the centres' momentum, `extra["partial_fc"]`) for rank 0's main file."""
    state = optimizer.state_dict()
    state["state"] = {k: v for k, v in state["state"].items() if k != param_index(optimizer, head.kernel)}
    entry = {"num_classes": head.class_num, "world_size": head.shard.world_size, "shards": list(shard_names)}
    return state, entry


def remove_stale_shards(checkpoint: str | os.PathLike, shard: Shard, keep: str) -> None:
    """Remove this rank's older shard files of `checkpoint` (call after the main file names `keep`)."""
    pattern = re.compile(rf"rank{shard.rank}of\d+-step\d+\.pt")
    folder = shard_dir(checkpoint)
    for path in folder.glob(f"rank{shard.rank}of*"):
        if path.name != keep and pattern.fullmatch(path.name):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()


def link_shard(src_checkpoint: str | os.PathLike, dst_checkpoint: str | os.PathLike, name: str) -> None:
    """Make shard `name` of `src` also one of `dst` (a hard link where possible; else an atomic copy)."""
    src, dst = shard_dir(src_checkpoint) / name, shard_dir(dst_checkpoint) / name
    dst.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(dst) as tmp:
        try:
            os.link(src, tmp)
        except OSError:
            tmp.write_bytes(src.read_bytes())


def _read_shard(path: Path, shard: Shard) -> dict:
    """The record of `shard`, checked against the layout that the main file gives: its columns are
    classes [shard.start, shard.stop), and its momentum (if any) has the same shape."""
    if not path.is_file():
        raise ConfigError(f"{path}: Partial FC shard missing (the .pfc folder must stay next to its .ckpt)")
    try:
        record = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise ConfigError(f"{path}: Partial FC shard cannot be loaded safely ({torch_reason(exc)})") from None
    except (RuntimeError, EOFError, OSError, ValueError) as exc:
        raise ConfigError(f"{path}: unreadable Partial FC shard, truncated or corrupt ({torch_reason(exc)})") from None
    kernel = record.get("kernel") if isinstance(record, dict) else None
    if not isinstance(kernel, torch.Tensor) or kernel.dim() != 2 or not kernel.is_floating_point():
        raise ConfigError(f"{path}: not a Partial FC shard (no 2-D floating-point kernel)")
    columns = shard.stop - shard.start
    if kernel.shape[1] != columns or (record.get("start", shard.start), record.get("stop", shard.stop)) != (shard.start, shard.stop):
        raise ConfigError(f"{path}: holds {kernel.shape[1]} class centres, but rank {shard.rank} of {shard.world_size} "
                          f"holds classes [{shard.start}, {shard.stop}) of {shard.num_classes} ({columns} centres)")
    momentum = record.get("momentum")
    if momentum is not None and (not isinstance(momentum, torch.Tensor) or momentum.shape != kernel.shape):
        raise ConfigError(f"{path}: momentum of shape {getattr(momentum, 'shape', type(momentum).__name__)} for "
                          f"centres of shape {tuple(kernel.shape)}")
    return record


def load_columns(checkpoint: str | os.PathLike, head_state: dict, extra: dict, head_index: int | None, start: int,
                 stop: int) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Columns [start, stop) of the saved centres and of their momentum (None when it has none yet),
    from shards of any world size or from a full `kernel` in `head_state` (the `head.*` entries)."""
    if "partial_fc" not in extra:
        kernel = head_state.get("kernel")
        if kernel is None:
            raise ConfigError(f"{checkpoint}: no class centres (neither {KERNEL_KEY} nor Partial FC shards)")
        saved = extra.get("optimizer_states", [{}])[0].get("state", {})
        momentum = saved.get(head_index, {}).get("momentum_buffer") if head_index is not None else None
        return kernel[:, start:stop].clone(), None if momentum is None else momentum[:, start:stop].clone()
    kernels, momenta = [], []
    entry = extra["partial_fc"]
    if len(entry["shards"]) != entry["world_size"]:
        raise ConfigError(f"{checkpoint}: names {len(entry['shards'])} Partial FC shards for {entry['world_size']} ranks")
    for old in (Shard(entry["num_classes"], entry["world_size"], r) for r in range(entry["world_size"])):
        lo, hi = max(start, old.start), min(stop, old.stop)
        if lo >= hi:
            continue
        record = _read_shard(shard_dir(checkpoint) / entry["shards"][old.rank], old)
        kernels.append(record["kernel"][:, lo - old.start:hi - old.start])
        momenta.append(None if record["momentum"] is None else record["momentum"][:, lo - old.start:hi - old.start])
    if len({k.shape[0] for k in kernels}) > 1:
        raise ConfigError(f"{shard_dir(checkpoint)}: shards of different embedding sizes "
                          f"({sorted({k.shape[0] for k in kernels})})")
    has_momentum = all(m is not None for m in momenta)
    return torch.cat(kernels, dim=1), torch.cat(momenta, dim=1) if has_momentum else None


def resume_head(checkpoint: str | os.PathLike, head_state: dict, extra: dict, head: nn.Module,
                margin_state: nn.Module, optimizer: torch.optim.Optimizer) -> None:
    """Load the margin's buffers, the optimizer state and this rank's columns of the saved centres
    and their momentum, from a Partial FC checkpoint (any world size) or a full-head one."""
    margin_state.load_state_dict({k: v for k, v in head_state.items() if k != "kernel"}, strict=True)
    index = param_index(optimizer, head.kernel)
    kernel, momentum = load_columns(checkpoint, head_state, extra, index, head.shard.start, head.shard.stop)
    optimizer_state = dict(extra["optimizer_states"][0])
    # a full head's momentum is (E, C): slice it here rather than let the optimizer copy it to the device
    optimizer_state["state"] = {k: v for k, v in optimizer_state["state"].items() if k != index}
    optimizer.load_state_dict(optimizer_state)
    with torch.no_grad():
        head.kernel.copy_(kernel)
    if momentum is not None:
        optimizer.state[head.kernel] = {"momentum_buffer": momentum.to(head.kernel.device)}


def head_param_index(loaded: dict) -> int | None:
    """Index of the centres in a saved optimizer state: the last parameter of the first (weight-decay)
    group, where `build_optimizer` puts the head's kernel after the backbone's parameters."""
    states = loaded.get("facetrain", {}).get("extra", {}).get("optimizer_states")
    if not states:
        return None
    return len(states[0]["param_groups"][0]["params"]) - 1 if states[0]["param_groups"] else None


def consolidate(checkpoint: str | os.PathLike, out: str | os.PathLike) -> dict[str, Any]:
    """Write `out`: `checkpoint` with its shards gathered into AdaFace's `head.kernel` (E, C) and their
    momentum put back into the optimizer state, so that it loads like a full-head checkpoint (AdaFace
    tools, `facetrain train` with or without --partial_fc). Returns a short summary."""
    loaded = load_checkpoint(checkpoint, map_location="cpu")
    extra = loaded.get("facetrain", {}).get("extra", {})
    if "partial_fc" not in extra:
        raise ConfigError(f"{checkpoint}: not a Partial FC checkpoint (it already holds {KERNEL_KEY})")
    num_classes = extra["partial_fc"]["num_classes"]
    index = head_param_index(loaded)
    kernel, momentum = load_columns(checkpoint, {}, extra, index, 0, num_classes)
    loaded["state_dict"][KERNEL_KEY] = kernel
    if momentum is not None and index is not None:
        extra["optimizer_states"][0]["state"][index] = {"momentum_buffer": momentum}
    shards = extra.pop("partial_fc")
    loaded["hyper_parameters"]["partial_fc_world_size"] = shards["world_size"]
    try:
        _save(loaded, Path(out))
    except (RuntimeError, OSError) as exc:  # torch.save reports a full disk as a RuntimeError
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else " ".join(str(exc).split())
        raise ConfigError(f"{out}: cannot write the consolidated checkpoint ({reason}); nothing was written") from None
    return {"classes": num_classes, "embedding_size": kernel.shape[0], "shards": shards["world_size"],
            "momentum": momentum is not None}
