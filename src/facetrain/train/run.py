"""Building a training run apart from its loop: `build_run(config, ctx)` opens the data, builds the
model, head, precision policy, optimizer, schedule, DDP wrapper, validation sets and logger, and
restores a checkpoint's state when resuming (before anything is written). `save_run` writes the run's state (collective).

The loop (`facetrain.train.loop`) then only steps through what this module built.
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

from facetrain.data.augment import Augmenter
from facetrain.data.training_source import open_training_source
from facetrain.data.verification_set import VerificationSet
from facetrain.errors import ConfigError, FacetrainError
from facetrain.heads.partial_fc import MarginState, PartialFC, all_shards
from facetrain.io_utils import atomic_path
from facetrain.precision import resolve_precision
from facetrain.train import distributed as D
from facetrain.train import pfc_state
from facetrain.train.config import TrainConfig
from facetrain.train.data import (EpochSampler, FaceTrainDataset, batches_per_epoch, build_train_loader,
                                  default_num_workers, optimizer_steps_per_epoch)
from facetrain.train.logger import MetricLogger
from facetrain.train.module import RecognitionNet, build_model_and_head
from facetrain.train.optim import build_optimizer, build_scheduler, prepare_optimizer_state
from facetrain.train.precision import Precision, maybe_compile
from facetrain.train.run_folder import check_output_dir, clear_run_files
from facetrain.train.state import (BestResult, Position, TrainingState, capture_rng, load_training_state,
                                   restore_rng, save_training_state)
from facetrain.train.validation import load_val_sets
from facetrain.train.wandb_run import check_wandb


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
    ctx: D.DistContext
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


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def build_run(config: TrainConfig, ctx: D.DistContext) -> TrainingRun:
    """Build every part of a run (ConfigError/DataError before any step when something is wrong)."""
    config.validate()
    output_dir = Path(D.broadcast_object(str(config.resolve_output_dir()), ctx))
    _on_main(ctx, check_output_dir, output_dir, config.resume_from_checkpoint, config.overwrite)
    if config.use_wandb:
        _on_main(ctx, check_wandb, output_dir, config.overwrite)
    seed_everything(config.seed)
    if ctx.world_size > 1 and config.batch_size % ctx.world_size:
        raise ConfigError(f"--batch_size {config.batch_size} (total) is not divisible by {ctx.world_size} processes")
    batch_size = config.batch_size // ctx.world_size

    source = open_training_source(config.data_root, config.train_data_path, config.use_mxrecord)
    if config.custom_num_class > 0 and config.custom_num_class != source.num_classes:
        raise ConfigError(f"--custom_num_class {config.custom_num_class} does not match the {source.num_classes} "
                          f"classes of {source.describe()} (labels 0..{source.num_classes - 1}); "
                          "leave it out to use the data's count")
    num_classes = source.num_classes
    augmenter = Augmenter(config.crop_augmentation_prob, config.low_res_augmentation_prob,
                          config.photometric_augmentation_prob, swap_color_channel=config.swap_color_channel)
    dataset = FaceTrainDataset(source, augmenter, config.seed, num_classes)
    workers = config.num_workers if config.num_workers >= 0 else default_num_workers(ctx.local_world_size)
    loader, sampler = build_train_loader(dataset, batch_size, workers, ctx.rank, ctx.world_size,
                                         config.seed, pin_memory=ctx.device.type == "cuda")
    batches = batches_per_epoch(sampler.num_samples, batch_size, config.batches_per_epoch_limit)
    val_check_batches = validation_interval_batches(config.effective_val_check_interval, batches)

    model, head = build_model_and_head(config, num_classes)
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
        position, best, losses = resume_state(config.resume_from_checkpoint, config, ctx, model, head, optimizer, scheduler,
                                      scaler, batches)
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
    if config.overwrite and ctx.is_main:  # only now that everything else was accepted
        cleared = clear_run_files(output_dir)
        if cleared:
            print(f"--overwrite: deleted the previous run's {', '.join(cleared)} in {output_dir}")
    return TrainingRun(config, ctx, output_dir, dataset, loader, sampler, batch_size, batches, steps_per_epoch,
                       num_classes, model, head, precision, optimizer, scheduler, scaler, net, ddp_net, val_sets,
                       val_check_batches, _metric_logger(config, output_dir, ctx.is_main), position, best,
                       losses)


def _metric_logger(config: TrainConfig, output_dir: Path, enabled: bool) -> MetricLogger:
    return MetricLogger(output_dir, enabled=enabled, wandb_project=config.wandb_project if config.use_wandb else None,
                        config=config.to_dict())


def _on_main(ctx: D.DistContext, check, *args) -> None:
    """Run a check on rank 0 only (e.g. of the file system, which other ranks may see later) and raise
    its ConfigError on every rank."""
    problem = None
    if ctx.is_main:
        try:
            check(*args)
        except ConfigError as exc:
            problem = str(exc)
    problem = D.broadcast_object(problem, ctx)
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


def resume_state(path: str, config: TrainConfig, ctx: D.DistContext, model: nn.Module, head: nn.Module,
                 optimizer: torch.optim.Optimizer, scheduler: torch.optim.lr_scheduler.LRScheduler,
                 scaler: torch.amp.GradScaler, batches: int) -> tuple[Position, BestResult, LossTotals]:
    """Load a checkpoint's weights, optimizer, schedule, scaler and RNG streams; its position, best result
    and loss totals.
    Only rank 0 reads the file (its path is rank 0's) and hands the state to the others, so nodes need
    no shared filesystem; a bad checkpoint is the same ConfigError on every rank."""
    state = _load_on_rank0(path, model.arch, config.head, head.class_num, ctx)
    model.load_state_dict(state.model_state, strict=True)
    if isinstance(head, PartialFC):  # this rank's columns, whatever world size saved them
        pfc_state.resume_head(path, state.head_state, state.extra, head, optimizer)
    elif "partial_fc" in state.extra:
        raise ConfigError(f"{path}: holds a Partial FC head (shards in {pfc_state.shard_dir(path)}): resume with "
                          "--partial_fc, or write a full-head checkpoint with `facetrain consolidate`")
    else:
        head.load_state_dict(state.head_state, strict=True)
        optimizer.load_state_dict(state.extra["optimizer_states"][0])
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


def _load_on_rank0(path: str, arch: str, head_name: str, num_classes: int, ctx: D.DistContext) -> TrainingState:
    loaded: TrainingState | FacetrainError | None = None
    if ctx.is_main:
        try:
            loaded = load_training_state(path, arch, head_name, num_classes)
        except FacetrainError as exc:
            loaded = exc
    loaded = D.broadcast_object(loaded, ctx)
    if isinstance(loaded, FacetrainError):
        raise loaded
    return loaded


def load_scaler_state(scaler: torch.amp.GradScaler, saved: dict, path: str) -> None:
    """A checkpoint trained without loss scaling (bf16/fp32) has an empty scaler state: fp16
    (--use_16bit) then starts with a fresh scale instead of failing."""
    if saved:
        scaler.load_state_dict(saved)
    elif scaler.is_enabled():
        warnings.warn(f"{path}: trained without fp16 loss scaling; the loss scale starts afresh", stacklevel=3)


def save_run(run: TrainingRun, path: Path) -> None:
    """Collective: every rank hands its RNG state to rank 0, which writes the file. With Partial FC
    every rank first writes its shard of the centres, which the main file then names."""
    sharded = isinstance(run.head, PartialFC)
    if sharded:
        own_shard = pfc_state.save_shard(path, run.head, run.optimizer, run.position.global_step)
    mine = capture_rng(run.ctx.device)
    rngs = [mine]
    if run.ctx.enabled:  # also the point by which every shard is on disk
        rngs = [None] * run.ctx.world_size
        torch.distributed.all_gather_object(rngs, mine)
    if run.ctx.is_main:
        head, more = run.head, {}
        if sharded:
            names = [pfc_state.shard_name(s, run.position.global_step) for s in all_shards(run.num_classes,
                                                                                          run.ctx.world_size)]
            optimizer_state, entry = pfc_state.main_file_entries(run.head, run.optimizer, names)
            head, more = MarginState(run.head), {"optimizer_state": optimizer_state, "partial_fc": entry}
        save_training_state(path, run.model, head, run.optimizer, run.scheduler, run.scaler, run.position,
                            run.best, run.config.to_dict(), rngs, run.ctx.world_size,
                            loss_totals=asdict(run.losses), **more)
    D.barrier(run.ctx)
    if sharded:
        pfc_state.remove_stale_shards(path, run.head.shard, keep=own_shard)


def copy_checkpoint(run: TrainingRun, src: Path, destinations: list[Path]) -> None:
    """Collective: `src` copied to every destination atomically (with Partial FC, each rank's shard
    first: the copied main file names them)."""
    sharded = isinstance(run.head, PartialFC)
    own_shard = pfc_state.shard_name(run.head.shard, run.position.global_step) if sharded else ""
    for dst in destinations if sharded else []:
        pfc_state.link_shard(src, dst, own_shard)
    D.barrier(run.ctx)
    if run.ctx.is_main:
        for dst in destinations:
            with atomic_path(dst) as tmp:
                shutil.copyfile(src, tmp)
    D.barrier(run.ctx)
    for dst in destinations if sharded else []:
        pfc_state.remove_stale_shards(dst, run.head.shard, keep=own_shard)
