"""Batched embedding of uint8 BGR faces (and their horizontal flips) with a prefetching loader.

A background thread slices the image source into uint8 batches (memmap pages, or decoding and
aligning for IJB) while the model runs; batches travel as uint8 and are normalised on the device.
On a GPU: batches of at least 512 staged in pinned host memory (asynchronous copies), the image and
its flip in one forward pass, features gathered on the device and copied to the host once.
GPU "fp32" runs the convolutions in TF32 unless `torch.backends.cudnn.allow_tf32 = False`.
"""
from __future__ import annotations

import contextlib
import queue
import threading
from typing import Iterator, Protocol, Sequence

import numpy as np
import torch
from tqdm import tqdm

from facetrain.data.transforms import normalize_batch
from facetrain.eval.finite import refuse_non_finite
from facetrain.precision import autocast


class ImageSource(Protocol):
    """Anything with len() whose slices are (B,112,112,3) uint8 BGR arrays: an ndarray, a memmap,
    or a lazy reader such as the IJB aligned-crop source."""

    def __len__(self) -> int: ...

    def __getitem__(self, index: slice) -> np.ndarray: ...


MIN_GPU_BATCH = 512


def eval_batch_size(requested: int, device: torch.device) -> int:
    """Smaller batches leave a GPU idle between kernel launches; CPUs take the batch asked for."""
    return max(requested, MIN_GPU_BATCH) if device.type == "cuda" else requested


def _prefetch(images: ImageSource, starts: Sequence[int], batch_size: int, pin: bool,
              depth: int = 2) -> Iterator[torch.Tensor]:
    """Yield images[s:s+batch_size] as uint8 tensors for each start, read by a background thread `depth`
    ahead; in pinned memory when `pin` (the caching host allocator reuses a block only once the
    asynchronous copy from it has finished)."""
    slots: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def produce() -> None:
        try:
            for s in starts:
                if stop.is_set():
                    return
                chunk = np.asarray(images[s : s + batch_size])  # the read happens here, off the main thread
                if pin:
                    staged = torch.empty(chunk.shape, dtype=torch.uint8, pin_memory=True)
                    staged.numpy()[...] = chunk
                else:
                    staged = torch.from_numpy(np.array(chunk))  # a writable copy
                slots.put(staged)
            slots.put(None)
        except BaseException as exc:  # handed to the consumer, which re-raises it with its traceback
            slots.put(exc)

    worker = threading.Thread(target=produce, daemon=True)
    worker.start()
    try:
        while True:
            item = slots.get()
            if item is None:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        while worker.is_alive():  # unblock a producer waiting on a full queue
            with contextlib.suppress(queue.Empty):
                slots.get(timeout=0.05)


def _as_features(output) -> torch.Tensor:
    """(emb, norm) -> emb * norm (un-normalised); a single tensor is taken as the feature itself."""
    if isinstance(output, (tuple, list)):
        emb, norm = output[0], output[1]
        return emb.float() * norm.float()
    return output.float()


def weight_memory_format(model: torch.nn.Module) -> torch.memory_format:
    """channels_last when the model's 4-D weights are laid out NHWC (a model trained with
    --channels_last), else contiguous: what `model.to(memory_format=...)` restores."""
    for p in model.parameters():
        if p.dim() == 4 and not p.is_contiguous() and p.is_contiguous(memory_format=torch.channels_last):
            return torch.channels_last
    return torch.contiguous_format


def extract_features(model: torch.nn.Module, images: ImageSource, batch_size: int = 256, device: str | torch.device | None = None,
                     precision: str = "fp32", channels_last: bool = False, flip: bool = True, progress: bool = True,
                     desc: str = "embed") -> tuple[np.ndarray, np.ndarray | None]:
    """Return (features, flip_features) as float32 (N, D) un-normalised features (emb * norm).

    `flip_features` is None when flip=False. The model runs in eval mode under inference_mode; its
    train/eval mode, device and memory format are restored afterwards. `device=None` keeps the
    model where it is. bf16/fp16 use autocast (opt-in; fp32 gives the reference numbers).
    Non-finite features are refused (ConfigError naming the model, see `facetrain.eval.finite`).
    """
    param = next(model.parameters(), None)
    home = param.device if param is not None else torch.device("cpu")
    target = torch.device(device) if device is not None else home
    mixed = autocast(precision, target)  # checks the name before anything moves
    was_training, found_format = model.training, weight_memory_format(model)
    model.eval().to(target)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    layout = torch.channels_last if channels_last else torch.contiguous_format
    n = len(images)
    batch_size = eval_batch_size(batch_size, target)
    starts = range(0, n, batch_size)
    views = 2 if flip else 1
    gathered: torch.Tensor | None = None  # (views, n, D) on the device
    try:
        with torch.inference_mode(), mixed:
            batches = _prefetch(images, starts, batch_size, pin=target.type == "cuda")
            for start, batch in zip(starts, tqdm(batches, total=len(starts), desc=desc,
                                                 disable=None if progress else True, leave=False)):
                x = normalize_batch(batch.to(target, non_blocking=True), memory_format=layout)
                if flip:
                    x = torch.cat([x, torch.flip(x, dims=[3])])
                if channels_last:
                    x = x.contiguous(memory_format=torch.channels_last)
                out = _as_features(model(x))
                if gathered is None:
                    gathered = torch.empty((views, n, out.shape[1]), dtype=torch.float32, device=target)
                gathered[:, start : start + len(batch)] = out.view(views, len(batch), -1)
    finally:
        model.to(home, memory_format=found_format).train(was_training)
    if gathered is None:
        raise ValueError("no images to embed")
    host = gathered.cpu().numpy()  # the one device-to-host copy
    refuse_non_finite(list(host), model, f"images ({desc})")
    return host[0], (host[1] if flip else None)
