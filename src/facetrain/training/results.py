"""What a run leaves besides its weights' steps: the start-of-run files, validation during training
(and the best result it keeps), checkpoints, the final test and results.json. The loop
(`facetrain.training.loop`) calls these between its steps."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

from facetrain.checkpoint import load_backbone, load_checkpoint
from facetrain.eval.verification import evaluate_verification_sets
from facetrain.eval.verification_report import format_results
from facetrain.image_grid import write_image_grid
from facetrain.io_utils import atomic_write_json
from facetrain.training import distributed
from facetrain.training.build import TrainingRun, copy_checkpoint, save_run
from facetrain.training.logger import log
from facetrain.training.model_card import data_facts, write_card_after_training
from facetrain.training.run_folder import BEST, CONFIG, LAST, RESULTS, SAMPLES
from facetrain.training.startup_checks import startup_checks
from facetrain.training.state import BestResult, recorded_best
from facetrain.training.validation import mean_threshold, validation_logs


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


def begin(run: TrainingRun) -> None:
    """Rank 0, before the first step: config.json, metrics.csv cut back to where a resumed run stands,
    what is trained on what, and (in a new run) a grid of the first augmented samples."""
    if not run.ctx.is_main:
        return
    cfg, data, state = run.config, run.data, run.state
    cfg.save_json(run.output_dir / CONFIG)
    dropped = run.logger.truncate_after(state.global_step)
    if dropped:
        log.info(f"{run.logger.csv_path}: removed {dropped} row(s) logged after step {state.global_step}, where "
                 "this run resumes (they are logged again)")
    precision = run.model.precision
    log.info(f"{data.dataset.source.describe()}\n{data.num_classes} classes, {data.batches} batches of "
             f"{data.batch_size} x {run.ctx.world_size} process(es) per epoch, precision {precision.name}"
             f"{', channels_last' if precision.channels_last else ''}, device {run.ctx.device}, "
             f"output {run.output_dir}")
    for note in run.notes:
        log.info(note)
    if state.global_step == 0:  # as AdaFace writes at the start of training
        data.dataset.set_epoch(0)
        write_image_grid([data.dataset[i][0] for i in range(min(32, len(data.dataset)))], run.output_dir / SAMPLES)
    startup_checks(cfg, data.dataset.source, data.val_sets)
    if state.epoch >= cfg.epochs:
        log.info(f"{cfg.resume_from_checkpoint}: all {cfg.epochs} epochs are trained; nothing left but the final test")


def validation_due(run: TrainingRun, epoch: int, group_start: int, last_batch: int) -> bool:
    """Lightning's schedule: in validated epochs, after every `val_check_batches`-th batch; with
    gradient accumulation at the end of the group holding that batch (weights change only there).
    """
    cfg, every = run.config, run.data.val_check_batches
    if not run.data.validating or not ((epoch + 1) % cfg.val_every == 0 or epoch + 1 == cfg.epochs):
        return False
    return (last_batch + 1) // every > group_start // every


def validate(run: TrainingRun, epoch: int) -> bool:
    """Rank 0 validates and logs while the other ranks wait; True (on every rank) when val_acc improved."""
    improved, state = False, run.state
    if run.ctx.is_main:
        results = evaluate_verification_sets(run.model.model, run.data.val_sets, batch_size=run.data.batch_size,
                                             precision=run.model.precision.name,
                                             channels_last=run.config.channels_last, progress=run.config.progress)
        logs = validation_logs(results)
        best, step = state.best, state.global_step
        best.history.append({"epoch": epoch, "step": step, "val_acc": logs["val_acc"]})
        improved = logs["val_acc"] > best.metric
        if improved:
            best.metric, best.epoch, best.path = logs["val_acc"], epoch, str(run.output_dir / BEST)
            best.threshold_l2, best.threshold_cosine = mean_threshold(results)
            # already the final test's numbers when validation ran in fp32 (see final_test)
            state.best_fp32_results = results if run.model.precision.name == "fp32" else None
        run.logger.log(logs, step, epoch)
        log.info(f"epoch {epoch} step {step}: val_acc {100 * logs['val_acc']:.2f}% (best "
                 f"{100 * best.metric:.2f}% at epoch {best.epoch} step {_best_step(best)})")
    improved = distributed.broadcast_object(improved, run.ctx)
    state.best = distributed.broadcast_object(state.best, run.ctx)
    return improved


def save_checkpoints(run: TrainingRun, improved: bool, epoch_copy: str | None = None) -> None:
    """Write the run's state to best.ckpt (when improved), epoch=NN.ckpt (when given) and last.ckpt, in
    that order: last.ckpt is what a resume continues from, so it never records a state that the
    others do not hold yet (a kill in between repeats the step, which rewrites them identically)."""
    names = ([BEST] if improved else []) + ([epoch_copy] if epoch_copy else []) + [LAST]
    save_run(run, run.output_dir / names[0])
    copy_checkpoint(run, run.output_dir / names[0], [run.output_dir / name for name in names[1:]])


def final_test(run: TrainingRun) -> TrainResult:
    """Final test (rank 0) in fp32 with best.ckpt, else last.ckpt; results.json. The best epoch, step
    and accuracy reported are those recorded in the tested best.ckpt itself."""
    state = run.state
    last, best = run.output_dir / LAST, run.output_dir / BEST
    best = best if state.best.epoch >= 0 and best.is_file() else None
    record = state.best
    result = TrainResult(run.output_dir, last_checkpoint=last if last.exists() else None, best_checkpoint=best,
                         global_step=state.global_step, epochs_completed=state.epoch,
                         skipped_steps=run.optim.skipped_total, runtime=runtime_facts(run))
    if run.ctx.is_main:
        if run.data.val_sets and (best or result.last_checkpoint):
            if best and state.best_fp32_results is not None:  # same weights, same protocol: no second pass
                result.test_metrics = state.best_fp32_results
            else:
                checkpoint = load_checkpoint(best or last)
                if best:  # e.g. resumed: report what the file holds
                    record = recorded_best(checkpoint["facetrain"]["extra"])
                model, _ = load_backbone(checkpoint, arch=run.model.model.arch)
                result.test_metrics = evaluate_verification_sets(
                    model, run.data.val_sets, batch_size=run.data.batch_size, device=run.ctx.device,
                    precision="fp32", channels_last=False, progress=run.config.progress)
            log.info(f"final test ({(best or last).name}, fp32):\n{format_results(result.test_metrics)}")
    if best:
        result.best_val_acc, result.best_epoch, result.best_step = record.metric, record.epoch, _best_step(record)
    if run.ctx.is_main:
        atomic_write_json(run.output_dir / RESULTS, _result_json(result) | {
            "data": data_facts(run.config, run.data.dataset.source, run.data.fingerprint)})
        write_card_after_training(run.output_dir)
    distributed.barrier(run.ctx)
    return result


def _result_json(result: TrainResult) -> dict:
    return {"output_dir": str(result.output_dir), "best_checkpoint": str(result.best_checkpoint or ""),
            "last_checkpoint": str(result.last_checkpoint or ""), "best_val_acc": result.best_val_acc,
            "best_epoch": result.best_epoch, "best_step": result.best_step, "global_step": result.global_step,
            "epochs_completed": result.epochs_completed, "skipped_steps": result.skipped_steps,
            "runtime": result.runtime, "test": result.test_metrics}


def runtime_facts(run: TrainingRun) -> dict[str, object]:
    return {"precision": run.model.precision.name, "channels_last": run.model.precision.channels_last,
            "device": run.ctx.device.type, "world_size": run.ctx.world_size,
            "num_workers": run.data.loader.num_workers, "torch": torch.__version__}


def _best_step(best: BestResult) -> int:
    """The step of the validation that set the best (the first one reaching its accuracy)."""
    return next((h.get("step", -1) for h in best.history if h["val_acc"] == best.metric), -1)
