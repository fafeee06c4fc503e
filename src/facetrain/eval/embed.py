"""Batched embedding of uint8 BGR faces (and their horizontal flips) with a prefetching loader.

A background thread slices the image source into uint8 batches (memmap pages, or decoding and
aligning for IJB) while the model runs; batches travel as uint8 and are normalised on the device.
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

PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


class ImageSource(Protocol):
    """Anything with len() whose slices are (B,112,112,3) uint8 BGR arrays: an ndarray, a memmap,
    or a lazy reader such as the IJB aligned-crop source."""

    def __len__(self) -> int: ...

    def __getitem__(self, index: slice) -> np.ndarray: ...


def _prefetch(images: ImageSource, starts: Sequence[int], batch_size: int, depth: int = 2) -> Iterator[np.ndarray]:
    """Yield images[s:s+batch_size] for each start, produced by a background thread `depth` ahead."""
    slots: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def produce() -> None:
        try:
            for s in starts:
                if stop.is_set():
                    return
                slots.put(np.array(images[s : s + batch_size]))  # a writable copy: the read happens here, off the main thread
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


def extract_features(model: torch.nn.Module, images: ImageSource, batch_size: int = 256, device: str | torch.device | None = None,
                     precision: str = "fp32", channels_last: bool = False, flip: bool = True, progress: bool = True,
                     desc: str = "embed") -> tuple[np.ndarray, np.ndarray | None]:
    """Return (features, flip_features) as float32 (N, D) un-normalised features (emb * norm).

    `flip_features` is None when flip=False. The model runs in eval mode under inference_mode; its
    train/eval mode, device and memory format are restored afterwards. `device=None` keeps the
    model where it is. bf16/fp16 use autocast (opt-in; fp32 gives the reference numbers).
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {tuple(PRECISIONS)}, got {precision!r}")
    param = next(model.parameters(), None)
    home = param.device if param is not None else torch.device("cpu")
    target = torch.device(device) if device is not None else home
    was_training = model.training
    model.eval().to(target)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    autocast = (torch.autocast(target.type, dtype=PRECISIONS[precision]) if PRECISIONS[precision] is not None
                else contextlib.nullcontext())
    n = len(images)
    starts = range(0, n, batch_size)
    features: np.ndarray | None = None
    flip_features: np.ndarray | None = None
    try:
        with torch.inference_mode(), autocast:
            for start, batch in zip(starts, tqdm(_prefetch(images, starts, batch_size), total=len(starts),
                                                 desc=desc, disable=None if progress else True, leave=False)):
                x = normalize_batch(torch.from_numpy(batch).to(target, non_blocking=True))
                if channels_last:
                    x = x.contiguous(memory_format=torch.channels_last)
                out = _as_features(model(x)).cpu().numpy()
                if features is None:
                    features = np.empty((n, out.shape[1]), np.float32)
                    flip_features = np.empty_like(features) if flip else None
                features[start : start + len(out)] = out
                if flip:
                    flip_features[start : start + len(out)] = _as_features(model(torch.flip(x, dims=[3]))).cpu().numpy()
    finally:
        if channels_last:
            model.to(memory_format=torch.contiguous_format)
        model.to(home).train(was_training)
    if features is None:
        raise ValueError("no images to embed")
    return features, flip_features
