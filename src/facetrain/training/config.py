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
import importlib.util
import json
import os
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from facetrain.errors import ConfigError
from facetrain.precision import TRAIN_PRECISIONS
from facetrain.io_utils import atomic_write_json
from facetrain.training.flag_ranges import check_flag_ranges, check_types

HEADS = ("adaface", "arcface", "cosface")
TEST_RUN_BATCHES = 50  # AdaFace's --test_run: limit_train_batches=50
# how one start of a run was asked for, not what the run is: never saved (see TrainConfig.to_dict)
HOW_STARTED = ("overwrite", "resume_from_checkpoint", "resume_onto_other_data")


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
    num_workers: int = -1  # per process; -1: this node's CPUs / its training processes, at most 16
    # model and head
    arch: str = "ir_18"
    head: str = "adaface"
    m: float | None = None
    h: float | None = None
    s: float | None = None
    t_alpha: float | None = None
    partial_fc: bool = False
    sample_rate: float = 1.0
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
    deterministic: bool = False
    # run control
    resume_from_checkpoint: str = ""
    resume_onto_other_data: bool = False
    start_from_model_statedict: str = ""
    evaluate: bool = False
    output_dir: str = ""
    prefix: str = "default"
    save_all_models: bool = False
    save_every_steps: int = 0
    val_every: int = 1
    val_check_interval: float | int | None = None  # None: AdaFace's 0.1 when epochs <= 4, else 1.0
    overwrite: bool = False
    log_every: int = 20
    limit_train_batches: int = 0
    test_run: bool = False
    max_nonfinite_steps: int = 5
    progress: bool = True
    # experiment tracking (AdaFace's --use_wandb: project adaface_face_recognition, run = output folder name)
    use_wandb: bool = False
    wandb_project: str = "adaface_face_recognition"

    @property
    def batches_per_epoch_limit(self) -> int:
        """0 = the whole epoch."""
        return TEST_RUN_BATCHES if self.test_run and not self.limit_train_batches else self.limit_train_batches

    def validate(self) -> None:
        check_flag_ranges(self)  # types first: a --config file can hold any JSON/YAML value
        if self.precision not in TRAIN_PRECISIONS:
            raise ConfigError(f"--precision must be one of {TRAIN_PRECISIONS}, got {self.precision!r}")
        if self.use_16bit and self.precision in ("fp32", "bf16"):
            raise ConfigError(f"--use_16bit (fp16) contradicts --precision {self.precision}")
        if self.head not in HEADS:
            raise ConfigError(f"--head must be one of {HEADS}, got {self.head!r}")
        if not 0.0 < self.sample_rate <= 1.0:
            raise ConfigError(f"--sample_rate must be in (0, 1], got {self.sample_rate}")
        if self.sample_rate < 1.0 and not self.partial_fc:
            raise ConfigError(f"--sample_rate {self.sample_rate} needs --partial_fc")
        if sorted(self.lr_milestones) != list(self.lr_milestones):
            raise ConfigError(f"--lr_milestones must be increasing, got {self.lr_milestones}")
        if self.evaluate and not self.start_from_model_statedict:
            raise ConfigError("--evaluate needs --start_from_model_statedict CHECKPOINT")
        if self.resume_from_checkpoint and not self.resume_from_checkpoint.endswith(".ckpt"):
            raise ConfigError(f"--resume_from_checkpoint expects a .ckpt file, got {self.resume_from_checkpoint}")
        if self.resume_onto_other_data and not self.resume_from_checkpoint:
            raise ConfigError("--resume_onto_other_data goes with --resume_from_checkpoint")
        if self.overwrite and self.resume_from_checkpoint:
            raise ConfigError("--overwrite deletes the run that --resume_from_checkpoint continues: give one of them")

    @property
    def effective_val_check_interval(self) -> float | int:
        """AdaFace's schedule unless given: 10 validations per epoch for runs of <= 4 epochs, else one."""
        if self.val_check_interval is not None:
            return self.val_check_interval
        return 0.1 if self.epochs <= 4 else 1.0

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
        """The run's settings (config.json, checkpoints): what it trains, not how it was last started.
        Not `overwrite` (it deletes a folder's previous run once; a replay must never do that again), nor
        `resume_from_checkpoint` / `resume_onto_other_data` (a replay into a new folder trains from the start)."""
        values = dataclasses.asdict(self)
        for name in HOW_STARTED:
            del values[name]
        return values

    def save_json(self, path: str | os.PathLike) -> None:
        atomic_write_json(path, self.to_dict())

    @classmethod
    def from_dict(cls, values: dict[str, Any], strict: bool = False) -> "TrainConfig":
        """A config from field values; `strict` makes an unknown name an error instead of ignoring it."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if strict and unknown:
            raise ConfigError(f"unknown option{'s' if len(unknown) > 1 else ''} {', '.join(map(repr, unknown))}")
        return cls(**{k: v for k, v in values.items() if k in known})


def parse_milestones(text: str) -> list[int]:
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a comma list of epochs like 12,20,24, got {text!r}") from None


def parse_val_check_interval(text: str) -> float | int:
    """Lightning's two kinds: '0.25' (or '1.0') is a fraction of the epoch, '500' a number of batches."""
    try:
        return int(text) if text.strip().lstrip("+-").isdigit() else float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a fraction like 0.25 or a number of batches like 500, "
                                         f"got {text!r}") from None


def add_train_arguments(parser: argparse.ArgumentParser) -> None:
    """Every training flag. Defaults are not put into the parsed namespace (argparse.SUPPRESS): a flag
    is there only when given, so `config_from_args` can layer defaults < --config file < flags."""
    d = TrainConfig()
    parser.argument_default = argparse.SUPPRESS

    def add(group: argparse._ArgumentGroup, flag: str, help: str = "", **kw: Any) -> None:
        dest = kw.get("dest", flag.lstrip("-"))
        default = getattr(d, dest, None)
        if kw.get("action") not in ("store_true", "store_false") and default not in (None, ""):
            help = f"{help} (default: {default})" if help else f"default: {default}"
        group.add_argument(flag, help=help or None, **kw)

    # `facetrain train --help` shows the flags by purpose; every AdaFace flag keeps its name and meaning.
    g = parser.add_argument_group("data")
    add(g, "--data_root", "training/validation paths are relative to it")
    add(g, "--train_data_path", "image folder (<...>/imgs), RecordIO folder (with --use_mxrecord) or training memfile")
    add(g, "--val_data_path", "folder with the .bin files or their memfiles")
    add(g, "--use_mxrecord", "read train.rec/train.idx", action="store_true")
    add(g, "--custom_num_class", "number of identities (default: counted from the data)", type=int)
    add(g, "--swap_color_channel", "reverse the channel order of every training image (for data stored RGB; "
                                   "AdaFace's flag)", action="store_true")
    add(g, "--low_res_augmentation_prob", type=float)
    add(g, "--crop_augmentation_prob", type=float)
    add(g, "--photometric_augmentation_prob", type=float)
    add(g, "--num_workers", "data-loader processes per training process (-1: this node's CPUs divided by its "
                            "training processes, at most 16)", type=int)
    add(g, "--limit_train_batches", "batches per epoch (0 = all)", type=int)
    g = parser.add_argument_group("model")
    add(g, "--arch", "backbone: ir_18, ir_50, ir_101, ir_se_50, mobilefacenet, ...")
    add(g, "--head", choices=HEADS)
    add(g, "--m", "margin (default: the head's, adaface 0.4)", type=float)
    add(g, "--h", "AdaFace h (default 0.333)", type=float)
    add(g, "--s", "logit scale (default 64)", type=float)
    add(g, "--t_alpha", "AdaFace EMA rate of the norm statistics (default 0.01)", type=float)
    add(g, "--start_from_model_statedict", "initialise the backbone from a .ckpt")
    add(g, "--channels_last", "NHWC memory layout (default on)", action="store_true")
    add(g, "--no_channels_last", dest="channels_last", action="store_false")
    add(g, "--compile", "torch.compile the backbone", action="store_true")
    add(g, "--deterministic", "deterministic algorithms and no cuDNN autotuning: the same command on the same "
                              "kind of machine, software build and number of processes gives the same weights "
                              "(slower on GPUs)", action="store_true")
    g = parser.add_argument_group("optimisation")
    add(g, "--epochs", type=int)
    add(g, "--batch_size", "total batch over all processes", type=int)
    add(g, "--lr", type=float)
    add(g, "--lr_milestones", "epochs, e.g. 12,20,24", type=parse_milestones)
    add(g, "--lr_gamma", type=float)
    add(g, "--momentum", type=float)
    add(g, "--weight_decay", "not applied to batch-norm parameters", type=float)
    add(g, "--warmup_epochs", "linear LR warm-up length", type=float)
    add(g, "--accumulate_grad_batches", type=int)
    add(g, "--seed", type=int)
    add(g, "--precision", "auto: bf16 where it is fast (GPUs that have it, CPUs with AMX/AVX512-BF16), else fp32 "
                          "(fp16 with --use_16bit)", choices=TRAIN_PRECISIONS)
    add(g, "--max_nonfinite_steps", "stop after this many non-finite losses in a row (each one skips its step)",
        type=int)
    g = parser.add_argument_group("evaluation")
    add(g, "--val_every", "validate every N epochs (and the last)", type=int)
    add(g, "--val_check_interval", "within a validated epoch (Lightning's meaning): a fraction in (0, 1] validates "
        "every int(fraction x batches) batches, a whole number N every N batches (default: AdaFace's 0.1 when "
        "--epochs <= 4, else 1.0 = once per epoch)", type=parse_val_check_interval)
    add(g, "--evaluate", "only evaluate --start_from_model_statedict", action="store_true")
    g = parser.add_argument_group("output")
    g.add_argument("--config", help="a run's config.json (or a JSON/YAML file of TrainConfig fields): strict, "
                                    "an unknown key is an error; flags given on the command line override it")
    add(g, "--output_dir", "run folder (default: experiments/<prefix>_<MM-DD>_<n>)")
    add(g, "--prefix")
    add(g, "--resume_from_checkpoint", "continue a run exactly from its .ckpt")
    add(g, "--resume_onto_other_data", "with --resume_from_checkpoint: continue although the training data differs "
                                       "from the data the checkpoint was trained on", action="store_true")
    add(g, "--overwrite", "replace the run already in --output_dir (its checkpoints, logs and results are deleted; "
        "other files are kept)", action="store_true")
    add(g, "--save_all_models", "also keep epoch=NN.ckpt for every epoch", action="store_true")
    add(g, "--save_every_steps", "also write last.ckpt every N optimizer steps (0 = per epoch only)", type=int)
    add(g, "--log_every", "log training values every N steps", type=int)
    add(g, "--use_wandb", "also log to Weights & Biases (pip install facetrain[wandb]; WANDB_MODE=offline works "
                          "without network); run name: the output folder's name, as AdaFace", action="store_true")
    add(g, "--wandb_project", "W&B project")
    g.add_argument("--quiet", "--no_progress", dest="progress", action="store_false", help="no progress bar")
    g = parser.add_argument_group("distributed")
    add(g, "--gpus", "GPUs to use (0 = CPU); >1 starts one process per GPU unless run under torchrun", type=int)
    add(g, "--sync_bn", "SyncBatchNorm across processes (DDP)", action="store_true")
    add(g, "--partial_fc", "Partial FC: class centres sharded over the processes, cross-entropy across them "
                           "(for hundreds of thousands to millions of identities)", action="store_true")
    add(g, "--sample_rate", "with --partial_fc: fraction of each shard's negative classes per step (1.0 = all); "
                            "the batch's classes are always kept", type=float)
    g = parser.add_argument_group("AdaFace compatibility", "flags of AdaFace's main.py with no better name here")
    add(g, "--use_16bit", "fp16 mixed precision with loss scaling on GPUs (on a CPU: as --precision auto)",
        action="store_true")
    add(g, "--test_run", f"{TEST_RUN_BATCHES} batches per epoch", action="store_true")
    g.add_argument("--distributed_backend", choices=["ddp"],
                   help="AdaFace's flag; DistributedDataParallel is the only backend")


def load_config_file(path: str | os.PathLike) -> dict[str, Any]:
    """The mapping in a JSON (e.g. a run's config.json) or YAML file; ConfigError naming the file."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the config file ({exc.strerror or exc})") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: a config file is UTF-8 text (JSON or YAML)") from None
    is_yaml = path.suffix.lower() in (".yaml", ".yml")
    if is_yaml:
        try:
            import yaml
        except ImportError:
            raise ConfigError(f"{path}: reading YAML needs PyYAML (pip install pyyaml), or use JSON") from None
    # safe_load builds plain data only: a `!!python/object` tag is a YAMLError, nothing runs
    errors = (ValueError, RecursionError) + ((yaml.YAMLError,) if is_yaml else ())
    try:
        values = yaml.safe_load(text) if is_yaml else json.loads(text)
    except errors as exc:
        reason = " ".join(str(exc).split())[:200] if not isinstance(exc, RecursionError) else "nested too deeply"
        raise ConfigError(f"{path}: not valid {'YAML' if is_yaml else 'JSON'} ({reason})") from None
    if not isinstance(values, dict) or not all(isinstance(k, str) for k in values):
        raise ConfigError(f"{path}: a config file holds a mapping of option names to values")
    return values


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """Defaults, then the --config file, then the flags given on the command line."""
    given = {k: v for k, v in vars(args).items() if k not in ("config", "distributed_backend")}
    values = load_config_file(args.config) if getattr(args, "config", None) else {}
    try:
        config = TrainConfig.from_dict({**values, **given}, strict=True)
        check_types(config)
    except ConfigError as exc:
        raise ConfigError(f"{args.config}: {exc}" if getattr(args, "config", None) else str(exc)) from None
    if config.use_wandb and importlib.util.find_spec("wandb") is None:
        warnings.warn("--use_wandb: wandb is not installed (pip install facetrain[wandb]); values go to metrics.csv "
                      "and curves.png only", stacklevel=2)
    config.validate()
    return config
