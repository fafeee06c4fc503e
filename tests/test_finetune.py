"""`facetrain train --finetune_from`: where the weights come from, which head goes on, the frozen stages
(weights and batch-norm statistics), the learning-rate groups, the head-alone warm-up and an exact
resume in the middle of it, on tiny synthetic data through the CLI."""
from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import pytest
import torch

from facetrain.checkpoint import load_checkpoint
from facetrain.cli import main
from facetrain.errors import ConfigError
from facetrain.heads import build_head
from facetrain.models import build_model
from facetrain.training.config import TrainConfig, add_train_arguments, config_from_args
from facetrain.training.finetune import freeze_stages, stage_count
from facetrain.training.optim import build_optimizer, build_scheduler
from train_fixtures import make_dataset, train_args

pytestmark = pytest.mark.usefixtures("one_torch_thread")
SHORT = ("--epochs", "1", "--limit_train_batches", "2", "--precision", "fp32", "--val_check_interval", "1.0")


def parse(*argv: str) -> TrainConfig:
    parser = argparse.ArgumentParser()
    add_train_arguments(parser)
    return config_from_args(parser.parse_args(list(argv)))


def state(path: Path, prefix: str = "model.") -> dict[str, torch.Tensor]:
    return {k[len(prefix):]: v for k, v in load_checkpoint(path)["state_dict"].items() if k.startswith(prefix)}


def parameter_names(arch: str) -> set[str]:
    return {name for name, _ in build_model(arch).named_parameters()}


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("finetune")
    return make_dataset(root / "a", seed=0), make_dataset(root / "b", classes=5, seed=1)


@pytest.fixture(scope="module")
def source(data, tmp_path_factory):
    """A short run on dataset a: the checkpoint the tests fine-tune from."""
    out = tmp_path_factory.mktemp("source")
    assert main(["train", *train_args(data[0], out, *SHORT)]) == 0
    return out / "last.ckpt"


def test_flags_are_range_checked_and_go_with_finetune_from(source):
    for argv, message in [
        (["--backbone_lr_scale=0"], "^--backbone_lr_scale must be"), (["--backbone_lr_scale=1.5"], "^--backbone_lr_scale must be"),
        (["--freeze_stages=-1"], "^--freeze_stages must be"), (["--head_warmup_epochs=-1"], "^--head_warmup_epochs must be"),
        (["--head_warmup_epochs=30"], r"^--head_warmup_epochs must be at most --epochs \(24\)"),
    ]:
        with pytest.raises(ConfigError, match=message):
            parse("--finetune_from", str(source), *argv)
    with pytest.raises(ConfigError, match="^--freeze_stages, --head_warmup_epochs go with --finetune_from"):
        parse("--freeze_stages", "1", "--head_warmup_epochs", "1")
    with pytest.raises(ConfigError, match="both name the starting weights"):
        parse("--finetune_from", str(source), "--start_from_model_statedict", str(source))


def test_stages_of_every_architecture_and_the_refusal_beyond_them(data, source, tmp_path, capsys):
    assert {arch: stage_count(build_model(arch)) for arch in ("ir_18", "ir_50", "ir_se_50", "mobilefacenet",
                                                               "tinynet")} == {
        "ir_18": 4, "ir_50": 4, "ir_se_50": 4, "mobilefacenet": 3, "tinynet": 3}
    assert [len(s) for s in build_model("ir_50").stages()] == [1, 3, 4, 14, 3]
    assert [len(s) for s in build_model("mobilefacenet").stages()] == [1, 5, 7, 3]
    out = tmp_path / "run"
    assert main(["train", *train_args(data[1], out, *SHORT, "--finetune_from", str(source), "--freeze_stages", "4")]) == 1
    err = capsys.readouterr().err
    assert err == "error: --freeze_stages 4: tinynet has 3 stages (plus the input stem)\n"
    assert not out.exists()  # refused before anything was written


def test_frozen_batch_norm_stays_in_eval_mode_through_train():
    model = build_model("ir_18")
    freeze_stages(model, 1)
    model.train()
    stem, first, second = model.stages()[:3]
    frozen = [m for part in (stem, first) for unit in part for m in unit.modules()]
    assert all(not m.training for m in frozen)
    assert all(not p.requires_grad for unit in stem + first for p in unit.parameters())
    assert all(m.training for unit in second for m in unit.modules())
    assert all(p.requires_grad for unit in second for p in unit.parameters())
    model.eval().train(True)  # and again
    assert all(not m.training for m in frozen)


def test_frozen_stages_are_bit_identical_after_training(data, source, tmp_path):
    out = tmp_path / "run"
    assert main(["train", *train_args(data[1], out, *SHORT, "--finetune_from", str(source),
                                      "--freeze_stages", "2")]) == 0
    before, after = state(source), state(out / "last.ckpt")
    # tinynet: stem = stem_and_body.0-2, stage 1 = 3-8, stage 2 = 9-14, stage 3 = 15-20
    frozen = [k for k in before if k.startswith("stem_and_body.") and int(k.split(".")[1]) < 15]
    assert any(k.endswith("running_mean") for k in frozen) and any(k.endswith("weight") for k in frozen)
    assert all(torch.equal(before[k], after[k]) for k in frozen)
    assert not torch.equal(before["stem_and_body.15.weight"], after["stem_and_body.15.weight"])
    assert not torch.equal(before["stem_and_body.16.running_mean"], after["stem_and_body.16.running_mean"])
    log = (out / "train.log").read_text()
    assert "new adaface head for this data's 5 classes (the checkpoint's head has 6 classes)" in log
    assert "frozen: the input stem and stages 1-2 of 3" in log


def test_the_head_goes_on_for_the_same_classes_of_the_same_data(data, source, tmp_path):
    out = tmp_path / "run"
    assert main(["train", *train_args(data[0], out, *SHORT, "--finetune_from", str(source), "--epochs", "2",
                                      "--head_warmup_epochs", "2", "--lr", "1e-5")]) == 0
    assert "kept the checkpoint's adaface head (the same 6 classes of the same data)" in (out / "train.log").read_text()
    # the head alone trained: the backbone's parameters are the checkpoint's, its kernel moved on from it
    before, after = state(source), state(out / "last.ckpt")
    assert all(torch.equal(before[k], after[k]) for k in parameter_names("tinynet"))
    kernel_before, kernel_after = state(source, "head.")["kernel"], state(out / "last.ckpt", "head.")["kernel"]
    assert not torch.equal(kernel_before, kernel_after)
    fresh = build_head("adaface", 512, 6).kernel  # a new head would start elsewhere
    assert (kernel_after - kernel_before).abs().max() < (fresh - kernel_before).abs().max()


def test_learning_rate_groups_and_the_head_alone_warm_up():
    model, head = build_model("tinynet"), build_head("adaface", 512, 10)
    freeze_stages(model, 1)
    optimizer = build_optimizer(model, head, lr=0.1, momentum=0.9, weight_decay=5e-4, backbone_lr_scale=0.1)
    assert [(g["role"], g["lr"], g["weight_decay"]) for g in optimizer.param_groups] == [
        ("head", 0.1, 5e-4), ("backbone", pytest.approx(0.01), 5e-4), ("backbone", pytest.approx(0.01), 0.0)]
    assert optimizer.param_groups[0]["params"] == [head.kernel]  # where Partial FC's consolidate looks for it
    in_optimizer = {id(p) for g in optimizer.param_groups for p in g["params"]}
    assert {id(p) for p in model.parameters() if p.requires_grad} <= in_optimizer
    assert not any(id(p) in in_optimizer for p in model.parameters() if not p.requires_grad)
    scheduler = build_scheduler(optimizer, steps_per_epoch=4, milestones=[2], gamma=0.1, head_warmup_epochs=0.5)
    rates = []
    for _ in range(10):
        rates.append([round(g["lr"], 6) for g in optimizer.param_groups])
        optimizer.step()
        scheduler.step()
    assert rates[:2] == [[0.1, 0.0, 0.0]] * 2  # 0.5 epoch of 4 steps: the head alone
    assert rates[2:8] == [[0.1, 0.01, 0.01]] * 6
    assert rates[8:] == [[0.01, 0.001, 0.001]] * 2  # epoch 2: both x gamma


def test_resume_in_the_middle_of_the_warm_up_is_exact(data, source, tmp_path, capsys):
    flags = ("--epochs", "2", "--limit_train_batches", "3", "--precision", "fp32", "--val_check_interval", "1.0",
             "--save_all_models", "--finetune_from", str(source), "--head_warmup_epochs", "1.5",
             "--freeze_stages", "1", "--backbone_lr_scale", "0.5")
    reference = tmp_path / "reference"
    assert main(["train", *train_args(data[1], reference, *flags)]) == 0
    resumed = tmp_path / "resumed"
    shutil.copytree(reference, resumed)
    (resumed / "last.ckpt").unlink()
    # epoch=00.ckpt: 3 steps done, the head alone trains until step 4 (1.5 x 3 rounded)
    assert main(["train", *train_args(data[1], resumed, *flags,
                                      "--resume_from_checkpoint", str(resumed / "epoch=00.ckpt"))]) == 0
    a, b = load_checkpoint(reference / "last.ckpt"), load_checkpoint(resumed / "last.ckpt")
    assert all(torch.equal(v, b["state_dict"][k]) for k, v in a["state_dict"].items())
    sa, sb = a["facetrain"]["extra"]["lr_schedulers"][0], b["facetrain"]["extra"]["lr_schedulers"][0]
    assert sa["_last_lr"] == sb["_last_lr"] and sa["last_epoch"] == sb["last_epoch"] == 6
    # and other fine-tuning flags than it was trained with are refused in one line
    assert main(["train", *train_args(data[1], resumed, *flags, "--freeze_stages", "2",
                                      "--resume_from_checkpoint", str(resumed / "epoch=00.ckpt"))]) == 1
    assert "was trained with --freeze_stages 1, this run has 2" in capsys.readouterr().err


def test_config_json_records_the_flags_and_replays_them(data, source, tmp_path):
    out = tmp_path / "run"
    assert main(["train", *train_args(data[1], out, *SHORT, "--finetune_from", str(source), "--freeze_stages", "1",
                                      "--backbone_lr_scale", "0.25", "--head_warmup_epochs", "0.5")]) == 0
    saved = json.loads((out / "config.json").read_text())
    assert {k: saved[k] for k in ("finetune_from", "freeze_stages", "backbone_lr_scale", "head_warmup_epochs")} == {
        "finetune_from": str(source), "freeze_stages": 1, "backbone_lr_scale": 0.25, "head_warmup_epochs": 0.5}
    replayed = parse("--config", str(out / "config.json"))
    assert replayed.to_dict() == TrainConfig.from_dict(saved).to_dict()


def test_a_missing_or_unknown_start_is_one_line(data, tmp_path, capsys):
    for start in (str(tmp_path / "missing.ckpt"), "no_such_model"):
        assert main(["train", *train_args(data[1], tmp_path / "run", *SHORT, "--finetune_from", start)]) == 1
        err = capsys.readouterr().err
        assert err.startswith(f"error: --finetune_from {start}: ") and err.count("\n") == 1


def test_a_hub_file_in_the_local_cache_is_a_start(data, source, tmp_path, monkeypatch):
    constants = pytest.importorskip("huggingface_hub.constants")
    cache = tmp_path / "hub"
    snapshot = cache / "models--owner--faces" / "snapshots" / ("a" * 40)
    snapshot.mkdir(parents=True)
    shutil.copyfile(source, snapshot / "tiny.ckpt")
    (cache / "models--owner--faces" / "refs").mkdir()
    (cache / "models--owner--faces" / "refs" / "main").write_text("a" * 40)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    out = tmp_path / "run"
    assert main(["train", *train_args(data[1], out, *SHORT, "--finetune_from", "hf://owner/faces/tiny.ckpt",
                                      "--freeze_stages", "3")]) == 0
    before, after = state(source), state(out / "last.ckpt")
    frozen = [k for k in before if k.startswith("stem_and_body.")]
    assert all(torch.equal(before[k], after[k]) for k in frozen)
    assert f"fine-tuning from {snapshot / 'tiny.ckpt'} (tinynet)" in (out / "train.log").read_text()
