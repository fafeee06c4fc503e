"""The meaningful range of every numeric training flag, checked before anything is built or written.

Each violation is one line naming the flag, the range, why, and the value given. Bounds that are not
mathematical limits say where they come from:
- `--lr` in (0, 10]: AdaFace trains with 0.1 (at 256-512 images per step); 10 is a hundred times that,
  beyond any linear-scaling recipe for face recognition, so a larger value is a typo (1e3 for 1e-3) or
  a test of divergence (1e30, inf), not a rate.
- `--m` in [0, 1], `--h` in [0, 1]: AdaFace's paper uses m = 0.4 (ArcFace 0.5 rad, CosFace 0.35) and
  h = 0.333 within [0, 1] (h = 0: no adaptiveness; h = 1: feature norms one standard deviation from
  the mean already reach the ends of the margin range). Negative values turn the margin into a bonus;
  margins above 1 (radians for the angular part) leave little of [0, pi] for the target angle.
- `--t_alpha` in (0, 1]: the EMA rate of the feature-norm statistics (AdaFace: 0.01); 0 would freeze
  them at their initial values, above 1 the average diverges.
- `--seed` in [0, 2**32): numpy's seed range (the seed reaches numpy, torch and the sampler).
"""
from __future__ import annotations

import math
from typing import Any, Callable

from facetrain.errors import ConfigError

MAX_LR = 10.0
SEED_LIMIT = 2**32

# flag -> (predicate on a finite value, range as written in the message, why)
FLOAT_RANGES: dict[str, tuple[Callable[[float], bool], str, str]] = {
    "lr": (lambda v: 0 < v <= MAX_LR, "in (0, 10]", "AdaFace: 0.1"),
    "lr_gamma": (lambda v: 0 < v <= 1, "in (0, 1]", "the factor applied at each milestone"),
    "momentum": (lambda v: 0 <= v < 1, "in [0, 1)", "SGD momentum; 1 never forgets a gradient"),
    "weight_decay": (lambda v: 0 <= v < 1, "in [0, 1)", "AdaFace: 5e-4"),
    "warmup_epochs": (lambda v: v >= 0, ">= 0", "linear warm-up length in epochs"),
    "low_res_augmentation_prob": (lambda v: 0 <= v <= 1, "in [0, 1]", "a probability"),
    "crop_augmentation_prob": (lambda v: 0 <= v <= 1, "in [0, 1]", "a probability"),
    "photometric_augmentation_prob": (lambda v: 0 <= v <= 1, "in [0, 1]", "a probability"),
}
# head hyper-parameters: None = the head's default
HEAD_RANGES: dict[str, tuple[Callable[[float], bool], str, str]] = {
    "m": (lambda v: 0 <= v <= 1, "in [0, 1]", "AdaFace paper: 0.4; ArcFace 0.5, CosFace 0.35"),
    "h": (lambda v: 0 <= v <= 1, "in [0, 1]", "AdaFace paper: 0.333; 0 = no adaptive margin"),
    "s": (lambda v: v > 0, "> 0", "the logit scale; AdaFace: 64"),
    "t_alpha": (lambda v: 0 < v <= 1, "in (0, 1]", "EMA rate of the norm statistics; AdaFace: 0.01"),
}
INT_MINIMUMS = {"epochs": 1, "batch_size": 1, "accumulate_grad_batches": 1, "val_every": 1, "log_every": 1,
                "max_nonfinite_steps": 1, "num_workers": -1, "save_every_steps": 0, "limit_train_batches": 0,
                "gpus": 0}


def _fail(flag: str, rule: str, why: str, value: object) -> None:
    raise ConfigError(f"--{flag} must be {rule} ({why}), got {value!r}")


def check_flag_ranges(config: Any) -> None:
    """ConfigError for the first numeric flag outside its range (see the module doc). `config` is a
    TrainConfig, read by flag name: config.py calls this module, which stays below it."""
    for flag, minimum in INT_MINIMUMS.items():
        if getattr(config, flag) < minimum:
            _fail(flag, f">= {minimum}", "a count" + (", -1: automatic" if minimum < 0 else ""), getattr(config, flag))
    if not 0 <= config.seed < SEED_LIMIT:
        _fail("seed", "in [0, 2**32)", "numpy's seed range", config.seed)
    if config.custom_num_class != -1 and config.custom_num_class < 1:
        _fail("custom_num_class", ">= 1, or -1", "-1 counts the classes in the data", config.custom_num_class)
    if any(m < 1 for m in config.lr_milestones):
        _fail("lr_milestones", "epochs >= 1", "the learning rate drops after each of them", config.lr_milestones)
    checks = [(flag, getattr(config, flag), rule) for flag, rule in FLOAT_RANGES.items()]
    checks += [(flag, getattr(config, flag), rule) for flag, rule in HEAD_RANGES.items()
               if getattr(config, flag) is not None]
    for flag, value, (ok, text, why) in checks:
        if not math.isfinite(value) or not ok(value):
            _fail(flag, f"finite and {text}", why, value)
    check_val_check_interval(config.val_check_interval)


def check_val_check_interval(value: float | int | None) -> None:
    """Lightning's meaning: a float in (0, 1] is a fraction of the epoch, an int >= 1 a number of batches."""
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        _fail("val_check_interval", "a number", "fraction of an epoch or number of batches", value)
    if isinstance(value, int):
        if value < 1:
            _fail("val_check_interval", ">= 1 when a whole number", "validate every N batches", value)
    elif not (math.isfinite(value) and 0 < value <= 1):
        _fail("val_check_interval", "in (0, 1] when a fraction", "validate every fraction of an epoch", value)
