"""Which epoch becomes best.ckpt, and what a resumed run does to the best choice and to metrics.csv.

The validation accuracies are scripted (the real validation runs, then its average accuracy is
replaced by the next value of a list), so the best epoch is known in advance and is neither the
first nor the last.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import facetrain.training.loop as loop
from facetrain.checkpoint import load_checkpoint
from facetrain.cli import main
from facetrain.training.logger import read_metrics
from train_fixtures import make_dataset, train_args

SCRIPT = [0.55, 0.9, 0.7]  # best: epoch 1
FLAGS = ("--epochs", "3", "--limit_train_batches", "2", "--save_all_models", "--precision", "fp32",
         "--crop_augmentation_prob", "0.5", "--val_check_interval", "1.0")  # one validation per epoch


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _scripted(monkeypatch, accuracies):
    real, left = loop.validate, list(accuracies)

    def validate(*args, **kwargs):
        results = real(*args, **kwargs)
        if left:  # afterwards (the final test of a resumed run) the real numbers
            value = left.pop(0)
            for name in results:
                results[name]["accuracy"] = value
        return results

    monkeypatch.setattr(loop, "validate", validate)
    return left


def _weights(path: Path) -> dict:
    return {k: v for k, v in load_checkpoint(path)["state_dict"].items() if k.startswith("model.")}


def _same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_dataset(tmp_path_factory.mktemp("faces"))


@pytest.fixture(scope="module")
def run(data, tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the resumed run (the autouse fixture only covers test functions)
    with pytest.MonkeyPatch.context() as mp:
        left = _scripted(mp, SCRIPT)
        assert main(["train", *train_args(data, out, *FLAGS)]) == 0
        assert left == []
    torch.set_num_threads(threads)
    return out


def test_best_checkpoint_is_the_best_epoch(run):
    epochs = [_weights(run / f"epoch={e:02d}.ckpt") for e in range(3)]
    assert not _same(epochs[0], epochs[1]) and not _same(epochs[1], epochs[2])
    assert _same(_weights(run / "best.ckpt"), epochs[1])
    results = json.loads((run / "results.json").read_text())
    assert results["best_epoch"] == 1 and results["best_val_acc"] == pytest.approx(0.9)
    assert results["test"]["lfw"]["accuracy"] == pytest.approx(0.9)  # the final test is the best epoch's
    val = [r["value"] for r in read_metrics(run / "metrics.csv") if r["name"] == "val_acc"]
    assert val == pytest.approx(SCRIPT)


def _rows(path: Path) -> list[tuple]:
    return [(r["step"], r["epoch"], r["name"]) for r in read_metrics(path)]


def test_resume_keeps_the_best_choice_and_rewrites_the_log_from_its_step(run, data, tmp_path, monkeypatch):
    """Resume in the same folder from the end of epoch 1: the restored best (0.9 at epoch 1) beats
    epoch 2's 0.7, and the log rows of the repeated epoch appear once."""
    resumed = tmp_path / "resumed"
    resumed.mkdir()
    for name in ("metrics.csv", "epoch=01.ckpt", "best.ckpt"):
        (resumed / name).write_bytes((run / name).read_bytes())
    left = _scripted(monkeypatch, SCRIPT[2:])
    assert main(["train", *train_args(data, resumed, *FLAGS,
                                      "--resume_from_checkpoint", str(resumed / "epoch=01.ckpt"))]) == 0
    assert left == []
    results = json.loads((resumed / "results.json").read_text())
    assert results["best_epoch"] == 1 and results["best_val_acc"] == pytest.approx(0.9)
    assert _same(_weights(resumed / "best.ckpt"), _weights(run / "epoch=01.ckpt"))
    # exact resume: epoch 2 retrained from the epoch-1 state gives the uninterrupted run's weights
    assert _same(_weights(resumed / "epoch=02.ckpt"), _weights(run / "epoch=02.ckpt"))
    assert _rows(resumed / "metrics.csv") == _rows(run / "metrics.csv")
    losses = {(r["step"], r["name"]): r["value"] for r in read_metrics(run / "metrics.csv") if "loss" in r["name"]}
    again = {(r["step"], r["name"]): r["value"] for r in read_metrics(resumed / "metrics.csv") if "loss" in r["name"]}
    assert again == pytest.approx(losses, rel=1e-6)
