"""The training loop (AdaFace recipe): epochs of SGD steps with gradient accumulation, mixed
precision, DDP, non-finite-loss skipping, validation per epoch, checkpoints and exact resume.

`train(config) -> TrainResult` runs a whole job in this process (one rank under torchrun).
"""
from __future__ import annotations

import contextlib
import random
import shutil
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from facetrain.checkpoint import load_backbone
from facetrain.data.augment import Augmenter
from facetrain.data.training_source import open_training_source
from facetrain.errors import ConfigError, FacetrainError
from facetrain.eval.verification_report import format_results
from facetrain.io_utils import atomic_path, atomic_write_json
from facetrain.train import distributed as D
from facetrain.train.config import TrainConfig
from facetrain.train.data import FaceTrainDataset, batches_per_epoch, build_train_loader, optimizer_steps_per_epoch
from facetrain.train.logger import MetricLogger
from facetrain.train.module import RecognitionNet, build_model_and_head
from facetrain.train.optim import build_optimizer, build_scheduler
from facetrain.train.precision import Precision, maybe_compile, resolve_precision
from facetrain.train.state import BestResult, Position, capture_rng, load_training_state, restore_rng, save_training_state
from facetrain.train.validation import load_val_sets, validate, validation_logs

LAST, BEST, RESULTS = "last.ckpt", "best.ckpt", "results.json"


class TrainingDiverged(FacetrainError):
    """Too many non-finite losses in a row."""


@dataclass
class TrainResult:
    output_dir: Path
    last_checkpoint: Path | None = None
    best_checkpoint: Path | None = None
    best_val_acc: float | None = None
    best_epoch: int = -1
    test_metrics: dict[str, dict] = field(default_factory=dict)  # per set (and 'average'), fp32
    global_step: int = 0
    epochs_completed: int = 0
    skipped_steps: int = 0


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


class Trainer:
    def __init__(self, config: TrainConfig, ctx: D.DistContext):
        config.validate()
        self.config, self.ctx = config, ctx
        self.output_dir = Path(D.broadcast_object(str(config.resolve_output_dir()), ctx))
        seed_everything(config.seed)
        if ctx.world_size > 1 and config.batch_size % ctx.world_size:
            raise ConfigError(f"--batch_size {config.batch_size} (total) is not divisible by {ctx.world_size} processes")
        self.batch_size = config.batch_size // ctx.world_size

        source = open_training_source(config.data_root, config.train_data_path, config.use_mxrecord)
        self.num_classes = config.custom_num_class if config.custom_num_class > 0 else source.num_classes
        augmenter = Augmenter(config.crop_augmentation_prob, config.low_res_augmentation_prob,
                              config.photometric_augmentation_prob, swap_color_channel=config.swap_color_channel)
        self.dataset = FaceTrainDataset(source, augmenter, config.seed, self.num_classes)
        self.loader, self.sampler = build_train_loader(
            self.dataset, self.batch_size, config.num_workers, ctx.rank, ctx.world_size, config.seed,
            pin_memory=ctx.device.type == "cuda")
        self.batches = batches_per_epoch(self.sampler.num_samples, self.batch_size, config.batches_per_epoch_limit)
        self.steps_per_epoch = optimizer_steps_per_epoch(self.batches, config.accumulate_grad_batches)

        self.model, self.head = build_model_and_head(config, self.num_classes)
        if ctx.enabled and config.sync_bn:
            if ctx.device.type != "cuda":
                raise ConfigError("--sync_bn needs GPUs (torch's SyncBatchNorm does not run on CPU processes)")
            self.model = nn.SyncBatchNorm.convert_sync_batchnorm(self.model)
        self.precision = Precision(resolve_precision(config.precision, ctx.device, config.use_16bit), ctx.device,
                                   config.channels_last)
        self.model = self.precision.prepare_model(self.model.to(ctx.device))
        self.head.to(ctx.device)
        self.optimizer = build_optimizer(self.model, self.head, config.lr, config.momentum, config.weight_decay)
        self.scheduler = build_scheduler(self.optimizer, self.steps_per_epoch, config.lr_milestones, config.lr_gamma,
                                         config.warmup_epochs)
        self.scaler = self.precision.make_scaler()
        self.position, self.best = Position(), BestResult()
        if config.resume_from_checkpoint:
            self._resume(config.resume_from_checkpoint)
        elif ctx.enabled:
            torch.manual_seed(config.seed + ctx.rank)  # independent dropout masks per process

        self.net = RecognitionNet(self.model, self.head, self.precision, maybe_compile(self.model, config.compile))
        self.ddp_net: nn.Module = self.net
        if ctx.enabled:
            ids = [ctx.device.index] if ctx.device.type == "cuda" else None
            self.ddp_net = nn.parallel.DistributedDataParallel(self.net, device_ids=ids)
        self.val_sets = load_val_sets(config.data_root, config.val_data_path) if ctx.is_main else {}
        self.logger = MetricLogger(self.output_dir, enabled=ctx.is_main)
        self.nonfinite_streak = 0
        self.best_fp32_results: dict[str, dict] | None = None
        self.skipped_steps = 0

    # ----------------------------------------------------------------- state
    def _resume(self, path: str) -> None:
        state = load_training_state(path, self.model.arch, self.config.head, self.num_classes)
        self.model.load_state_dict(state.model_state, strict=True)
        self.head.load_state_dict(state.head_state, strict=True)
        self.optimizer.load_state_dict(state.extra["optimizer_states"][0])
        self.scheduler.load_state_dict(state.extra["lr_schedulers"][0])
        self.scaler.load_state_dict(state.extra["scaler"])
        self.position, self.best = state.position, state.best
        if self.position.batch % self.config.accumulate_grad_batches and self.position.batch < self.batches:
            raise ConfigError(f"{path}: saved inside an accumulation group; resume with the same "
                              "--accumulate_grad_batches")
        rngs = state.extra["rng_per_rank"]
        if len(rngs) == self.ctx.world_size:
            restore_rng(rngs[self.ctx.rank])
        else:
            warnings.warn(f"{path}: saved by {len(rngs)} processes, resumed with {self.ctx.world_size}: "
                          "random streams restart from the seed", stacklevel=2)
            torch.manual_seed(self.config.seed + self.ctx.rank + self.position.global_step)

    def save(self, path: Path) -> None:
        """Collective: every rank hands its RNG state to rank 0, which writes the file."""
        rngs = [capture_rng()]
        if self.ctx.enabled:
            rngs = [None] * self.ctx.world_size
            torch.distributed.all_gather_object(rngs, capture_rng())
        if self.ctx.is_main:
            save_training_state(path, self.model, self.head, self.optimizer, self.scheduler, self.scaler,
                                self.position, self.best, self.config.to_dict(), rngs, self.ctx.world_size)
        D.barrier(self.ctx)

    # ----------------------------------------------------------------- steps
    def train_step(self, images: torch.Tensor, labels: torch.Tensor, group_size: int, last_in_group: bool) -> torch.Tensor:
        """Forward + backward of one micro-batch (loss / group_size); the optimizer steps at the end of
        the group. Returns the detached micro-batch loss."""
        images = images.to(self.ctx.device, non_blocking=True)
        labels = labels.to(self.ctx.device, non_blocking=True)
        sync = last_in_group or not self.ctx.enabled
        context = contextlib.nullcontext() if sync else self.ddp_net.no_sync()
        with context:
            loss, _ = self.ddp_net(images, labels)
            self.scaler.scale(loss / group_size).backward()
        return loss.detach()

    def optimizer_step(self, group_loss: torch.Tensor, saved_buffers: list[torch.Tensor]) -> bool:
        """Step unless the group's loss is non-finite on any rank (then restore the buffers the
        forward passes touched, e.g. batch-norm and AdaFace statistics). True when stepped."""
        bad = D.all_reduce_max((~torch.isfinite(group_loss)).float().reshape(1), self.ctx)
        if bad.item() > 0:
            self.optimizer.zero_grad(set_to_none=True)
            for buf, saved in zip(_float_buffers(self.net), saved_buffers):
                buf.copy_(saved)
            self.nonfinite_streak += 1
            self.skipped_steps += 1
            if self.nonfinite_streak >= self.config.max_nonfinite_steps:
                raise TrainingDiverged(f"{self.nonfinite_streak} non-finite losses in a row at step "
                                       f"{self.position.global_step}: lower --lr or use --precision fp32")
            warnings.warn(f"non-finite loss at step {self.position.global_step}: step skipped", stacklevel=2)
            return False
        self.nonfinite_streak = 0
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        D.sync_float_buffers(self.head, self.ctx)
        return True

    # ----------------------------------------------------------------- epochs
    def run_epoch(self, epoch: int) -> float:
        cfg, accum = self.config, self.config.accumulate_grad_batches
        start = self.position.batch
        self.sampler.set_position(epoch, start * self.batch_size)
        self.dataset.set_epoch(epoch)
        self.net.train()
        bar = tqdm(total=self.batches, initial=start, desc=f"epoch {epoch}", leave=False, dynamic_ncols=True,
                   disable=None if (cfg.progress and self.ctx.is_main) else True)
        window_loss, window_n, epoch_loss, epoch_n = 0.0, 0, 0.0, 0
        tic, images_seen = time.perf_counter(), 0
        group_loss, saved = torch.zeros((), device=self.ctx.device), _snapshot(self.net)
        for b, (images, labels) in enumerate(self.loader, start=start):
            if b >= self.batches:
                break
            group_start = b - b % accum
            group_size = min(accum, self.batches - group_start)
            last = b - group_start == group_size - 1
            loss = self.train_step(images, labels, group_size, last)
            group_loss += loss / group_size
            images_seen += len(images) * self.ctx.world_size
            self.position.batch = b + 1
            bar.update(1)
            if not last:
                continue
            lr = self.optimizer.param_groups[0]["lr"]  # the rate this step used
            if self.optimizer_step(group_loss, saved):
                window_loss, window_n = window_loss + group_loss.item(), window_n + 1
            self.scheduler.step()
            self.position.global_step += 1
            group_loss, saved = torch.zeros((), device=self.ctx.device), _snapshot(self.net)
            step = self.position.global_step
            if window_n and (step % cfg.log_every == 0 or b + 1 == self.batches):
                mean = D.all_reduce_mean(torch.tensor([window_loss / window_n]), self.ctx).item()
                speed = images_seen / (time.perf_counter() - tic)
                self.logger.log({"train_loss": mean, "lr": lr, "img_per_sec": speed}, step, epoch)
                bar.set_postfix(loss=f"{mean:.3f}", img_s=f"{speed:.0f}", lr=f"{lr:.2g}")
                epoch_loss, epoch_n = epoch_loss + window_loss, epoch_n + window_n
                window_loss, window_n = 0.0, 0
            if cfg.save_every_steps and step % cfg.save_every_steps == 0 and b + 1 < self.batches:
                self.save(self.output_dir / LAST)
        bar.close()
        return epoch_loss / max(epoch_n, 1)

    def end_epoch(self, epoch: int, train_loss: float) -> None:
        cfg = self.config
        self.position = Position(epoch + 1, 0, self.position.global_step)
        logs = {"train_loss_epoch": train_loss, "epoch": epoch}
        is_last = epoch + 1 == cfg.epochs
        improved = False
        if self.ctx.is_main and self.val_sets and ((epoch + 1) % cfg.val_every == 0 or is_last):
            results = validate(self.model, self.val_sets, self.batch_size, self.precision.name,
                               cfg.channels_last, cfg.progress)
            logs.update(validation_logs(results))
            self.precision.prepare_model(self.model)  # evaluation hands the model back contiguous
            self.best.history.append({"epoch": epoch, "val_acc": logs["val_acc"]})
            improved = logs["val_acc"] > self.best.metric
            if improved:
                self.best.metric, self.best.epoch, self.best.path = logs["val_acc"], epoch, str(self.output_dir / BEST)
                # already the final test's numbers when validation ran in fp32 (see finish)
                self.best_fp32_results = results if self.precision.name == "fp32" else None
            tqdm.write(f"epoch {epoch}: val_acc {100 * logs['val_acc']:.2f}% (best {100 * self.best.metric:.2f}% "
                       f"at epoch {self.best.epoch})")
        self.logger.log(logs, self.position.global_step, epoch)
        self.logger.plot()
        improved = D.broadcast_object(improved, self.ctx)
        self.best = D.broadcast_object(self.best, self.ctx)
        self.save(self.output_dir / LAST)
        if self.ctx.is_main:
            for extra in ([BEST] if improved else []) + ([f"epoch={epoch:02d}.ckpt"] if cfg.save_all_models else []):
                _copy_file(self.output_dir / LAST, self.output_dir / extra)
        D.barrier(self.ctx)

    def fit(self) -> TrainResult:
        cfg = self.config
        if self.ctx.is_main:
            self.output_dir.mkdir(parents=True, exist_ok=True)
            cfg.save_json(self.output_dir / "config.json")
            self.logger.truncate_after(self.position.global_step)
            print(f"{self.dataset.source.describe()}\n{self.num_classes} classes, {self.batches} batches of "
                  f"{self.batch_size} x {self.ctx.world_size} process(es) per epoch, precision {self.precision.name}"
                  f"{', channels_last' if self.precision.channels_last else ''}, device {self.ctx.device}, "
                  f"output {self.output_dir}")
        if self.position.batch >= self.batches:  # saved at the very end of an epoch
            self.position = Position(self.position.epoch + 1, 0, self.position.global_step)
        for epoch in range(self.position.epoch, cfg.epochs):
            loss = self.run_epoch(epoch)
            self.end_epoch(epoch, loss)
        self.logger.close()
        return self.finish()

    def finish(self) -> TrainResult:
        """Final test (rank 0) with the best checkpoint, else the last, in fp32; results.json."""
        last = self.output_dir / LAST
        best = self.output_dir / BEST if (self.output_dir / BEST).exists() else None
        result = TrainResult(self.output_dir, last if last.exists() else None, best,
                             self.best.metric if best else None, self.best.epoch, {},
                             self.position.global_step, self.position.epoch, self.skipped_steps)
        if self.ctx.is_main:
            if self.val_sets and (best or result.last_checkpoint):
                if best and self.best_fp32_results is not None:  # same weights, same protocol: no second pass
                    result.test_metrics = self.best_fp32_results
                else:
                    model, _ = load_backbone(best or last, arch=self.model.arch)
                    result.test_metrics = validate(model, self.val_sets, self.batch_size, "fp32", False,
                                                   self.config.progress)
                print(f"final test ({(best or last).name}, fp32):\n{format_results(result.test_metrics)}")
            atomic_write_json(self.output_dir / RESULTS, _result_json(result))
        D.barrier(self.ctx)
        return result


def _result_json(result: TrainResult) -> dict:
    return {"output_dir": str(result.output_dir), "best_checkpoint": str(result.best_checkpoint or ""),
            "last_checkpoint": str(result.last_checkpoint or ""), "best_val_acc": result.best_val_acc,
            "best_epoch": result.best_epoch, "global_step": result.global_step,
            "epochs_completed": result.epochs_completed, "skipped_steps": result.skipped_steps,
            "test": result.test_metrics}


def _float_buffers(module: nn.Module) -> list[torch.Tensor]:
    return [b for b in module.buffers() if b.is_floating_point()]


def _snapshot(module: nn.Module) -> list[torch.Tensor]:
    return [b.detach().clone() for b in _float_buffers(module)]


def _copy_file(src: Path, dst: Path) -> None:
    with atomic_path(dst) as tmp:
        shutil.copyfile(src, tmp)


def train(config: TrainConfig) -> TrainResult:
    """Train in this process: alone, or as one rank when torchrun's environment is set."""
    ctx = D.init_distributed(config.gpus)
    try:
        return Trainer(config, ctx).fit()
    finally:
        D.cleanup_distributed()
