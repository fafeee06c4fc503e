"""Building a training run apart from its loop: `build_run(config, ctx)` opens the data, builds the
model, head, precision policy, optimizer, schedule, DDP wrapper, validation sets and logger, and
restores a checkpoint's state when resuming (before anything is written). `save_run` writes the run's state (collective).

The loop (`facetrain.training.loop`) then only steps through what this module built.
"""
from __future__ import annotations

import random
import shutil
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from facetrain.checkpoint import load_backbone
from facetrain.data.augment import Augmenter
from facetrain.data.guards.paths import resolve_data_path
from facetrain.data.training_source import open_training_source
from facetrain.data.formats.verification_set import VerificationSet
from facetrain.errors import ConfigError, FacetrainError
from facetrain.io_utils import atomic_path
from facetrain.models import build_model
from facetrain.precision import resolve_precision
from facetrain.training import distributed
from facetrain.training.amp import Precision, maybe_compile
from facetrain.training.batches import (PREFETCH, SHM_PATH, EpochSampler, FaceTrainDataset, batches_per_epoch,
                                     build_train_loader, data_fingerprint, loader_prefetch, optimizer_steps_per_epoch,
                                     shared_memory_free, worker_count)
from facetrain.training.config import TrainConfig
from facetrain.training.logger import MetricLogger
from facetrain.training.module import RecognitionNet, build_model_and_head
from facetrain.training.optim import build_optimizer, build_scheduler, prepare_optimizer_state
from facetrain.training.run_folder import (abandon_run_folder, check_output_dir, clear_run_files, lock_run_folder,
                                        unlock_run_folder)
from facetrain.training.state import (BestResult, Position, TrainingState, capture_rng, load_training_state,
                                   restore_rng, save_training_state)
from facetrain.training.validation import load_val_sets
from facetrain.training.wandb_run import check_wandb


@dataclass
class LossTotals:
    """Running sums behind the logged training-loss means (the epoch's, and the logging window's
    `StepWindow.state_dict()`); saved in checkpoints so that a resumed run logs exactly what an
    uninterrupted one does."""
    epoch_loss: float = 0.0
    epoch_steps: int = 0
    window: dict = field(default_factory=dict)


@dataclass
class TrainingRun:
    """Everything a training job is made of. `position` and `best` change as it trains."""
    config: TrainConfig
    ctx: distributed.DistContext
    output_dir: Path
    dataset: FaceTrainDataset
    loader: DataLoader
    sampler: EpochSampler
    batch_size: int  # per process
    batches: int  # per epoch, per process
    steps_per_epoch: int  # optimizer steps
    num_classes: int
    model: nn.Module
    head: nn.Module
    precision: Precision
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler
    net: RecognitionNet  # backbone + head + loss: what the step calls
    ddp_net: nn.Module  # `net`, wrapped in DistributedDataParallel when there are several processes
    val_sets: dict[str, VerificationSet]  # rank 0 only
    val_check_batches: int  # within a validated epoch, validate after every this many batches
    logger: MetricLogger
    position: Position
    best: BestResult
    losses: LossTotals = field(default_factory=LossTotals)
    data_fingerprint: str = ""  # of the training data (`batches.data_fingerprint`), kept in checkpoints
    folder_lock: int | None = None  # rank 0: the descriptor holding the run folder's lock (`release_run`)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def build_run(config: TrainConfig, ctx: distributed.DistContext) -> TrainingRun:
    """Build every part of a run (ConfigError/DataError before any step when something is wrong)."""
    config.validate()
    output_dir = Path(distributed.broadcast_object(str(config.resolve_output_dir()), ctx))
    # files are checked (and read) on rank 0 only: other nodes need not see them
    _on_main(ctx, _check_resume_file, config.resume_from_checkpoint)
    _on_main(ctx, check_output_dir, output_dir, config.resume_from_checkpoint, config.overwrite)
    if config.use_wandb:
        _on_main(ctx, check_wandb, output_dir, config.overwrite)
    seed_everything(config.seed)
    if ctx.world_size > 1 and config.batch_size % ctx.world_size:
        raise ConfigError(f"--batch_size {config.batch_size} (total) is not divisible by {ctx.world_size} processes")
    batch_size = config.batch_size // ctx.world_size
    if batch_size < 2:
        raise ConfigError(f"--batch_size {config.batch_size} (total) leaves {batch_size} image per process; batch "
                          "normalisation needs at least 2")

    source = open_training_source(config.data_root, config.train_data_path, config.use_mxrecord)
    if config.custom_num_class > 0 and config.custom_num_class != source.num_classes:
        raise ConfigError(f"--custom_num_class {config.custom_num_class} does not match the {source.num_classes} "
                          f"classes of {source.describe()} (labels 0..{source.num_classes - 1}); "
                          "leave it out to use the data's count")
    num_classes = source.num_classes
    augmenter = Augmenter(config.crop_augmentation_prob, config.low_res_augmentation_prob,
                          config.photometric_augmentation_prob, swap_color_channel=config.swap_color_channel)
    dataset = FaceTrainDataset(source, augmenter, config.seed, num_classes)
    fingerprint = data_fingerprint(source)
    workers, notice = worker_count(config.num_workers, ctx.local_world_size)
    if notice and ctx.is_main:
        warnings.warn(notice, stacklevel=2)
    prefetch = loader_prefetch(workers, batch_size, ctx.local_world_size, shared_memory_free())
    if prefetch < PREFETCH and ctx.local_rank == 0:
        warnings.warn(f"{SHM_PATH} is small: loader workers prepare {prefetch} batch(es) ahead instead of "
                      f"{PREFETCH} (docker run --shm-size=8g restores it)", stacklevel=2)
    loader, sampler = build_train_loader(dataset, batch_size, workers, ctx.rank, ctx.world_size,
                                         config.seed, pin_memory=ctx.device.type == "cuda", prefetch=prefetch)
    batches = batches_per_epoch(sampler.num_samples, batch_size, config.batches_per_epoch_limit)
    val_check_batches = validation_interval_batches(config.effective_val_check_interval, batches)

    model, head = build_model_and_head(config, num_classes, _starting_backbone(config, ctx))
    # record the values actually used (the head's defaults for m/h/s/t_alpha left out), so config.json and
    # checkpoints say what ran and a run replays from its config.json
    for name, value in head.hparams().items():
        if getattr(config, name, "") is None:
            setattr(config, name, value)
    if ctx.enabled and config.sync_bn:
        if ctx.device.type != "cuda":
            raise ConfigError("--sync_bn needs GPUs (torch's SyncBatchNorm does not run on CPU processes)")
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    precision = Precision(resolve_precision(config.precision, ctx.device, config.use_16bit), ctx.device,
                          config.channels_last)
    model = precision.prepare_model(model.to(ctx.device))
    head.to(ctx.device)
    steps_per_epoch = optimizer_steps_per_epoch(batches, config.accumulate_grad_batches)
    optimizer = build_optimizer(model, head, config.lr, config.momentum, config.weight_decay)
    scheduler = build_scheduler(optimizer, steps_per_epoch, config.lr_milestones, config.lr_gamma,
                                config.warmup_epochs)
    scaler = precision.make_scaler()
    position, best, losses = Position(), BestResult(), LossTotals()
    if config.resume_from_checkpoint:
        position, best, losses = resume_state(config.resume_from_checkpoint, config, ctx, model, head, optimizer,
                                              scheduler, scaler, batches, fingerprint)
        if position.epoch > config.epochs or (position.epoch == config.epochs and position.batch > 0):
            raise ConfigError(f"{config.resume_from_checkpoint}: has trained {position.epoch} epoch(s), more than "
                              f"--epochs {config.epochs}; a run cannot be shortened: give --epochs "
                              f">= {position.epoch} (= {position.epoch} only repeats the final test)")
    elif ctx.enabled:
        torch.manual_seed(config.seed + ctx.rank)  # independent dropout masks per process
    net = RecognitionNet(model, head, precision, maybe_compile(model, config.compile))
    # validation sets are read before DDP exists, so no other rank waits in a collective meanwhile
    val_sets = load_val_sets(config.data_root, config.val_data_path) if ctx.is_main else {}
    ddp_net: nn.Module = net
    if ctx.enabled:
        ids = [ctx.device.index] if ctx.device.type == "cuda" else None
        ddp_net = nn.parallel.DistributedDataParallel(net, device_ids=ids)
    created = not output_dir.exists()
    folder_lock = _lock_folder(ctx, output_dir, config)  # only now that everything else was accepted
    try:
        if config.overwrite and ctx.is_main:
            cleared = clear_run_files(output_dir)
            if cleared:
                print(f"--overwrite: deleted the previous run's {', '.join(cleared)} in {output_dir}")
        logger = _metric_logger(config, output_dir, ctx.is_main)
    except BaseException:
        if folder_lock is not None:  # nothing left behind by a run that did not start
            abandon_run_folder(output_dir, folder_lock, created)
        raise
    return TrainingRun(config, ctx, output_dir, dataset, loader, sampler, batch_size, batches, steps_per_epoch,
                       num_classes, model, head, precision, optimizer, scheduler, scaler, net, ddp_net, val_sets,
                       val_check_batches, logger, position, best, losses, fingerprint, folder_lock)


def _lock_folder(ctx: distributed.DistContext, output_dir: Path, config: TrainConfig) -> int | None:
    """Rank 0 takes the run folder's lock and checks the folder again under it (another run may have
    used it since the first check); the refusal is raised on every rank."""
    fd, problem = None, None
    if ctx.is_main:
        try:
            fd = lock_run_folder(output_dir)
            check_output_dir(output_dir, config.resume_from_checkpoint, config.overwrite)
        except (ConfigError, OSError) as exc:  # e.g. a read-only parent folder: refused on every rank
            problem = str(exc) if isinstance(exc, ConfigError) else f"{output_dir}: {exc.strerror or exc}"
            if fd is not None:
                unlock_run_folder(fd)
    problem = distributed.broadcast_object(problem, ctx)
    if problem:
        raise ConfigError(problem)
    return fd


def release_run(run: TrainingRun) -> None:
    """Release the run folder's lock (also released by the kernel when the process dies)."""
    if run.folder_lock is not None:
        unlock_run_folder(run.folder_lock)
        run.folder_lock = None


def _metric_logger(config: TrainConfig, output_dir: Path, enabled: bool) -> MetricLogger:
    return MetricLogger(output_dir, enabled=enabled, wandb_project=config.wandb_project if config.use_wandb else None,
                        config=config.to_dict())


def _check_resume_file(path: str) -> None:
    if path and not Path(path).is_file():
        raise ConfigError(f"{path}: checkpoint not found")


def _starting_backbone(config: TrainConfig, ctx: distributed.DistContext) -> nn.Module | None:
    """With --start_from_model_statedict: rank 0 reads the checkpoint; the other ranks build the same
    backbone (architecture and embedding size from rank 0) and receive its weights with DDP's initial
    broadcast of rank 0's parameters and buffers. A bad file is the same ConfigError on every rank."""
    if not config.start_from_model_statedict:
        return None
    model, outcome = None, None
    if ctx.is_main:
        try:
            model, _ = load_backbone(config.start_from_model_statedict, arch=config.arch)
            outcome = model.embedding_size
        except FacetrainError as exc:
            outcome = exc
    outcome = distributed.broadcast_object(outcome, ctx)
    if isinstance(outcome, FacetrainError):
        raise outcome
    if model is None:
        model = build_model(config.arch, embedding_size=outcome)
    return model.train()


def _on_main(ctx: distributed.DistContext, check, *args) -> None:
    """Run a check on rank 0 only (e.g. of the file system, which other ranks may see later) and raise
    its ConfigError on every rank."""
    problem = None
    if ctx.is_main:
        try:
            check(*args)
        except ConfigError as exc:
            problem = str(exc)
    problem = distributed.broadcast_object(problem, ctx)
    if problem:
        raise ConfigError(problem)


def validation_interval_batches(interval: float | int, batches: int) -> int:
    """Lightning's `val_check_batch`: a fraction of the epoch's batches (at least 1), or a number of batches."""
    if isinstance(interval, int):
        if interval > batches:
            raise ConfigError(f"--val_check_interval {interval} is more batches than an epoch has ({batches}); "
                              "use a fraction like 1.0 for once per epoch")
        return interval
    return max(1, int(batches * interval))


def resume_state(path: str, config: TrainConfig, ctx: distributed.DistContext, model: nn.Module, head: nn.Module,
                 optimizer: torch.optim.Optimizer, scheduler: torch.optim.lr_scheduler.LRScheduler,
                 scaler: torch.amp.GradScaler, batches: int, fingerprint: str) -> tuple[Position, BestResult, LossTotals]:
    """Load a checkpoint's weights, optimizer, schedule, scaler and RNG streams; its position, best result
    and loss totals. A checkpoint trained on other data (by `fingerprint`) is refused unless
    `--resume_onto_other_data`.
    Only rank 0 reads the file (its path is rank 0's) and hands the state to the others, so nodes need
    no shared filesystem; a bad checkpoint is the same ConfigError on every rank."""
    state = _load_on_rank0(path, model.arch, config.head, head.class_num, ctx)
    check_same_data(path, state.extra.get("data_fingerprint"), fingerprint, config)
    model.load_state_dict(state.model_state, strict=True)
    head.load_checkpoint_state(path, state.head_state, state.extra, optimizer)
    prepare_optimizer_state(optimizer)
    scheduler.load_state_dict(state.extra["lr_schedulers"][0])
    load_scaler_state(scaler, state.extra["scaler"], path)
    position = state.position
    if position.batch % config.accumulate_grad_batches and position.batch < batches:
        raise ConfigError(f"{path}: saved inside an accumulation group; resume with the same "
                          "--accumulate_grad_batches")
    rngs = state.extra["rng_per_rank"]
    if len(rngs) == ctx.world_size:
        restore_rng(rngs[ctx.rank], ctx.device)
    else:
        warnings.warn(f"{path}: saved by {len(rngs)} processes, resumed with {ctx.world_size}: "
                      "random streams restart from the seed", stacklevel=2)
        torch.manual_seed(config.seed + ctx.rank + position.global_step)
    return position, state.best, LossTotals(**state.extra.get("loss_totals", {}))


def check_same_data(path: str, saved: str | None, current: str, config: TrainConfig) -> None:
    """The data a checkpoint was trained on (its fingerprint; checkpoints without one cannot tell) must be
    the data the resumed run reads, unless asked otherwise."""
    if not saved or saved == current:
        return
    where = resolve_data_path(config.data_root, config.train_data_path, "training data (--train_data_path)")
    if not config.resume_onto_other_data:
        raise ConfigError(f"{path}: was trained on other data than {where} (fingerprint {saved[:12]}, this data "
                          f"{current[:12]}); resume with the data it was trained on, or give "
                          "--resume_onto_other_data to continue on this data anyway")
    warnings.warn(f"{path}: trained on other data (fingerprint {saved[:12]}); continuing on {where} "
                  f"({current[:12]}) as --resume_onto_other_data asks", stacklevel=3)


def _load_on_rank0(path: str, arch: str, head_name: str, num_classes: int, ctx: distributed.DistContext) -> TrainingState:
    """Rank 0 reads and checks the file; its error, else the state's tensors (with the backend), reach
    every rank."""
    problem: FacetrainError | None = None
    state: TrainingState | None = None
    if ctx.is_main:
        try:
            state = load_training_state(path, arch, head_name, num_classes)
        except FacetrainError as exc:
            problem = exc
    problem = distributed.broadcast_object(problem, ctx)
    if problem is not None:
        raise problem
    fields = distributed.broadcast_state(vars(state) if ctx.is_main else None, ctx)
    return TrainingState(**fields)


def load_scaler_state(scaler: torch.amp.GradScaler, saved: dict, path: str) -> None:
    """A checkpoint trained without loss scaling (bf16/fp32) has an empty scaler state: fp16
    (--use_16bit) then starts with a fresh scale instead of failing."""
    if saved:
        scaler.load_state_dict(saved)
    elif scaler.is_enabled():
        warnings.warn(f"{path}: trained without fp16 loss scaling; the loss scale starts afresh", stacklevel=3)


def save_run(run: TrainingRun, path: Path) -> None:
    """Collective: every rank hands its RNG state to rank 0, which writes the file. A head that keeps
    per-rank files (Partial FC's shards of the centres) writes them first, and the main file names them.
    A write that fails (disk full) on any rank is the same one-line error on every rank."""
    step = run.position.global_step
    problem = None
    try:
        run.head.save_rank_state(path, run.optimizer, step)
    except OSError as exc:
        problem = _write_problem(path, exc)
    gathered = [(capture_rng(run.ctx.device), problem)]
    if run.ctx.enabled:  # also the point by which every rank's files are on disk
        gathered = [None] * run.ctx.world_size
        torch.distributed.all_gather_object(gathered, (capture_rng(run.ctx.device), problem))
    rngs = [rng for rng, _ in gathered]
    problem = next((p for _, p in gathered if p), None)
    if run.ctx.is_main and problem is None:
        head, more = run.head.checkpoint_state(run.optimizer, step)
        try:
            save_training_state(path, run.model, head, run.optimizer, run.scheduler, run.scaler, run.position,
                                run.best, run.config.to_dict(), rngs, run.ctx.world_size,
                                loss_totals=asdict(run.losses), data_fingerprint=run.data_fingerprint, **more)
        except OSError as exc:
            problem = _write_problem(path, exc)
    _raise_on_every_rank(run.ctx, problem)  # also the barrier: every rank waits for the file
    run.head.remove_stale_rank_state(path, step)


def _write_problem(path: Path, exc: OSError) -> str:
    """e.g. disk full: the temporary is already gone, the previous file (if any) intact."""
    return (f"{path}: cannot write the checkpoint ({exc.strerror or exc}); nothing was written"
            f"{f', {path.name} still holds the previous one' if path.exists() else ''}")


def _raise_on_every_rank(ctx: distributed.DistContext, problem: str | None) -> None:
    """Rank 0's problem (None: none) raised on every rank; a collective, so also a barrier."""
    problem = distributed.broadcast_object(problem, ctx)
    if problem:
        raise FacetrainError(problem)


def copy_checkpoint(run: TrainingRun, src: Path, destinations: list[Path]) -> None:
    """Collective: `src` copied to every destination atomically (with Partial FC, each rank's shard
    first: the copied main file names them)."""
    step = run.position.global_step
    for dst in destinations:
        run.head.link_rank_state(src, dst, step)
    distributed.barrier(run.ctx)
    problem = None
    if run.ctx.is_main:
        for dst in destinations:
            try:
                with atomic_path(dst) as tmp:
                    shutil.copyfile(src, tmp)
            except OSError as exc:
                problem = _write_problem(dst, exc)
                break
    _raise_on_every_rank(run.ctx, problem)
    for dst in destinations:
        run.head.remove_stale_rank_state(dst, step)
