"""Every training flag as one dataclass: AdaFace's `main.py`/`config.py` names and meanings, plus ours.

Differences from AdaFace, on purpose:
- `--head adaface` defaults to the paper's m=0.4, h=0.333 (AdaFace's CLI defaults m=0.5, h=0.0
  silently make it a CosFace); `--m/--h/--s/--t_alpha` left out mean "the head's default".
- `--weight_decay` really applies (AdaFace hard-coded 5e-4, which stays the default).
- `--output_dir DIR` is used as given; without it the run goes to AdaFace's
  `experiments/<prefix>_<MM-DD>_<n>` (first unused n), and `--resume_from_checkpoint` without
  `--output_dir` continues in the checkpoint's folder (as AdaFace does).
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from facetrain.errors import ConfigError
from facetrain.io_utils import atomic_write_json

PRECISIONS = ("auto", "fp32", "fp16", "bf16")
HEADS = ("adaface", "arcface", "cosface")
TEST_RUN_BATCHES = 50  # AdaFace's --test_run: limit_train_batches=50


@dataclass
class TrainConfig:
    # data
    data_root: str = ""
    train_data_path: str = "faces_emore/imgs"
    val_data_path: str = "faces_emore"
    use_mxrecord: bool = False
    custom_num_class: int = -1
    swap_color_channel: bool = False
    low_res_augmentation_prob: float = 0.0
    crop_augmentation_prob: float = 0.0
    photometric_augmentation_prob: float = 0.0
    num_workers: int = 16
    # model and head
    arch: str = "ir_18"
    head: str = "adaface"
    m: float | None = None
    h: float | None = None
    s: float | None = None
    t_alpha: float | None = None
    # optimisation
    epochs: int = 24
    batch_size: int = 256  # total over all processes (AdaFace divides it by the number of GPUs)
    lr: float = 0.1
    lr_milestones: list[int] = field(default_factory=lambda: [8, 12, 14])
    lr_gamma: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 5e-4
    warmup_epochs: float = 0.0
    accumulate_grad_batches: int = 1
    seed: int = 42
    # hardware
    gpus: int = 1
    use_16bit: bool = False
    precision: str = "auto"
    channels_last: bool = True
    compile: bool = False
    sync_bn: bool = False
    # run control
    resume_from_checkpoint: str = ""
    start_from_model_statedict: str = ""
    evaluate: bool = False
    output_dir: str = ""
    prefix: str = "default"
    save_all_models: bool = False
    save_every_steps: int = 0
    val_every: int = 1
    log_every: int = 20
    limit_train_batches: int = 0
    test_run: bool = False
    max_nonfinite_steps: int = 5
    progress: bool = True

    @property
    def batches_per_epoch_limit(self) -> int:
        """0 = the whole epoch."""
        return TEST_RUN_BATCHES if self.test_run and not self.limit_train_batches else self.limit_train_batches

    def validate(self) -> None:
        if self.precision not in PRECISIONS:
            raise ConfigError(f"--precision must be one of {PRECISIONS}, got {self.precision!r}")
        if self.use_16bit and self.precision in ("fp32", "bf16"):
            raise ConfigError(f"--use_16bit (fp16) contradicts --precision {self.precision}")
        if self.head not in HEADS:
            raise ConfigError(f"--head must be one of {HEADS}, got {self.head!r}")
        for name in ("epochs", "batch_size", "accumulate_grad_batches", "val_every"):
            if getattr(self, name) < 1:
                raise ConfigError(f"--{name} must be >= 1, got {getattr(self, name)}")
        for name in ("num_workers", "save_every_steps", "limit_train_batches", "warmup_epochs", "gpus",
                     "weight_decay", "lr"):
            if getattr(self, name) < 0:
                raise ConfigError(f"--{name} must be >= 0, got {getattr(self, name)}")
        for name in ("low_res_augmentation_prob", "crop_augmentation_prob", "photometric_augmentation_prob"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ConfigError(f"--{name} must be in [0, 1], got {getattr(self, name)}")
        if sorted(self.lr_milestones) != list(self.lr_milestones):
            raise ConfigError(f"--lr_milestones must be increasing, got {self.lr_milestones}")
        if self.evaluate and not self.start_from_model_statedict:
            raise ConfigError("--evaluate needs --start_from_model_statedict CHECKPOINT")
        if self.resume_from_checkpoint and not self.resume_from_checkpoint.endswith(".ckpt"):
            raise ConfigError(f"--resume_from_checkpoint expects a .ckpt file, got {self.resume_from_checkpoint}")
        if self.resume_from_checkpoint and not Path(self.resume_from_checkpoint).is_file():
            raise ConfigError(f"{self.resume_from_checkpoint}: checkpoint not found")

    def resolve_output_dir(self, now: float | None = None) -> Path:
        """The run folder (see module docstring). Deterministic given the file system."""
        if self.output_dir:
            return Path(self.output_dir)
        if self.resume_from_checkpoint:
            return Path(self.resume_from_checkpoint).resolve().parent
        stamp = time.strftime("%m-%d", time.gmtime(now))
        n = 0
        while (Path("experiments") / f"{self.prefix}_{stamp}_{n}").exists():
            n += 1
        return Path("experiments") / f"{self.prefix}_{stamp}_{n}"

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def save_json(self, path: str | os.PathLike) -> None:
        atomic_write_json(path, self.to_dict())

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "TrainConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in known})


def parse_milestones(text: str) -> list[int]:
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a comma list of epochs like 12,20,24, got {text!r}") from None


def add_train_arguments(parser: argparse.ArgumentParser) -> None:
    d = TrainConfig()
    g = parser.add_argument_group("data (AdaFace)")
    g.add_argument("--data_root", default=d.data_root, help="training/validation paths are relative to it")
    g.add_argument("--train_data_path", default=d.train_data_path,
                   help="image folder (<...>/imgs), RecordIO folder (with --use_mxrecord) or training memfile")
    g.add_argument("--val_data_path", default=d.val_data_path, help="folder with the .bin files or their memfiles")
    g.add_argument("--use_mxrecord", action="store_true", help="read train.rec/train.idx")
    g.add_argument("--custom_num_class", type=int, default=d.custom_num_class,
                   help="number of identities (default: counted from the data)")
    g.add_argument("--swap_color_channel", action="store_true", help="reverse the channel order of every training image (for data stored RGB; AdaFace's flag)")
    g.add_argument("--low_res_augmentation_prob", type=float, default=d.low_res_augmentation_prob)
    g.add_argument("--crop_augmentation_prob", type=float, default=d.crop_augmentation_prob)
    g.add_argument("--photometric_augmentation_prob", type=float, default=d.photometric_augmentation_prob)
    g.add_argument("--num_workers", type=int, default=min(d.num_workers, os.cpu_count() or 1),
                   help="data-loader processes per training process (default: min(16, CPUs))")
    g = parser.add_argument_group("model and head (AdaFace)")
    g.add_argument("--arch", default=d.arch, help="backbone: ir_18, ir_50, ir_101, ir_se_50, mobilefacenet, ...")
    g.add_argument("--head", default=d.head, choices=HEADS)
    g.add_argument("--m", type=float, default=None, help="margin (default: the head's, adaface 0.4)")
    g.add_argument("--h", type=float, default=None, help="AdaFace h (default 0.333)")
    g.add_argument("--s", type=float, default=None, help="logit scale (default 64)")
    g.add_argument("--t_alpha", type=float, default=None, help="AdaFace EMA rate of the norm statistics (0.01)")
    g = parser.add_argument_group("optimisation (AdaFace)")
    g.add_argument("--epochs", type=int, default=d.epochs)
    g.add_argument("--batch_size", type=int, default=d.batch_size, help="total batch over all processes")
    g.add_argument("--lr", type=float, default=d.lr)
    g.add_argument("--lr_milestones", type=parse_milestones, default=d.lr_milestones, help="e.g. 12,20,24")
    g.add_argument("--lr_gamma", type=float, default=d.lr_gamma)
    g.add_argument("--momentum", type=float, default=d.momentum)
    g.add_argument("--weight_decay", type=float, default=d.weight_decay, help="not applied to batch-norm parameters")
    g.add_argument("--accumulate_grad_batches", type=int, default=d.accumulate_grad_batches)
    g.add_argument("--seed", type=int, default=d.seed)
    g.add_argument("--gpus", type=int, default=d.gpus,
                   help="GPUs to use (0 = CPU); >1 starts one process per GPU unless run under torchrun")
    g.add_argument("--use_16bit", action="store_true", help="fp16 mixed precision with loss scaling on GPUs (on a CPU: as --precision auto)")
    g = parser.add_argument_group("run control (AdaFace)")
    g.add_argument("--resume_from_checkpoint", default="", help="continue a run exactly from its .ckpt")
    g.add_argument("--start_from_model_statedict", default="", help="initialise the backbone from a .ckpt")
    g.add_argument("--evaluate", action="store_true", help="only evaluate --start_from_model_statedict")
    g.add_argument("--output_dir", default="", help="run folder (default: experiments/<prefix>_<MM-DD>_<n>)")
    g.add_argument("--prefix", default=d.prefix)
    g.add_argument("--save_all_models", action="store_true", help="also keep epoch=NN.ckpt for every epoch")
    g.add_argument("--test_run", action="store_true", help=f"{TEST_RUN_BATCHES} batches per epoch")
    # accepted so that scripts written for AdaFace run unchanged
    g.add_argument("--distributed_backend", default="ddp", choices=["ddp"],
                   help="AdaFace's flag; DistributedDataParallel is the only backend")
    g.add_argument("--use_wandb", action="store_true",
                   help="AdaFace's flag; not supported: values go to metrics.csv (and TensorBoard when installed)")
    g = parser.add_argument_group("facetrain additions")
    g.add_argument("--precision", default=d.precision, choices=PRECISIONS,
                   help="auto: bf16 on GPUs that have it and on CPUs with AMX, else fp32 (fp16 with --use_16bit)")
    g.add_argument("--channels_last", dest="channels_last", action="store_true", default=d.channels_last,
                   help="NHWC memory layout (default on)")
    g.add_argument("--no_channels_last", dest="channels_last", action="store_false")
    g.add_argument("--compile", action="store_true", help="torch.compile the backbone")
    g.add_argument("--sync_bn", action="store_true", help="SyncBatchNorm across processes (DDP)")
    g.add_argument("--warmup_epochs", type=float, default=d.warmup_epochs, help="linear LR warm-up length")
    g.add_argument("--val_every", type=int, default=d.val_every, help="validate every N epochs (and the last)")
    g.add_argument("--save_every_steps", type=int, default=d.save_every_steps,
                   help="also write last.ckpt every N optimizer steps (0 = per epoch only)")
    g.add_argument("--log_every", type=int, default=d.log_every, help="log training values every N steps")
    g.add_argument("--limit_train_batches", type=int, default=d.limit_train_batches,
                   help="batches per epoch (0 = all)")
    g.add_argument("--max_nonfinite_steps", type=int, default=d.max_nonfinite_steps,
                   help="stop after this many non-finite losses in a row (each one skips its step)")
    g.add_argument("--no_progress", dest="progress", action="store_false", help="no progress bar")


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    if getattr(args, "use_wandb", False):
        warnings.warn("--use_wandb: Weights & Biases logging is not supported; see metrics.csv and curves.png",
                      stacklevel=2)
    config = TrainConfig.from_dict(vars(args))
    config.validate()
    return config
