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
- `--batch_size` >= 2: batch normalisation needs more than one image per batch in training mode.
- `--warmup_epochs` at most `--epochs`: a longer warm-up never reaches the learning rate asked for;
  `--epochs` at most 10^6, so that warm-up steps (epochs x steps per epoch) stay a finite float.
Types are checked first, for every field (`check_types`): a `--config` file can hold any JSON/YAML value.
"""
from __future__ import annotations

import dataclasses
import typing
from typing import Any

from facetrain.option_checks import Range, at_least, check_type, fail

MAX_LR = 10.0
MAX_EPOCHS = 10**6  # beyond any recipe; keeps epochs x steps (and the warm-up, at most as long) in float range
SEED_LIMIT = 2**32
_PROBABILITY = Range(lambda v: 0 <= v <= 1, "in [0, 1]", "a probability")

FLOAT_RANGES: dict[str, Range] = {
    "lr": Range(lambda v: 0 < v <= MAX_LR, "in (0, 10]", "AdaFace: 0.1"),
    "lr_gamma": Range(lambda v: 0 < v <= 1, "in (0, 1]", "the factor applied at each milestone"),
    "momentum": Range(lambda v: 0 <= v < 1, "in [0, 1)", "SGD momentum; 1 never forgets a gradient"),
    "weight_decay": Range(lambda v: 0 <= v < 1, "in [0, 1)", "AdaFace: 5e-4"),
    "warmup_epochs": Range(lambda v: v >= 0, ">= 0", "linear warm-up length in epochs"),
    "low_res_augmentation_prob": _PROBABILITY,
    "crop_augmentation_prob": _PROBABILITY,
    "photometric_augmentation_prob": _PROBABILITY,
}
# head hyper-parameters: None = the head's default
HEAD_RANGES: dict[str, Range] = {
    "m": Range(lambda v: 0 <= v <= 1, "in [0, 1]", "AdaFace paper: 0.4; ArcFace 0.5, CosFace 0.35"),
    "h": Range(lambda v: 0 <= v <= 1, "in [0, 1]", "AdaFace paper: 0.333; 0 = no adaptive margin"),
    "s": Range(lambda v: v > 0, "> 0", "the logit scale; AdaFace: 64"),
    "t_alpha": Range(lambda v: 0 < v <= 1, "in (0, 1]", "EMA rate of the norm statistics; AdaFace: 0.01"),
}
INT_RANGES: dict[str, Range] = {
    **{name: at_least(1, "a count") for name in ("accumulate_grad_batches", "val_every", "log_every",
                                                  "max_nonfinite_steps")},
    "epochs": Range(lambda v: 1 <= v <= MAX_EPOCHS, f"in [1, {MAX_EPOCHS}]", "passes over the data; AdaFace: 24-26"),
    "batch_size": at_least(2, "batch normalisation needs more than one image per batch"),
    "num_workers": at_least(-1, "a count, -1: automatic"),
    **{name: at_least(0, "a count") for name in ("save_every_steps", "limit_train_batches", "gpus")},
    "seed": Range(lambda v: 0 <= v < SEED_LIMIT, "in [0, 2**32)", "numpy's seed range"),
    "custom_num_class": Range(lambda v: v == -1 or v >= 1, ">= 1, or -1", "-1 counts the classes in the data"),
}


def check_types(config: Any) -> None:
    """ConfigError for the first field whose value is not of its annotated type (see option_checks)."""
    hints = typing.get_type_hints(type(config))
    for f in dataclasses.fields(config):
        check_type(f.name, getattr(config, f.name), hints[f.name])


def check_flag_ranges(config: Any) -> None:
    """ConfigError for the first option of the wrong type or outside its range (see the module doc).
    `config` is a TrainConfig, read by field name: config.py calls this module, which stays below it."""
    check_types(config)
    for flag, rule in INT_RANGES.items():
        rule.check(flag, getattr(config, flag))
    if any(m < 1 for m in config.lr_milestones):
        fail("lr_milestones", "epochs >= 1", "the learning rate drops after each of them", config.lr_milestones)
    for flag, rule in FLOAT_RANGES.items():
        rule.check(flag, getattr(config, flag))
    for flag, rule in HEAD_RANGES.items():
        if getattr(config, flag) is not None:
            rule.check(flag, getattr(config, flag))
    if config.warmup_epochs > config.epochs:
        fail("warmup_epochs", f"at most --epochs ({config.epochs})", "a longer warm-up never reaches --lr",
             config.warmup_epochs)
    check_val_check_interval(config.val_check_interval)


def check_val_check_interval(value: float | int | None) -> None:
    """Lightning's meaning: a float in (0, 1] is a fraction of the epoch, an int >= 1 a number of batches."""
    if value is None:
        return
    if isinstance(value, int):
        if value < 1:
            fail("val_check_interval", ">= 1 when a whole number", "validate every N batches", value)
    elif not 0 < value <= 1:
        fail("val_check_interval", "in (0, 1] when a fraction", "validate every fraction of an epoch", value)
