"""Entry point behind `facetrain train` / `python main.py`: evaluate-only mode, a single process, one
rank under torchrun, or one process per GPU for `--gpus N` started here (AdaFace's ddp)."""
from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import torch

from facetrain.data.guards.paths import resolve_data_path
from facetrain.errors import ConfigError, FacetrainError, one_line
from facetrain.eval.verification import evaluate_checkpoint
from facetrain.eval.verification_report import format_results, write_json
from facetrain.training import distributed
from facetrain.training.config import TrainConfig, load_config_file
from facetrain.training.flag_ranges import check_types
from facetrain.training.loop import TrainingInterrupted, TrainResult, train
from facetrain.training.run_folder import resume_hint

EVALUATION = "evaluation.json"


def evaluate_only(config: TrainConfig) -> dict[str, dict]:
    """`--evaluate --start_from_model_statedict CKPT`: the verification sets under --val_data_path, fp32,
    printed as a table and written to <output_dir>/evaluation.json."""
    root = resolve_data_path(config.data_root, config.val_data_path, "validation data (--val_data_path)")
    results = evaluate_checkpoint(config.start_from_model_statedict, root, arch=config.arch,
                                  device="cuda" if config.gpus > 0 and torch.cuda.is_available() else "cpu",
                                  progress=config.progress)
    print(f"{config.start_from_model_statedict}:\n{format_results(results)}")
    out = config.resolve_output_dir()
    out.mkdir(parents=True, exist_ok=True)
    write_json(results, out / EVALUATION, {"ckpt": config.start_from_model_statedict, "val_data_path": str(root),
                                           "precision": "fp32"})
    return results


def _spawned_rank(config: TrainConfig) -> None:
    try:
        train(config)
    except (FacetrainError, OSError) as exc:  # one line, as the CLI prints it, not a traceback
        print(f"error: {one_line(exc)}", file=sys.stderr, flush=True)
        sys.exit(1)


def train_from(config: TrainConfig | dict[str, Any] | str | os.PathLike) -> TrainResult | None:
    """`facetrain.train(config)`: a `TrainConfig`, a dict of its fields, or a config file (JSON/YAML;
    see `--config`), checked as strictly as the flags, then `launch_training`."""
    if isinstance(config, (str, os.PathLike)):
        path = config
        try:
            config = TrainConfig.from_dict(load_config_file(path), strict=True)
            check_types(config)
        except ConfigError as exc:
            message = str(exc)
            raise ConfigError(message if message.startswith(f"{path}:") else f"{path}: {message}") from None
    elif isinstance(config, dict):
        config = TrainConfig.from_dict(config, strict=True)
    return launch_training(config)


def launch_training(config: TrainConfig) -> TrainResult | None:
    """Dispatch; returns the TrainResult in the process that trained (None after a local spawn,
    whose rank 0 wrote results.json)."""
    config.validate()
    if config.evaluate:
        evaluate_only(config)
        return None
    if config.gpus > 1 and not distributed.launched_by_torchrun():
        available = torch.cuda.device_count()
        if available < config.gpus:
            raise ConfigError(f"--gpus {config.gpus} but {available} CUDA device(s) visible; for CPU processes "
                              "use torchrun --nproc_per_node N ... --gpus 0")
        config.output_dir = str(config.resolve_output_dir())  # every rank must agree before they start
        try:
            distributed.spawn(_spawned_rank, config.gpus, (config,))
        except KeyboardInterrupt:
            raise TrainingInterrupted(f"interrupted; {resume_hint(Path(config.output_dir))}") from None
        except torch.multiprocessing.ProcessExitedException as exc:
            raise FacetrainError(f"training process {exc.error_index} of {config.gpus} stopped with exit code "
                                 f"{exc.exit_code}: its error is above") from None
        return None
    return train(config)
