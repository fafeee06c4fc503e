"""The training loop (AdaFace recipe): epochs of SGD steps with gradient accumulation, mixed
precision, DDP, non-finite-loss skipping, validation per epoch, checkpoints and exact resume.

`train(config) -> TrainResult` runs a whole job in this process (one rank under torchrun): it builds
the run (`facetrain.training.build.build_run`) and steps through it with a `Trainer`.
"""
from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn
from tqdm import tqdm

from facetrain.checkpoint import load_backbone, load_checkpoint
from facetrain.errors import FacetrainError
from facetrain.eval.verification_report import format_results
from facetrain.image_grid import write_image_grid
from facetrain.io_utils import atomic_write_json
from facetrain.training import distributed
from facetrain.training.batches import FaceTrainDataset
from facetrain.training.buffer_snapshot import BufferSnapshot
from facetrain.training.build import LossTotals, TrainingRun, build_run, copy_checkpoint, release_run, save_run
from facetrain.training.config import TrainConfig
from facetrain.training.failure import FailureWatch
from facetrain.training.optim import step_unless
from facetrain.training.run_folder import BEST, CONFIG, LAST, RESULTS, SAMPLES, epoch_checkpoint, resume_hint
from facetrain.training.run_log import RunLog, log, warn
from facetrain.training.state import BestResult, Position, recorded_best
from facetrain.training.step_window import StepWindow, WindowSummary
from facetrain.training.validation import mean_threshold, validate, validation_logs


class TrainingDiverged(FacetrainError):
    """Too many non-finite losses in a row."""


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C during training; the message says how to resume (still a KeyboardInterrupt for callers)."""


@dataclass
class TrainResult:
    output_dir: Path
    last_checkpoint: Path | None = None
    best_checkpoint: Path | None = None
    best_val_acc: float | None = None
    best_epoch: int = -1
    best_step: int = -1  # optimizer steps done when the best validation ran
    test_metrics: dict[str, dict] = field(default_factory=dict)  # per set (and 'average'), fp32
    global_step: int = 0
    epochs_completed: int = 0
    skipped_steps: int = 0
    # what config.json's requests (precision auto, num_workers -1) resolved to, and on what: the same
    # command gives the same bits only on the same kind of machine and software build
    runtime: dict[str, object] = field(default_factory=dict)


class Trainer:
    """Steps through a built run: epochs of SGD steps, validation, checkpoints, the final test.

    The step never waits for the device: the non-finite check, the skipped update (fused SGD's
    `found_inf`), the buffer rollback and the running loss sums all stay on the device; the host
    reads them at logging steps only (`StepWindow.collect`), where a run of too many skipped steps
    stops training."""

    def __init__(self, run: TrainingRun):
        self.run = run
        self.best_fp32_results: dict[str, dict] | None = None
        self.snapshot = BufferSnapshot(_float_buffers(run.net))
        self.window = StepWindow(run.ctx.device)
        self.nonfinite: torch.Tensor | None = None  # the last step's all-rank non-finite-loss flag
        self.validating = distributed.broadcast_object(bool(run.val_sets), run.ctx)  # the sets live on rank 0
        self.window.load_state_dict(run.losses.window)  # a resumed run continues the logged sums exactly

    # ----------------------------------------------------------------- steps
    def train_step(self, images: torch.Tensor, labels: torch.Tensor, group_size: int, last_in_group: bool) -> torch.Tensor:
        """Forward + backward of one micro-batch (loss / group_size); the optimizer steps at the end of
        the group. Returns the detached micro-batch loss."""
        run = self.run
        images = images.to(run.ctx.device, non_blocking=True)
        labels = labels.to(run.ctx.device, non_blocking=True)
        sync = last_in_group or not run.ctx.enabled
        with contextlib.nullcontext() if sync else run.ddp_net.no_sync():
            loss, _ = run.ddp_net(images, labels)
            run.scaler.scale(loss / group_size).backward()
        return loss.detach()

    def optimizer_step(self, group_loss: torch.Tensor) -> torch.Tensor:
        """Step unless the group's loss is non-finite on any rank, or (fp16) the loss scaler found
        gradients that overflowed on any rank; then the update is skipped and the buffers the forward
        passes touched (batch norm, AdaFace statistics) are restored to what `self.snapshot.take()`
        saw. Returns the all-rank skip flag (a float tensor on the device); `self.nonfinite` is the
        all-rank flag of a non-finite loss alone (what --max_nonfinite_steps counts)."""
        run = self.run
        nonfinite = (~torch.isfinite(group_loss)).float().reshape(1)
        if run.scaler.is_enabled():
            run.scaler.unscale_(run.optimizer)  # records the overflow flag on the device
            found = _found_inf(run.scaler, run.optimizer)
            flags = distributed.all_reduce_max(torch.cat([nonfinite, found.reshape(1)]), run.ctx)
            nonfinite, skipped = flags[:1], flags.amax().reshape(1)
            # every rank skips together (a Partial FC shard can overflow on one rank only); the scaler
            # lowers its scale for a non-finite loss too
            found.copy_(skipped.reshape(found.shape))
            run.scaler.step(run.optimizer)
            run.scaler.update()
        else:
            skipped = nonfinite = distributed.all_reduce_max(nonfinite, run.ctx)
            step_unless(run.optimizer, skipped)
        self.nonfinite = nonfinite
        run.optimizer.zero_grad(set_to_none=True)
        self.snapshot.restore_where(skipped)
        distributed.sync_float_buffers(run.head, run.ctx)
        return skipped

    # ----------------------------------------------------------------- epochs
    def run_epoch(self, epoch: int) -> float:
        run, cfg = self.run, self.run.config
        accum, start = cfg.accumulate_grad_batches, run.position.batch
        run.sampler.set_position(epoch, start * run.batch_size)
        run.dataset.set_epoch(epoch)
        run.net.train()
        bar = tqdm(total=run.batches, initial=start, desc=f"epoch {epoch}", leave=False, dynamic_ncols=True,
                   disable=None if (cfg.progress and run.ctx.is_main) else True)
        totals = run.losses  # restored on resume: the logged means continue exactly
        tic, images_seen = time.perf_counter(), 0
        group_loss = torch.zeros((), device=run.ctx.device)
        self.snapshot.take()
        ready = time.perf_counter()
        for b, (images, labels) in zip(range(start, run.batches), run.loader):
            fetched = time.perf_counter()
            group_start = b - b % accum
            group_size = min(accum, run.batches - group_start)
            last = b - group_start == group_size - 1
            loss = self.train_step(images, labels, group_size, last)
            group_loss += loss / group_size
            images_seen += len(images) * run.ctx.world_size
            run.position.batch = b + 1
            bar.update(1)
            summary = None
            if last:
                lr = run.optimizer.param_groups[0]["lr"]  # the rate this step used
                skipped = self.optimizer_step(group_loss)
                self.window.add_step(group_loss, skipped, self.nonfinite)
                run.scheduler.step()
                run.position.global_step += 1
                group_loss = torch.zeros((), device=run.ctx.device)
                self.snapshot.take()
                if run.position.global_step % cfg.log_every == 0 or b + 1 == run.batches:
                    summary = self.window.collect(run.ctx)  # the host waits for the device here only
            now = time.perf_counter()
            self.window.add_times(fetched - ready, now - fetched)
            if summary is not None:
                summary.data_time, summary.step_time = self.window.take_times()
                self._log_window(summary, epoch, lr, images_seen / (now - tic), bar)
                totals.epoch_loss += summary.loss_sum
                totals.epoch_steps += summary.steps
            if last and b + 1 < run.batches:  # the epoch's last group is end_epoch's
                tic += self.after_step(epoch, group_start, b)  # validation and checkpoints are not training
            ready = time.perf_counter()
        bar.close()
        return totals.epoch_loss / max(totals.epoch_steps, 1)

    def _log_window(self, summary: WindowSummary, epoch: int, lr: float, speed: float, bar: tqdm) -> None:
        """What the host learnt at a logging step: loss, skipped steps (stop when diverging), times."""
        run, step = self.run, self.run.position.global_step
        if summary.skipped:
            warn(f"non-finite loss in {summary.skipped} of the last {summary.skipped + summary.steps} "
                 f"steps (to step {step}): those steps were skipped")
        if summary.longest_skip_run >= run.config.max_nonfinite_steps:
            raise TrainingDiverged(f"{summary.longest_skip_run} non-finite losses in a row by step {step}: "
                                   "lower --lr or use --precision fp32")
        values = {"lr": lr, "img_per_sec": speed, "data_time": summary.data_time, "step_time": summary.step_time}
        if summary.steps:
            values["train_loss"] = summary.loss
        run.logger.log(values, step, epoch)
        bar.set_postfix(loss=f"{summary.loss:.3f}", img_s=f"{speed:.0f}", lr=f"{lr:.2g}",
                        data=f"{summary.data_time:.3f}s", step=f"{summary.step_time:.3f}s")

    def after_step(self, epoch: int, group_start: int, last_batch: int) -> float:
        """Mid-epoch, after the optimizer step of batches group_start..last_batch: the validation that
        falls in them, if any, and a checkpoint after it or every --save_every_steps steps. Returns
        the seconds this took."""
        run, cfg = self.run, self.run.config
        tic = time.perf_counter()
        validate_now = self.validation_due(epoch, group_start, last_batch)
        improved = self.validate(epoch) if validate_now else False
        if validate_now or (cfg.save_every_steps and run.position.global_step % cfg.save_every_steps == 0):
            self.save_checkpoints(improved)
        return time.perf_counter() - tic

    def validation_due(self, epoch: int, group_start: int, last_batch: int) -> bool:
        """Lightning's schedule: in validated epochs, after every `val_check_batches`-th batch; with
        gradient accumulation at the end of the group holding that batch (weights change only there)."""
        run, cfg = self.run, self.run.config
        if not self.validating or not ((epoch + 1) % cfg.val_every == 0 or epoch + 1 == cfg.epochs):
            return False
        return (last_batch + 1) // run.val_check_batches > group_start // run.val_check_batches

    def validate(self, epoch: int) -> bool:
        """Rank 0 validates and logs while the other ranks wait; True (on every rank) when val_acc improved."""
        run, cfg = self.run, self.run.config
        improved = False
        if run.ctx.is_main:
            results = validate(run.model, run.val_sets, run.batch_size, run.precision.name,
                               cfg.channels_last, cfg.progress)
            logs = validation_logs(results)
            step = run.position.global_step
            run.best.history.append({"epoch": epoch, "step": step, "val_acc": logs["val_acc"]})
            improved = logs["val_acc"] > run.best.metric
            if improved:
                run.best.metric, run.best.epoch, run.best.path = logs["val_acc"], epoch, str(run.output_dir / BEST)
                run.best.threshold_l2, run.best.threshold_cosine = mean_threshold(results)
                # already the final test's numbers when validation ran in fp32 (see finish)
                self.best_fp32_results = results if run.precision.name == "fp32" else None
            run.logger.log(logs, step, epoch)
            log.info(f"epoch {epoch} step {step}: val_acc {100 * logs['val_acc']:.2f}% (best "
                     f"{100 * run.best.metric:.2f}% at epoch {run.best.epoch} step {_best_step(run.best)})")
        improved = distributed.broadcast_object(improved, run.ctx)
        run.best = distributed.broadcast_object(run.best, run.ctx)
        return improved

    def save_checkpoints(self, improved: bool, epoch_copy: str | None = None) -> None:
        """Write the run's state to best.ckpt (when improved), epoch=NN.ckpt (when given) and last.ckpt, in
        that order: last.ckpt is what a resume continues from, so it never records a state that the
        others do not hold yet (a kill in between repeats the step, which rewrites them identically)."""
        run = self.run
        names = ([BEST] if improved else []) + ([epoch_copy] if epoch_copy else []) + [LAST]
        run.losses.window = self.window.state_dict()
        save_run(run, run.output_dir / names[0])
        copy_checkpoint(run, run.output_dir / names[0], [run.output_dir / name for name in names[1:]])

    def end_epoch(self, epoch: int, train_loss: float) -> None:
        run, cfg = self.run, self.run.config
        last_group_start = (run.batches - 1) - (run.batches - 1) % cfg.accumulate_grad_batches
        validate_now = self.validation_due(epoch, last_group_start, run.batches - 1)
        run.position = Position(epoch + 1, 0, run.position.global_step)
        run.losses = LossTotals()
        run.logger.log({"train_loss_epoch": train_loss, "epoch": epoch}, run.position.global_step, epoch)
        improved = self.validate(epoch) if validate_now else False
        run.logger.plot()
        self.save_checkpoints(improved, epoch_checkpoint(epoch) if cfg.save_all_models else None)

    def fit(self) -> TrainResult:
        run, cfg = self.run, self.run.config
        run_log = RunLog(run.output_dir, enabled=run.ctx.is_main)
        if run.ctx.is_main:
            cfg.save_json(run.output_dir / CONFIG)
            dropped = run.logger.truncate_after(run.position.global_step)
            if dropped:
                log.info(f"{run.logger.csv_path}: removed {dropped} row(s) logged after step "
                         f"{run.position.global_step}, where this run resumes (they are logged again)")
            log.info(f"{run.dataset.source.describe()}\n{run.num_classes} classes, {run.batches} batches of "
                     f"{run.batch_size} x {run.ctx.world_size} process(es) per epoch, precision {run.precision.name}"
                     f"{', channels_last' if run.precision.channels_last else ''}, device {run.ctx.device}, "
                     f"output {run.output_dir}")
            if run.position.global_step == 0:
                write_training_samples(run.dataset, run.output_dir / SAMPLES)
        if run.position.batch >= run.batches:  # saved at the very end of an epoch
            run.position = Position(run.position.epoch + 1, 0, run.position.global_step)
        if run.position.epoch >= cfg.epochs and run.ctx.is_main:
            log.info(f"{cfg.resume_from_checkpoint}: all {cfg.epochs} epochs are trained; nothing left but the "
                     "final test")
        try:
            for epoch in range(run.position.epoch, cfg.epochs):
                loss = self.run_epoch(epoch)
                self.end_epoch(epoch, loss)
            run.logger.close()
            return self.finish()
        finally:
            run_log.close()

    def finish(self) -> TrainResult:
        """Final test (rank 0) in fp32 with best.ckpt, else last.ckpt; results.json. The best epoch, step
        and accuracy reported are those recorded in the tested best.ckpt itself."""
        run = self.run
        last, best = run.output_dir / LAST, run.output_dir / BEST
        best = best if run.best.epoch >= 0 and best.is_file() else None
        record = run.best
        result = TrainResult(run.output_dir, last_checkpoint=last if last.exists() else None, best_checkpoint=best,
                             global_step=run.position.global_step, epochs_completed=run.position.epoch,
                             skipped_steps=self.window.skipped_total, runtime=runtime_facts(run))
        if run.ctx.is_main:
            if run.val_sets and (best or result.last_checkpoint):
                if best and self.best_fp32_results is not None:  # same weights, same protocol: no second pass
                    result.test_metrics = self.best_fp32_results
                else:
                    checkpoint = load_checkpoint(best or last)
                    if best:  # e.g. resumed: report what the file holds
                        record = recorded_best(checkpoint["facetrain"]["extra"])
                    model, _ = load_backbone(checkpoint, arch=run.model.arch)
                    result.test_metrics = validate(model, run.val_sets, run.batch_size, "fp32", False,
                                                   run.config.progress, device=run.ctx.device)
                log.info(f"final test ({(best or last).name}, fp32):\n{format_results(result.test_metrics)}")
        if best:
            result.best_val_acc, result.best_epoch, result.best_step = record.metric, record.epoch, _best_step(record)
        if run.ctx.is_main:
            atomic_write_json(run.output_dir / RESULTS, _result_json(result))
        distributed.barrier(run.ctx)
        return result


def _result_json(result: TrainResult) -> dict:
    return {"output_dir": str(result.output_dir), "best_checkpoint": str(result.best_checkpoint or ""),
            "last_checkpoint": str(result.last_checkpoint or ""), "best_val_acc": result.best_val_acc,
            "best_epoch": result.best_epoch, "best_step": result.best_step, "global_step": result.global_step,
            "epochs_completed": result.epochs_completed, "skipped_steps": result.skipped_steps,
            "runtime": result.runtime, "test": result.test_metrics}


def runtime_facts(run: TrainingRun) -> dict[str, object]:
    return {"precision": run.precision.name, "channels_last": run.precision.channels_last,
            "device": run.ctx.device.type, "world_size": run.ctx.world_size, "num_workers": run.loader.num_workers,
            "torch": torch.__version__}


def _best_step(best: BestResult) -> int:
    """The step of the validation that set the best (the first one reaching its accuracy)."""
    return next((h.get("step", -1) for h in best.history if h["val_acc"] == best.metric), -1)


def _found_inf(scaler: torch.amp.GradScaler, optimizer: torch.optim.Optimizer) -> torch.Tensor:
    """The device flag `scaler.unscale_(optimizer)` set when a gradient is not finite (what its `step`
    skips on, without reading it on the host when the optimizer is fused). One device per process."""
    (found,) = scaler._per_optimizer_states[id(optimizer)]["found_inf_per_device"].values()
    return found


def _float_buffers(module: nn.Module) -> list[torch.Tensor]:
    return [b for b in module.buffers() if b.is_floating_point()]


def write_training_samples(dataset: FaceTrainDataset, path: Path, count: int = 32) -> None:
    """The first epoch's first augmented samples as a grid, as AdaFace writes at the start of training."""
    dataset.set_epoch(0)
    write_image_grid([dataset[i][0] for i in range(min(count, len(dataset)))], path)


def train(config: TrainConfig) -> TrainResult:
    """Train in this process: alone, or as one rank when torchrun's environment is set."""
    ctx = distributed.init_distributed(config.gpus)
    watch = FailureWatch(ctx).start()
    run = None
    try:
        with distributed.training_backends(ctx.device, config.deterministic):
            run = build_run(config, ctx)
            return Trainer(run).fit()
    except KeyboardInterrupt as exc:  # Ctrl-C: one line that says how to continue
        watch.fail(exc)
        if run is None:
            raise
        raise TrainingInterrupted(f"interrupted; {resume_hint(run.output_dir)}") from None
    except BaseException as exc:  # every rank stops with it, not after the process group's timeout
        watch.fail(exc)
        raise
    finally:
        if run is not None:
            release_run(run)
        watch.stop()
        distributed.cleanup_distributed()
