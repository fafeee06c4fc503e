"""Training building blocks: flags -> config, optimizer groups, LR schedule, precision choice, sampler,
RNG capture, metric logs."""
import argparse
import json
import random

import numpy as np
import pytest
import torch
from torch import nn

from facetrain.errors import ConfigError
from facetrain.heads import build_head
from facetrain.models import build_model
from facetrain.precision import resolve_precision
from facetrain.training.amp import Precision
from facetrain.training.batches import EpochSampler, batches_per_epoch, collate_uint8, optimizer_steps_per_epoch
from facetrain.training.config import TrainConfig, add_train_arguments, config_from_args
from facetrain.training.logger import MetricLogger, read_metrics
from facetrain.training.optim import (build_optimizer, build_scheduler, lr_factor, prepare_optimizer_state, split_parameters,
                                   step_unless)
from facetrain.training.state import capture_rng, restore_rng


def parse(*argv: str) -> TrainConfig:
    parser = argparse.ArgumentParser()
    add_train_arguments(parser)
    return config_from_args(parser.parse_args(list(argv)))


def test_adaface_flags_parse_with_their_meanings(tmp_path):
    cfg = parse("--data_root", "/d", "--train_data_path", "x/imgs", "--val_data_path", "v", "--arch", "ir_50",
                "--lr_milestones", "12,20,26", "--batch_size", "512", "--use_16bit", "--m", "0.4", "--h", "0.333",
                "--low_res_augmentation_prob", "0.2", "--save_all_models", "--weight_decay", "1e-4")
    assert cfg.lr_milestones == [12, 20, 26] and cfg.batch_size == 512 and cfg.use_16bit
    assert (cfg.data_root, cfg.train_data_path, cfg.val_data_path) == ("/d", "x/imgs", "v")
    assert (cfg.m, cfg.h, cfg.weight_decay, cfg.low_res_augmentation_prob) == (0.4, 0.333, 1e-4, 0.2)
    defaults = parse()
    assert defaults.weight_decay == 5e-4 and defaults.m is None and defaults.epochs == 24
    assert defaults.channels_last and defaults.precision == "auto"
    assert parse("--no_channels_last").channels_last is False
    cfg.save_json(tmp_path / "config.json")
    assert TrainConfig.from_dict(json.loads((tmp_path / "config.json").read_text())) == cfg


@pytest.mark.parametrize("argv, message", [
    (["--evaluate"], "start_from_model_statedict"),
    (["--use_16bit", "--precision", "fp32"], "contradicts"),
    (["--lr_milestones", "20,12"], "increasing"),
    (["--crop_augmentation_prob", "1.5"], "crop_augmentation_prob"),
])  # a missing --resume_from_checkpoint is found by rank 0 when the run is built (test_gpu_readiness)
def test_bad_flag_combinations_are_config_errors(argv, message):
    with pytest.raises(ConfigError, match=message):
        parse(*argv)


def test_output_dir_follows_adaface_layout(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = TrainConfig(prefix="run")
    first = cfg.resolve_output_dir(now=0)
    assert str(first) == "experiments/run_01-01_0"
    first.mkdir(parents=True)
    assert str(cfg.resolve_output_dir(now=0)) == "experiments/run_01-01_1"
    assert TrainConfig(output_dir="given").resolve_output_dir() == type(first)("given")


def test_batchnorm_parameters_have_no_weight_decay_and_head_kernel_has():
    model, head = build_model("mobilefacenet"), build_head("adaface", 512, 10)
    decay, no_decay = split_parameters(model)
    bn_params = {id(p) for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) for p in m.parameters()}
    prelu_params = {id(p) for m in model.modules() if isinstance(m, nn.PReLU) for p in m.parameters()}
    assert {id(p) for p in no_decay} == bn_params and prelu_params <= {id(p) for p in decay}
    assert len(decay) + len(no_decay) == len(list(model.parameters()))
    opt = build_optimizer(model, head, lr=0.1, momentum=0.9, weight_decay=1e-4)
    assert opt.param_groups[0]["weight_decay"] == 1e-4 and opt.param_groups[1]["weight_decay"] == 0.0
    assert any(p is head.kernel for p in opt.param_groups[0]["params"])
    assert opt.param_groups[0]["momentum"] == 0.9


def test_schedule_is_multistep_by_epoch_with_linear_warmup():
    p = nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=0.1)
    sched = build_scheduler(opt, steps_per_epoch=4, milestones=[2, 3], gamma=0.1, warmup_epochs=0.5)
    lrs = []
    for _ in range(16):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    expected = [0.05, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.01, 0.01, 0.01, 0.01, 0.001, 0.001, 0.001, 0.001]
    assert np.allclose(lrs, expected)
    # same schedule as torch's MultiStepLR stepped per epoch once warm-up is over
    opt2 = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.1)
    ref = torch.optim.lr_scheduler.MultiStepLR(opt2, milestones=[2, 3], gamma=0.1)
    per_epoch = []
    for _ in range(4):
        per_epoch.append(opt2.param_groups[0]["lr"])
        opt2.step()
        ref.step()
    assert np.allclose(lrs[4::4], per_epoch[1:])


def test_steps_per_epoch_with_accumulation_and_limits():
    assert batches_per_epoch(100, 8) == 12 and batches_per_epoch(100, 8, limit=5) == 5
    assert optimizer_steps_per_epoch(12, 1) == 12 and optimizer_steps_per_epoch(12, 5) == 3


def test_precision_choice_per_device():
    cpu = torch.device("cpu")
    assert resolve_precision("fp32", cpu) == "fp32" and resolve_precision("bf16", cpu) == "bf16"
    with pytest.raises(ConfigError, match="GPU"):
        resolve_precision("fp16", cpu)
    policy = Precision("bf16", cpu, channels_last=True)
    assert policy.autocast_dtype == torch.bfloat16 and not policy.make_scaler().is_enabled()
    assert policy.memory_format == torch.channels_last
    assert Precision("bf16", cpu, channels_last=False).memory_format == torch.contiguous_format
    with policy.autocast():
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.bfloat16


def test_sampler_shards_shuffles_by_epoch_and_resumes_mid_epoch():
    data = list(range(23))
    shards = [list(EpochSampler(data, 2, r, seed=5)) for r in range(2)]
    assert len(shards[0]) == len(shards[1]) == 11 and not set(shards[0]) & set(shards[1])
    s = EpochSampler(data, 1, 0, seed=5)
    s.set_position(0)
    epoch0 = list(s)
    assert {e for e, _ in epoch0} == {0}
    s.set_position(1)
    epoch1 = list(s)
    assert {e for e, _ in epoch1} == {1}
    assert [i for _, i in epoch1] != [i for _, i in epoch0] and sorted(epoch1) == sorted((1, i) for _, i in epoch0)
    s.set_position(0, start=8)
    assert list(s) == epoch0[8:] and len(s) == len(epoch0) - 8


def test_uint8_collation():
    images, labels = collate_uint8([(np.full((112, 112, 3), i, np.uint8), i) for i in range(3)])
    assert images.dtype == torch.uint8 and images.shape == (3, 112, 112, 3) and labels.tolist() == [0, 1, 2]


def test_rng_capture_restores_python_numpy_torch():
    state = capture_rng()
    a = (random.random(), np.random.rand(), torch.rand(1).item())
    restore_rng(state)
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == a


def test_metric_log_csv_truncate_and_plot(tmp_path):
    log = MetricLogger(tmp_path)
    for step in range(1, 6):
        log.log({"train_loss": 10.0 / step, "lr": 0.1}, step, 0)
    log.log({"val_acc": 0.7, "lfw_val_acc": 0.7}, 5, 0)
    log.truncate_after(3)
    log.log({"train_loss": 1.0}, 4, 0)
    png = log.plot()
    log.close()
    rows = read_metrics(tmp_path / "metrics.csv")
    assert [r["step"] for r in rows if r["name"] == "train_loss"] == [1, 2, 3, 4]
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_adaface_script_flags_are_accepted():
    import argparse

    from facetrain.training.config import add_train_arguments, config_from_args

    parser = argparse.ArgumentParser()
    add_train_arguments(parser)
    config = config_from_args(parser.parse_args(["--distributed_backend", "ddp", "--use_wandb", "--arch", "ir_50"]))
    assert config.arch == "ir_50" and config.use_wandb
    with pytest.raises(SystemExit):
        parser.parse_args(["--distributed_backend", "dp"])


@pytest.mark.parametrize("fast_bf16, expected", [(True, "bf16"), (False, "fp32")])
def test_auto_precision_follows_the_cpu_probe(monkeypatch, fast_bf16, expected):
    """Both branches of `auto` on a CPU, whatever this machine has: the probe is patched."""
    import facetrain.precision as precision

    monkeypatch.setattr(precision, "cpu_has_fast_bf16", lambda: fast_bf16)
    cpu = torch.device("cpu")
    assert resolve_precision("auto", cpu) == expected
    assert resolve_precision("auto", cpu, use_16bit=True) == expected  # no fp16 on CPUs: the flag means auto
    assert resolve_precision("fp32", cpu) == "fp32" and resolve_precision("bf16", cpu) == "bf16"


@pytest.mark.parametrize("supported, expected", [(True, "bf16"), (False, "fp32")])
def test_auto_precision_on_a_gpu(monkeypatch, supported, expected):
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: supported)
    gpu = torch.device("cuda", 0)
    assert resolve_precision("auto", gpu) == expected
    assert resolve_precision("auto", gpu, use_16bit=True) == "fp16"  # AdaFace's precision=16
    assert resolve_precision("fp16", gpu) == "fp16"


def test_optimizer_groups_carry_lr_momentum_and_zero_momentum_buffers():
    model, head = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4)), nn.Linear(4, 2)
    opt = build_optimizer(model, head, lr=0.25, momentum=0.9, weight_decay=5e-4)
    assert [(g["lr"], g["momentum"], g["weight_decay"], g["fused"]) for g in opt.param_groups] == [
        (0.25, 0.9, 5e-4, True), (0.25, 0.9, 0.0, True)]
    for group in opt.param_groups:
        for p in group["params"]:
            assert torch.equal(opt.state[p]["momentum_buffer"], torch.zeros_like(p))


def test_prepare_optimizer_state_after_loading_an_unfused_state():
    """A checkpoint of an unfused SGD (fused=False, foreach=True) is made fused again; groups without
    momentum get no buffers, the others do."""
    a, b = nn.Parameter(torch.ones(3)), nn.Parameter(torch.ones(2))
    opt = torch.optim.SGD([{"params": [a], "momentum": 0.0}, {"params": [b], "momentum": 0.9}], lr=0.1, foreach=True)
    prepare_optimizer_state(opt)
    assert [(g["fused"], g["foreach"]) for g in opt.param_groups] == [(True, None), (True, None)]
    assert "momentum_buffer" not in opt.state[a] and torch.equal(opt.state[b]["momentum_buffer"], torch.zeros(2))
    opt.state[b]["momentum_buffer"] = torch.full((2,), 3.0)  # a resumed run's momentum is kept
    prepare_optimizer_state(opt)
    assert torch.equal(opt.state[b]["momentum_buffer"], torch.full((2,), 3.0))


def test_a_step_with_found_inf_is_skipped():
    model, head = nn.Linear(3, 4), nn.Linear(4, 2)
    opt = build_optimizer(model, head, lr=0.5, momentum=0.0, weight_decay=0.0)
    for p in model.parameters():
        p.grad = torch.ones_like(p)
    before = [p.detach().clone() for p in model.parameters()]
    step_unless(opt, torch.tensor(1.0))
    assert all(torch.equal(p, q) for p, q in zip(model.parameters(), before))
    step_unless(opt, torch.tensor(0.0))
    assert all(torch.allclose(p, q - 0.5) for p, q in zip(model.parameters(), before))


def test_lr_factor_by_hand():
    assert lr_factor(2, 1, [2], 0.1, 0) == pytest.approx(0.1)  # one step per epoch: epoch 2 passed milestone 2
    assert lr_factor(1, 1, [2], 0.1, 0) == pytest.approx(1.0)
    assert lr_factor(2, 1, [1], 0.1, 5) == pytest.approx(0.1 * 3 / 5)  # warm-up ramp times the decay
    opt = torch.optim.SGD([nn.Parameter(torch.ones(1))], lr=0.2)
    build_scheduler(opt, steps_per_epoch=4, milestones=[2], gamma=0.1)  # no warm-up by default
    assert opt.param_groups[0]["lr"] == pytest.approx(0.2)
