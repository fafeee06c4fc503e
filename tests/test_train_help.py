"""`facetrain train --help` shows every flag under its purpose, and the flags of the seed's scripts and of
AdaFace's main.py parse to their meaning."""
from __future__ import annotations

import argparse
import re
import shlex
from pathlib import Path

import pytest

from facetrain.cli import main
from facetrain.training.config import TrainConfig, add_train_arguments, config_from_args

REPO = Path(__file__).resolve().parents[1]
GROUPS = ["data", "model", "optimisation", "evaluation", "output", "distributed", "AdaFace compatibility"]


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser()
    add_train_arguments(p)
    return p


def test_every_flag_is_in_one_named_group():
    p = parser()
    groups = {g.title: g for g in p._action_groups if g._group_actions}
    assert list(groups) == ["options", *GROUPS]  # "options" holds -h only
    assert [a.dest for a in groups["options"]._group_actions] == ["help"]
    placed = [a for title in GROUPS for a in groups[title]._group_actions]
    assert sorted(id(a) for a in placed) == sorted(id(a) for a in p._actions if a.dest != "help")


def test_help_prints_the_groups_in_order(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["train", "--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    positions = [out.index(f"\n{title}:\n") for title in GROUPS]
    assert positions == sorted(positions)


def main_py_flags(script: Path) -> list[str]:
    """The flags a seed script passes to main.py, with its variables filled in as the script's defaults would."""
    text = script.read_text().replace("\\\n", " ")
    call = next(line for line in text.splitlines() if line.startswith("python") and "main.py" in line)
    words = shlex.split(re.split(r'main\.py"?', call, maxsplit=1)[1].replace('"$@"', ""))
    return [w.replace("$task_num", "1").replace("${task_num}", "1").replace("$n_ids", "30000") for w in words]


def test_train_sh_flags_parse_to_the_recipe():
    argv = main_py_flags(REPO / "scripts" / "train.sh")
    assert "--use_16bit" in argv and "--lr_milestones" in argv  # the script was read
    config = config_from_args(parser().parse_args(argv))
    assert (config.arch, config.head, config.m, config.h, config.batch_size, config.epochs) == \
        ("ir_50", "adaface", 0.4, 0.333, 256, 30)
    assert config.lr_milestones == [12, 20, 26] and config.use_16bit and config.custom_num_class == 30000
    assert config.prefix == "ir50_1_adaface" and config.num_workers == 8 and config.gpus == 1


# AdaFace's main.py flags (its config.py), with values in its own spelling, and what each must set.
ADAFACE_FLAGS = [
    ("--data_root ./data", "data_root", "./data"),
    ("--train_data_path faces_emore/imgs", "train_data_path", "faces_emore/imgs"),
    ("--val_data_path faces_emore", "val_data_path", "faces_emore"),
    ("--prefix ir50_ms1mv2_adaface", "prefix", "ir50_ms1mv2_adaface"),
    ("--gpus 2", "gpus", 2),
    ("--use_16bit", "use_16bit", True),
    ("--arch ir_101", "arch", "ir_101"),
    ("--batch_size 512", "batch_size", 512),
    ("--num_workers 16", "num_workers", 16),
    ("--epochs 26", "epochs", 26),
    ("--lr_milestones 12,20,24", "lr_milestones", [12, 20, 24]),
    ("--lr 0.1", "lr", 0.1),
    ("--lr_gamma 0.1", "lr_gamma", 0.1),
    ("--momentum 0.9", "momentum", 0.9),
    ("--weight_decay 5e-4", "weight_decay", 5e-4),
    ("--head arcface", "head", "arcface"),
    ("--m 0.5", "m", 0.5),
    ("--h 0.0", "h", 0.0),
    ("--s 64.0", "s", 64.0),
    ("--t_alpha 0.01", "t_alpha", 0.01),
    ("--low_res_augmentation_prob 0.2", "low_res_augmentation_prob", 0.2),
    ("--crop_augmentation_prob 0.2", "crop_augmentation_prob", 0.2),
    ("--photometric_augmentation_prob 0.2", "photometric_augmentation_prob", 0.2),
    ("--custom_num_class 10572", "custom_num_class", 10572),
    ("--use_mxrecord", "use_mxrecord", True),
    ("--swap_color_channel", "swap_color_channel", True),
    ("--accumulate_grad_batches 2", "accumulate_grad_batches", 2),
    ("--seed 7", "seed", 7),
    ("--test_run", "test_run", True),
    ("--save_all_models", "save_all_models", True),
    ("--use_wandb", "use_wandb", True),
    ("--evaluate", "evaluate", True),
    ("--start_from_model_statedict pretrained/adaface_ir50_ms1mv2.ckpt", "start_from_model_statedict",
     "pretrained/adaface_ir50_ms1mv2.ckpt"),
    ("--resume_from_checkpoint experiments/run/last.ckpt", "resume_from_checkpoint", "experiments/run/last.ckpt"),
    ("--output_dir experiments/run", "output_dir", "experiments/run"),
]


@pytest.mark.parametrize("flag, field, value", ADAFACE_FLAGS, ids=[f[0].split()[0] for f in ADAFACE_FLAGS])
def test_adaface_flags_keep_their_meaning(flag, field, value):
    args = vars(parser().parse_args(shlex.split(flag)))
    assert TrainConfig.from_dict(args)  # every parsed name is a field
    assert args[field] == value


def test_distributed_backend_ddp_is_accepted():
    assert parser().parse_args(["--distributed_backend", "ddp"]).distributed_backend == "ddp"


def test_defaults_stay_out_of_the_namespace():
    """A flag is in the namespace only when given: --config files sit between defaults and flags."""
    assert vars(parser().parse_args([])) == {}
    assert re.search(r"default: 0\.1\b", parser().format_help())  # --lr's default is still shown
