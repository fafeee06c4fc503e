"""Every numeric training flag is checked against its meaningful range, and
AdaFace's validation schedule flags parse with Lightning's meaning."""
from __future__ import annotations

import argparse

import pytest

from facetrain.cli import main
from facetrain.errors import ConfigError
from facetrain.training.build import validation_interval_batches
from facetrain.training.config import TrainConfig, add_train_arguments, config_from_args


def parse(*argv: str) -> TrainConfig:
    parser = argparse.ArgumentParser()
    add_train_arguments(parser)
    return config_from_args(parser.parse_args(list(argv)))


@pytest.mark.parametrize("flag, value", [
    ("--lr", "nan"), ("--lr", "inf"), ("--lr", "1e30"), ("--lr", "0"), ("--lr", "-0.1"), ("--lr", "10.5"),
    ("--m", "5"), ("--m", "-1"), ("--m", "nan"), ("--h", "10"), ("--h", "-5"), ("--s", "0"), ("--s", "-64"),
    ("--s", "inf"), ("--t_alpha", "2"), ("--t_alpha", "0"), ("--momentum", "5"), ("--momentum", "1"),
    ("--lr_gamma", "0"), ("--lr_gamma", "1.5"), ("--weight_decay", "nan"), ("--weight_decay", "-1e-4"),
    ("--warmup_epochs", "nan"), ("--crop_augmentation_prob", "nan"), ("--low_res_augmentation_prob", "1.5"),
    ("--photometric_augmentation_prob", "-0.1"), ("--log_every", "0"), ("--seed", "-1"), ("--seed", "4294967296"),
    ("--custom_num_class", "0"), ("--custom_num_class", "-5"), ("--epochs", "0"), ("--batch_size", "0"),
    ("--batch_size", "1"), ("--epochs", "1000001"), ("--warmup_epochs", "1e308"), ("--warmup_epochs", "25"),
    ("--max_nonfinite_steps", "0"), ("--num_workers", "-2"), ("--lr_milestones", "0,4"),
    ("--val_check_interval", "0"), ("--val_check_interval", "0.0"), ("--val_check_interval", "1.5"),
    ("--val_check_interval", "-3"), ("--val_check_interval", "nan"),
])
def test_out_of_range_flags_are_refused_naming_the_flag(flag, value):
    with pytest.raises(ConfigError, match=f"^{flag} must be"):
        parse(f"{flag}={value}")  # = : argparse reads "-1" as an option otherwise


@pytest.mark.parametrize("argv", [
    ["--lr", "10"], ["--lr", "1e-5"], ["--m", "0"], ["--m", "1"], ["--h", "0"], ["--h", "1"], ["--s", "64"],
    ["--t_alpha", "1"], ["--momentum", "0"], ["--lr_gamma", "1"], ["--weight_decay", "0"], ["--seed", "0"],
    ["--custom_num_class", "-1"], ["--val_check_interval", "1.0"], ["--val_check_interval", "1"],
    ["--batch_size", "2"], ["--epochs", "1000000"], ["--warmup_epochs", "24"],
])
def test_edges_of_the_ranges_are_accepted(argv):
    parse(*argv)


def test_a_bad_flag_is_one_error_line_and_exit_1(capsys):
    assert main(["train", "--lr", "nan", "--data_root", "/nowhere"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: --lr must be a finite number") and err.count("\n") == 1 and "Traceback" not in err


def test_val_check_interval_has_lightnings_two_kinds():
    assert parse("--val_check_interval", "0.25").val_check_interval == 0.25
    one_epoch = parse("--val_check_interval", "1.0").val_check_interval
    assert one_epoch == 1.0 and isinstance(one_epoch, float)  # once per epoch
    every_batch = parse("--val_check_interval", "1").val_check_interval
    assert every_batch == 1 and isinstance(every_batch, int)  # every batch, as Lightning's int 1
    assert parse("--val_check_interval", "500").val_check_interval == 500
    with pytest.raises(SystemExit):
        parse("--val_check_interval", "often")


def test_default_schedule_is_adafaces():
    # AdaFace main.py: val_check_interval=1.0 if epochs > 4 else 0.1
    assert parse("--epochs", "4").effective_val_check_interval == 0.1
    assert parse("--epochs", "5").effective_val_check_interval == 1.0
    assert parse("--epochs", "2", "--val_check_interval", "0.5").effective_val_check_interval == 0.5


@pytest.mark.parametrize("interval, batches, every", [
    (0.1, 100, 10), (0.1, 105, 10), (0.1, 5, 1), (1.0, 37, 37), (0.25, 10, 2), (0.5, 3, 1), (3, 10, 3), (10, 10, 10),
])
def test_validation_every_n_batches_as_lightning_computes_it(interval, batches, every):
    # Lightning: val_check_batch = max(1, int(num_training_batches * val_check_interval)) for a float
    assert validation_interval_batches(interval, batches) == every


def test_more_batches_than_an_epoch_is_refused():
    with pytest.raises(ConfigError, match="more batches than an epoch"):
        validation_interval_batches(11, 10)
