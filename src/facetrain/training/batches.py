"""Training batches: a Dataset over any TrainingSource with the AdaFace augmentations, a sampler that
shards and shuffles by (seed, epoch) and can start mid-epoch, and uint8 collation.

Determinism: sample i of epoch e is augmented with its own generator seeded by (seed, e, i), so
augmentations do not depend on worker count, worker assignment or process, and a resumed run
sees exactly the images it would have seen. The sampler hands out (epoch, i) pairs, so loader
workers can persist across epochs (their copy of the dataset never needs the new epoch).
"""
from __future__ import annotations

import hashlib
import math
import os
import shutil
from typing import Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler, get_worker_info

from facetrain.data.augment import Augmenter
from facetrain.data.training_source import TrainingSource
from facetrain.errors import ConfigError, DataError

IMAGE_SHAPE = (112, 112, 3)


class FaceTrainDataset(Dataset):
    """(uint8 BGR 112x112x3 augmented image, int label) for index i of the current epoch."""

    def __init__(self, source: TrainingSource, augmenter: Augmenter | None, seed: int, num_classes: int):
        self.source = source
        self.augmenter = augmenter
        self.seed = seed
        self.labels = np.asarray(source.labels, dtype=np.int64)
        self.epoch = 0
        check_labels(self.labels, num_classes, source.describe())

    def __len__(self) -> int:
        return len(self.source)

    def set_epoch(self, epoch: int) -> None:
        """The epoch used for plain integer indices (the sampler's (epoch, i) pairs carry their own)."""
        self.epoch = epoch

    def __getitem__(self, index: int | tuple[int, int]) -> tuple[np.ndarray, int]:
        epoch, index = index if isinstance(index, tuple) else (self.epoch, index)
        image = self.source.read(index)
        if image.shape != IMAGE_SHAPE or image.dtype != np.uint8:
            raise DataError(f"{self.source.describe()}: image {index} is {image.dtype} {image.shape}, "
                            f"expected uint8 {IMAGE_SHAPE} (aligned 112x112 faces)")
        if self.augmenter is not None:
            rng = np.random.default_rng((self.seed, epoch, index))
            image = self.augmenter(image, rng)
        return image, int(self.labels[index])


def check_labels(labels: np.ndarray, num_classes: int, where: str) -> None:
    if len(labels) == 0:
        raise DataError(f"{where}: the training set is empty")
    if labels.min() < 0 or labels.max() >= num_classes:
        bad = int(np.flatnonzero((labels < 0) | (labels >= num_classes))[0])
        raise DataError(f"{where}: image {bad} has label {labels[bad]}, outside [0, {num_classes}) "
                        f"(--custom_num_class too small?)")


class EpochSampler(DistributedSampler):
    """DistributedSampler (shuffle by seed + epoch, shard by rank, drop the ragged tail so every rank
    gets the same count) that can skip the first `start` samples of this rank's share: resuming at
    batch k of an epoch replays exactly the remaining batches. Yields (epoch, index) pairs."""

    def __init__(self, dataset: Dataset, num_replicas: int, rank: int, seed: int):
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=True, seed=seed, drop_last=True)
        self.start = 0

    def set_position(self, epoch: int, start: int = 0) -> None:
        self.set_epoch(epoch)
        self.start = start

    def __iter__(self) -> Iterator[tuple[int, int]]:
        indices, epoch = list(super().__iter__()), self.epoch
        return ((epoch, i) for i in indices[self.start:])  # pairs made as the loader asks (millions of images)

    def __len__(self) -> int:
        return self.num_samples - self.start


def collate_uint8(batch: Sequence[tuple[np.ndarray, int]]) -> tuple[torch.Tensor, torch.Tensor]:
    """-> (B,112,112,3) uint8 images (normalised on the device: 4x less to copy) and (B,) int64 labels."""
    arrays = [b[0] for b in batch]
    if get_worker_info() is None:
        images = torch.from_numpy(np.stack(arrays))
    else:
        # in a loader process: stack straight into shared memory, which is how the batch travels to the
        # training process (a private array would be copied there once more), as torch's default_collate does
        shape = (len(arrays), *arrays[0].shape)
        images = torch.empty(0, dtype=torch.uint8).set_(torch.UntypedStorage._new_shared(math.prod(shape))).view(shape)
        np.stack(arrays, out=images.numpy())
    labels = torch.tensor([b[1] for b in batch], dtype=torch.int64)
    return images, labels


SHM_PATH, PREFETCH = "/dev/shm", 4


def loader_prefetch(num_workers: int, batch_size: int, local_processes: int, shm_free: int | None) -> int:
    """Batches each loader worker prepares ahead: 4, or fewer when the node's shared memory (where
    loader workers hand batches over; containers often get 64 MB) cannot hold them for all of this
    node's training processes. ConfigError, saying what to change, when even one does not fit
    (the loader would die of a bus error). `shm_free`: bytes free there (None: not limited/known)."""
    if num_workers == 0 or shm_free is None:
        return PREFETCH
    batch_bytes = batch_size * (math.prod(IMAGE_SHAPE) + 8)
    per_prefetch = local_processes * num_workers * batch_bytes
    fits = int(0.8 * shm_free // per_prefetch)  # headroom for the pinned-memory thread's and torch's own
    if fits < 1:
        workers = max(0, int(0.8 * shm_free // (local_processes * batch_bytes)))
        raise ConfigError(f"{SHM_PATH}: {shm_free / 2**20:.0f} MB free, but {local_processes} process(es) x "
                          f"{num_workers} loader workers x a batch of {batch_size} ({batch_bytes / 2**20:.1f} MB) need "
                          f"{per_prefetch / 2**20:.0f} MB there: give the machine more shared memory (docker run "
                          f"--shm-size=8g) or lower --num_workers to {workers}")
    return min(PREFETCH, fits)


def shared_memory_free(path: str = SHM_PATH) -> int | None:
    try:
        return shutil.disk_usage(path).free
    except OSError:  # no /dev/shm (not Linux): the platform's own mechanism, not limited here
        return None


def build_train_loader(dataset: FaceTrainDataset, batch_size: int, num_workers: int, rank: int, world_size: int,
                       seed: int, pin_memory: bool = False, prefetch: int = PREFETCH) -> tuple[DataLoader, EpochSampler]:
    """`batch_size` is per process. The loader gets its own torch generator so that creating an
    iterator does not consume the global RNG (dropout masks stay reproducible across resumes)."""
    sampler = EpochSampler(dataset, num_replicas=world_size, rank=rank, seed=seed)
    if sampler.num_samples < batch_size:
        raise DataError(f"{dataset.source.describe()}: {len(dataset)} images give {sampler.num_samples} per "
                        f"process, fewer than one batch of {batch_size}; lower --batch_size")
    loader = DataLoader(dataset, batch_size=batch_size, sampler=sampler, num_workers=num_workers,
                        collate_fn=collate_uint8, drop_last=True, pin_memory=pin_memory,
                        generator=torch.Generator().manual_seed(seed),
                        persistent_workers=num_workers > 0, prefetch_factor=prefetch if num_workers else None)
    return loader, sampler


MAX_DEFAULT_WORKERS = 16  # AdaFace's default


def data_fingerprint(source: TrainingSource, samples: int = 16) -> str:
    """sha256 of what a run trains on: the image count, the labels in order and the pixels of `samples`
    evenly spaced images. Cheap (no full pass over the images) and the same for one dataset in any of
    its formats (folder, RecordIO, memfile); another dataset with the same class count differs."""
    digest = hashlib.sha256(f"{len(source)} {source.num_classes}\n".encode())
    digest.update(np.ascontiguousarray(source.labels, dtype="<i8").tobytes())
    for i in sorted({int(k) for k in np.linspace(0, len(source) - 1, samples)} if len(source) else ()):
        digest.update(np.ascontiguousarray(source.read(i)).tobytes())
    return digest.hexdigest()


def worker_count(requested: int, local_world_size: int, cpus: int | None = None) -> tuple[int, str | None]:
    """(loader processes per training process, a notice when the request was lowered): -1 is
    `default_num_workers`; more than this node's CPUs per process are capped there (each worker is a
    process: 1000 of them on 2 CPUs only thrash)."""
    cpus = cpus if cpus is not None else _cpus()
    if requested < 0:
        return default_num_workers(local_world_size, cpus), None
    cap = max(1, cpus // max(1, local_world_size))
    if requested <= cap:
        return requested, None
    return cap, (f"--num_workers {requested}: this node has {cpus} CPU(s) for {local_world_size} training "
                 f"process(es); using {cap} loader process(es) each")


def _cpus() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def default_num_workers(local_world_size: int, cpus: int | None = None) -> int:
    """Loader processes per training process: this node's CPUs shared by its processes (at most 16),
    so 8 ranks on a 128-CPU node start 16 each, not 128 each."""
    cpus = cpus if cpus is not None else _cpus()
    return max(1, min(MAX_DEFAULT_WORKERS, cpus // max(1, local_world_size)))


def batches_per_epoch(num_samples_per_rank: int, batch_size: int, limit: int = 0) -> int:
    """Number of batches each rank runs per epoch (drop_last), capped by `limit` when > 0."""
    n = num_samples_per_rank // batch_size
    return min(n, limit) if limit > 0 else n


def optimizer_steps_per_epoch(batches: int, accumulate: int) -> int:
    """An epoch's last partial accumulation group still makes an optimizer step."""
    return math.ceil(batches / accumulate)
