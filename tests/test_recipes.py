"""`facetrain train --recipe NAME` and `facetrain recipes`: a recipe fills the flags' defaults, flags given
on the command line (even at their default value) and a --config file win, config.json records the
recipe and replays it, an unknown name is one line listing the names."""
from __future__ import annotations

import argparse
import json

import pytest

from facetrain.cli import main
from facetrain.errors import ConfigError
from facetrain.training.config import TrainConfig, add_train_arguments, config_from_args
from facetrain.training.recipes import RECIPES
from train_fixtures import make_dataset, train_args

NAMES = ["adaface_casia", "adaface_webface4m", "face_synthetics", "dcface", "idiff_face", "digiface"]


def parse(*argv: str) -> TrainConfig:
    parser = argparse.ArgumentParser()
    add_train_arguments(parser)
    return config_from_args(parser.parse_args(list(argv)))


def test_every_recipe_names_its_source_and_its_values_are_valid_flags():
    assert list(RECIPES) == NAMES
    for name, recipe in RECIPES.items():
        assert recipe.sources and recipe.reported
        config = parse("--recipe", name)
        assert {k: getattr(config, k) for k in recipe.flags} == recipe.flags
    # values as their source files state them
    assert RECIPES["face_synthetics"].flags["lr_milestones"] == [12, 20, 26]
    assert RECIPES["face_synthetics"].flags["epochs"] == 30
    assert RECIPES["adaface_casia"].flags["lr_milestones"] == [12, 20, 24]
    assert RECIPES["idiff_face"].flags["head"] == "cosface" and RECIPES["idiff_face"].flags["m"] == 0.35
    assert RECIPES["dcface"].flags == {} and RECIPES["digiface"].flags == {}  # their sources publish none


def test_the_recipe_fills_the_defaults():
    config = parse("--recipe", "face_synthetics")
    assert (config.arch, config.head, config.m, config.h, config.epochs, config.lr_milestones, config.batch_size,
            config.crop_augmentation_prob) == ("ir_50", "adaface", 0.4, 0.333, 30, [12, 20, 26], 256, 0.2)
    assert TrainConfig().epochs == 24 and parse().epochs == 24


def test_flags_given_win_even_at_their_default_value():
    # --epochs 24 is the default: given explicitly it must still beat the recipe's 30
    config = parse("--recipe", "face_synthetics", "--epochs", "24", "--arch", "tinynet", "--low_res_augmentation_prob", "0")
    assert (config.epochs, config.arch, config.low_res_augmentation_prob, config.lr_milestones) == (
        24, "tinynet", 0.0, [12, 20, 26])


def test_a_config_file_wins_over_its_recipe(tmp_path):
    path = tmp_path / "c.json"
    path.write_text(json.dumps({"recipe": "adaface_casia", "batch_size": 64}))
    config = parse("--config", str(path))
    assert (config.recipe, config.batch_size, config.arch) == ("adaface_casia", 64, "ir_50")
    assert parse("--config", str(path), "--batch_size", "32").batch_size == 32


def test_an_unknown_recipe_is_one_line_listing_the_names(capsys):
    with pytest.raises(ConfigError, match="^unknown recipe 'casia'; choose one of: " + ", ".join(NAMES) + "$"):
        parse("--recipe", "casia")
    assert main(["train", "--recipe", "casia"]) == 1
    err = capsys.readouterr().err
    assert err == f"error: unknown recipe 'casia'; choose one of: {', '.join(NAMES)}\n"
    assert main(["recipes", "casia"]) == 1


def test_config_json_records_the_recipe_and_replays_it(tmp_path):
    data = make_dataset(tmp_path / "data")
    out = tmp_path / "run"
    # the recipe's values, with what a CPU test can run given on the command line
    assert main(["train", "--recipe", "face_synthetics", *train_args(data, out, "--epochs", "1", "--lr_milestones", "1",
                                                                     "--limit_train_batches", "1", "--precision", "fp32",
                                                                     "--val_check_interval", "1.0")]) == 0
    saved = json.loads((out / "config.json").read_text())
    assert (saved["recipe"], saved["head"], saved["m"], saved["h"], saved["lr"], saved["crop_augmentation_prob"]) == (
        "face_synthetics", "adaface", 0.4, 0.333, 0.1, 0.2)
    assert (saved["arch"], saved["epochs"], saved["batch_size"]) == ("tinynet", 1, 8)
    log = (out / "train.log").read_text()
    assert "recipe face_synthetics: IR-50 AdaFace" in log and "source: idiap/face_synthetics" in log
    assert "given instead: --arch tinynet (recipe: ir_50), --batch_size 8 (recipe: 256)" in log
    assert parse("--config", str(out / "config.json")).to_dict() == TrainConfig.from_dict(saved).to_dict()


def test_recipes_verb_lists_them_with_sources(capsys):
    assert main(["recipes"]) == 0
    out = capsys.readouterr().out
    for name in NAMES:
        assert f"recipe {name}: " in out
    assert "source: mk-minchul/CVLface, cvlface/research/recognition/code/run_v1/scripts/examples/" \
           "run_adaface_ir50_casia.sh" in out
    assert "source: idiap/face_synthetics, synthetics/adaface/scripts/train.sh" in out
    assert "not published: every training value" in out
    assert main(["recipes", "idiff_face"]) == 0
    one = capsys.readouterr().out
    assert one.startswith("recipe idiff_face: ") and "recipe digiface" not in one
