"""The training step on one page (AdaFace's recipe). `train(config)` builds the run, then for each
epoch, for each batch: forward and loss, backward (gradients accumulated over
`--accumulate_grad_batches` micro-batches), the optimizer step behind the non-finite-step guard, the
schedule; then maybe validate, save and log; at the end the final test.

What the page calls: `build.build_run` (the run's four groups: `data`, `model`, `optim`, `state`),
`step_guard.StepGuard` (the optimizer step that a non-finite loss skips, and the record of steps),
`results` (validation, checkpoints, the final test), `logger.MetricLogger` (metrics, console,
progress). Nothing inside a step waits for the device: the host reads the device at logging steps
only (`optim.collect`). A run resumed from any checkpoint continues exactly as an uninterrupted one:
the sampler, the per-sample augmentation streams and the per-step schedule continue where it stopped.
"""
from __future__ import annotations

import time

import torch

from facetrain.training import distributed
from facetrain.training.build import TrainingRun, build_run, release_run
from facetrain.training.config import TrainConfig
from facetrain.training.failure import watching_failures
from facetrain.training.results import TrainResult, begin, final_test, save_checkpoints, validate, validation_due
from facetrain.training.run_folder import epoch_checkpoint, resume_hint


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C during training; the message says how to resume (still a KeyboardInterrupt for callers)."""


def train(config: TrainConfig) -> TrainResult:
    """Train in this process: alone, or as one rank when torchrun's environment is set."""
    ctx = distributed.init_distributed(config.gpus)
    run = None
    try:
        # an error on any rank ends every rank, each with its one line
        with watching_failures(ctx), distributed.training_backends(ctx.device, config.deterministic):
            run = build_run(config, ctx)
            return fit(run)
    except KeyboardInterrupt:  # Ctrl-C: one line that says how to continue
        if run is None:
            raise
        raise TrainingInterrupted(f"interrupted; {resume_hint(run.output_dir)}") from None
    finally:
        if run is not None:
            release_run(run)
        distributed.cleanup_distributed()


def fit(run: TrainingRun) -> TrainResult:
    """Train a built run from where it stands to its last epoch, then test it."""
    cfg, state = run.config, run.state
    with run.logger.console():
        if state.batch >= run.data.batches:  # saved at the very end of an epoch
            state.epoch, state.batch = state.epoch + 1, 0
        begin(run)  # config.json, metrics.csv, what trains on what, training_samples.jpg
        for epoch in range(state.epoch, cfg.epochs):
            train_loss = run_epoch(run, epoch)
            # the epoch's end: log, maybe validate, plot, save
            last = run.data.batches - 1
            validate_now = validation_due(run, epoch, last - last % cfg.accumulate_grad_batches, last)
            state.epoch, state.batch = epoch + 1, 0
            run.logger.log({"train_loss_epoch": train_loss, "epoch": epoch}, state.global_step, epoch)
            improved = validate(run, epoch) if validate_now else False
            run.logger.plot()
            save_checkpoints(run, improved, epoch_checkpoint(epoch) if cfg.save_all_models else None)
        run.logger.close()
        return final_test(run)


def run_epoch(run: TrainingRun, epoch: int) -> float:
    """One epoch, from the batch the run stands at; returns the epoch's mean training loss."""
    cfg, data, model, optim, state, logger = run.config, run.data, run.model, run.optim, run.state, run.logger
    accumulate = cfg.accumulate_grad_batches
    model.train()
    bar = logger.progress(epoch, data.batches, state.batch)
    tic, images_seen = time.perf_counter(), 0
    group_loss = torch.zeros((), device=data.device)
    optim.begin_group()
    ready = time.perf_counter()
    for b, images, labels in data.epoch(epoch, state.batch):
        fetched = time.perf_counter()
        group_start = b - b % accumulate
        group_size = min(accumulate, data.batches - group_start)
        last = b - group_start == group_size - 1
        # DDP averages the gradients over the ranks in the backward of the group's last micro-batch only
        with model.gradient_sync(last):
            loss, _ = model.parallel(images, labels)  # forward and loss (the head's float32 logits)
            optim.backward(loss / group_size)  # gradients accumulate over the group
        group_loss += loss.detach() / group_size
        images_seen += len(images) * data.processes
        state.batch = b + 1
        bar.update(1)
        summary = None
        if last:
            # no gradient clipping: AdaFace's recipe has none; a non-finite loss skips the step instead
            lr = optim.lr  # the rate this step uses
            optim.step(group_loss)  # skipped (weights and buffers unchanged) when non-finite on any rank
            optim.scheduler.step()  # per optimizer step, so a run resumed mid-epoch gets the same rates
            state.global_step += 1
            group_loss = torch.zeros((), device=data.device)
            optim.begin_group()
            if state.global_step % cfg.log_every == 0 or b + 1 == data.batches:
                summary = optim.collect(state.global_step)  # the host waits for the device here only
        now = time.perf_counter()
        logger.add_times(fetched - ready, now - fetched)
        if summary is not None:
            logger.log_steps(summary, lr, images_seen / (now - tic), state.global_step, epoch, bar)
        if last and b + 1 < data.batches:  # mid-epoch (the last group's are fit's): maybe validate, save
            paused = time.perf_counter()
            validate_now = validation_due(run, epoch, group_start, b)
            improved = validate(run, epoch) if validate_now else False
            if validate_now or (cfg.save_every_steps and state.global_step % cfg.save_every_steps == 0):
                save_checkpoints(run, improved)
            tic += time.perf_counter() - paused  # validation and checkpoints are not training
        ready = time.perf_counter()
    bar.close()
    return optim.end_epoch()
