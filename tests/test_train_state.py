"""The resumable training state: what a checkpoint holds (Lightning-like keys), what it gives back,
the RNG streams it restores, and the runs it refuses to continue."""
from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from facetrain.checkpoint import load_checkpoint, save_checkpoint
from facetrain.errors import ConfigError
from facetrain.heads import build_head
from facetrain.models import build_model
from facetrain.training.optim import build_optimizer, build_scheduler
from facetrain.training.state import (
    BestResult,
    Position,
    TrainingState,
    capture_rng,
    load_training_state,
    restore_rng,
    save_training_state,
)

CLASSES = 5


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    torch.manual_seed(0)
    model = build_model("tinynet")
    head = build_head("adaface", model.embedding_size, CLASSES, h=0.5)
    head.margin.batch_mean.fill_(33.0)  # a trained, non-default statistic
    optimizer = build_optimizer(model, head, lr=0.1, momentum=0.9, weight_decay=5e-4)
    scheduler = build_scheduler(optimizer, steps_per_epoch=4, milestones=[2], gamma=0.1)
    for _ in range(3):
        optimizer.step()
        scheduler.step()
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    best = BestResult(0.75, 1, "/run/best.ckpt", [{"epoch": 0, "val_acc": 0.5}, {"epoch": 1, "val_acc": 0.75}],
                      threshold_l2=1.2, threshold_cosine=0.4)
    config = {"arch": "tinynet", "m": 0.4, "h": 0.5, "s": 64.0, "t_alpha": 0.01, "lr": 0.1,
              "lr_milestones": (2,), "epochs": 3}
    rngs = [capture_rng(), capture_rng()]
    path = tmp_path_factory.mktemp("state") / "last.ckpt"
    save_training_state(path, model, head, optimizer, scheduler, scaler, Position(1, 2, 7), best, config, rngs, 2)
    return path, model, head, optimizer, scheduler


def test_the_checkpoint_layout(saved):
    path, model, head, optimizer, scheduler = saved
    raw = load_checkpoint(path)
    extra = raw["facetrain"]["extra"]
    assert extra["state_version"] == 1 and extra["world_size"] == 2 and len(extra["rng_per_rank"]) == 2
    assert (extra["epoch"], extra["batch_in_epoch"], extra["global_step"]) == (1, 2, 7)
    assert extra["config"]["lr_milestones"] == [2]  # tuples stored as lists (plain data)
    assert extra["best"] == {"metric": 0.75, "epoch": 1, "path": "/run/best.ckpt",
                             "history": [{"epoch": 0, "val_acc": 0.5}, {"epoch": 1, "val_acc": 0.75}],
                             "threshold_l2": 1.2, "threshold_cosine": 0.4}
    assert extra["optimizer_states"][0]["param_groups"] == optimizer.state_dict()["param_groups"]
    assert extra["lr_schedulers"][0]["last_epoch"] == scheduler.state_dict()["last_epoch"] == 3
    hp = raw["hyper_parameters"]
    # the model and head report arch and resolved m/h/s/t_alpha themselves; the rest comes from the config
    assert (hp["arch"], hp["head"], hp["class_num"], hp["h"], hp["m"]) == ("tinynet", "adaface", CLASSES, 0.5, 0.4)
    assert hp["lr"] == 0.1 and hp["lr_milestones"] == [2] and hp["epoch"] == 1 and hp["global_step"] == 7
    assert set(raw["state_dict"]) == {f"model.{k}" for k in model.state_dict()} | {f"head.{k}" for k in head.state_dict()}


def test_loading_gives_back_what_was_saved(saved):
    path, model, head, _, _ = saved
    state = load_training_state(path, "tinynet", "adaface", CLASSES)
    assert isinstance(state, TrainingState)
    assert state.position == Position(1, 2, 7)
    assert state.best == BestResult(0.75, 1, "/run/best.ckpt", [{"epoch": 0, "val_acc": 0.5},
                                                                 {"epoch": 1, "val_acc": 0.75}], 1.2, 0.4)
    assert state.model_state.keys() == model.state_dict().keys()
    assert all(torch.equal(state.model_state[k], v) for k, v in model.state_dict().items())
    assert state.head_state.keys() == head.state_dict().keys() and state.head_state["batch_mean"].item() == 33.0
    assert state.hyper_parameters["arch"] == "tinynet"


@pytest.mark.parametrize("arch, head, classes, wrong", [("ir_18", "adaface", CLASSES, "arch=tinynet"),
                                                        ("tinynet", "arcface", CLASSES, "head=adaface"),
                                                        ("tinynet", "adaface", 9, "class_num=5")])
def test_a_different_run_is_refused(saved, arch, head, classes, wrong):
    path = saved[0]
    with pytest.raises(ConfigError, match=f"was trained with {wrong}"):
        load_training_state(path, arch, head, classes)


def test_a_weights_only_checkpoint_cannot_be_resumed(saved, tmp_path):
    _, model, head, _, _ = saved
    save_checkpoint(tmp_path / "weights.ckpt", model, head)
    with pytest.raises(ConfigError, match="not a facetrain training checkpoint.*--start_from_model_statedict"):
        load_training_state(tmp_path / "weights.ckpt", "tinynet", "adaface", CLASSES)


def _draws():
    return random.random(), np.random.rand(), float(np.random.standard_normal()), torch.rand(3).tolist()


def test_rng_state_round_trip_through_a_weights_only_load(tmp_path):
    random.seed(1)
    np.random.seed(2)
    torch.manual_seed(3)
    np.random.standard_normal()  # leaves numpy's cached gaussian in the state
    state = capture_rng()
    expected = _draws()
    torch.save(state, tmp_path / "rng.pt")
    _draws()
    restore_rng(torch.load(tmp_path / "rng.pt", weights_only=True))
    assert _draws() == expected


def test_optional_entries_scaler_and_the_model_s_own_hyper_parameters(tmp_path):
    """A Partial FC run's optimizer state and shard entry, the logged sums and an enabled loss scaler are
    stored as given; the config's spelling of arch and its unresolved None hyper-parameters do not
    replace what the model and head report (canonical arch, resolved m/h/s/t_alpha)."""
    model = build_model("tinynet")
    head = build_head("adaface", model.embedding_size, CLASSES, h=0.5)
    optimizer = build_optimizer(model, head, lr=0.1, momentum=0.9, weight_decay=5e-4)
    scheduler = build_scheduler(optimizer, steps_per_epoch=4, milestones=[2], gamma=0.1)
    scaler = torch.amp.GradScaler("cpu", init_scale=1024.0)
    config = {"arch": "ir_100", "m": None, "h": None, "s": None, "t_alpha": None, "lr": 0.1}
    pfc = {"shards": ["pfc_rank0.pt"], "world_size": 1}
    path = tmp_path / "pfc.ckpt"
    save_training_state(path, model, head, optimizer, scheduler, scaler, Position(2, 0, 9), BestResult(), config,
                        [capture_rng(torch.device("cpu"))], 1, optimizer_state={"state": {}, "param_groups": []},
                        partial_fc=pfc, loss_totals={"loss": 12.5, "steps": 4.0})
    raw = load_checkpoint(path)
    extra = raw["facetrain"]["extra"]
    assert extra["partial_fc"] == pfc and extra["loss_totals"] == {"loss": 12.5, "steps": 4.0}
    assert extra["optimizer_states"] == [{"state": {}, "param_groups": []}]
    assert extra["scaler"]["scale"] == 1024.0 and extra["best"]["metric"] == float("-inf")
    assert "cuda_device" not in extra["rng_per_rank"][0]  # a CPU process has no CUDA generator to save
    hp = raw["hyper_parameters"]
    assert (hp["arch"], hp["m"], hp["h"], hp["s"], hp["t_alpha"]) == ("tinynet", 0.4, 0.5, 64.0, 0.01)
    assert (hp["lr"], hp["epoch"], hp["global_step"]) == (0.1, 2, 9)


def test_a_run_without_optional_entries_stores_none_of_them(saved):
    extra = load_checkpoint(saved[0])["facetrain"]["extra"]
    assert "partial_fc" not in extra and extra["loss_totals"] == {}
    assert extra["scaler"] == {}  # a disabled scaler has no state


def test_rng_restore_on_a_cpu_device(tmp_path):
    torch.manual_seed(5)
    state = capture_rng(torch.device("cpu"))
    expected = _draws()
    restore_rng(state, torch.device("cpu"))
    assert _draws() == expected


def test_checkpoints_of_other_tools_cannot_be_resumed(saved, tmp_path):
    """AdaFace's own checkpoints (a state_dict, no facetrain entry) and one whose facetrain entry has
    no `extra` are refused with the hint, not a crash."""
    state_dict = load_checkpoint(saved[0])["state_dict"]
    for name, content in (("adaface.ckpt", {"state_dict": state_dict}),
                          ("bare.ckpt", {"state_dict": state_dict, "facetrain": {}})):
        torch.save(content, tmp_path / name)
        with pytest.raises(ConfigError, match=r"not a facetrain training checkpoint \(no optimizer/scheduler state "
                                              r"to resume from\); use --start_from_model_statedict to start from its weights"):
            load_training_state(tmp_path / name, "tinynet", "adaface", CLASSES)


def test_a_training_checkpoint_without_hyper_parameters_loads(saved, tmp_path):
    raw = load_checkpoint(saved[0])
    del raw["hyper_parameters"]
    torch.save(raw, tmp_path / "no_hp.ckpt")
    state = load_training_state(tmp_path / "no_hp.ckpt", "ir_18", "arcface", 99)  # nothing to compare against
    assert state.hyper_parameters == {} and state.position == Position(1, 2, 7)
