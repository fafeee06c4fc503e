"""End-to-end training on a tiny dataset: outputs, exact resume after SIGKILL, non-finite losses,
clear errors before any step, evaluate-only mode."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from facetrain.checkpoint import load_backbone, load_checkpoint
from facetrain.cli import main
from facetrain.eval.verification_report import evaluate_checkpoint
from facetrain.train.config import TrainConfig
from facetrain.train.distributed import DistContext
from facetrain.train.logger import read_metrics
from facetrain.train.loop import Trainer
from facetrain.train.run import build_run
from train_fixtures import make_dataset, train_args

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def one_thread():
    """Our processes share 2 cores with others: one intra-op thread avoids OpenMP oversubscription."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_dataset(tmp_path_factory.mktemp("faces"))


@pytest.fixture(scope="module")
def trained(data, tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    torch.set_num_threads(1)
    code = main(["train", *train_args(data, out, "--epochs", "2", "--limit_train_batches", "3",
                                      "--accumulate_grad_batches", "2", "--lr_milestones", "1",
                                      "--save_all_models", "--crop_augmentation_prob", "0.2",
                                      "--low_res_augmentation_prob", "0.2", "--photometric_augmentation_prob", "0.2")])
    assert code == 0
    return out


def test_training_writes_checkpoints_logs_and_results(trained, data):
    names = {p.name for p in trained.iterdir()}
    assert {"config.json", "metrics.csv", "curves.png", "last.ckpt", "best.ckpt", "results.json",
            "epoch=00.ckpt", "epoch=01.ckpt"} <= names
    results = json.loads((trained / "results.json").read_text())
    # 3 batches with accumulation 2 -> 2 optimizer steps per epoch (the last group is partial)
    assert results["global_step"] == 4 and results["epochs_completed"] == 2
    assert 0.0 <= results["test"]["lfw"]["accuracy"] <= 1.0 and results["test"]["lfw"]["pairs"] > 0
    # the final test reuses the best epoch's fp32 validation: it must be what evaluating best.ckpt gives
    independent = evaluate_checkpoint(trained / "best.ckpt", data / "val", progress=False)
    for key in ("accuracy", "std", "best_threshold", "mean_norm"):  # the norm pins down the weights
        assert results["test"]["lfw"][key] == pytest.approx(independent["lfw"][key], rel=1e-5)
    rows = read_metrics(trained / "metrics.csv")
    names = {r["name"] for r in rows}
    assert {"train_loss", "lr", "img_per_sec", "val_acc", "lfw_val_acc", "lfw_best_threshold"} <= names
    lrs = {r["step"]: r["value"] for r in rows if r["name"] == "lr"}
    assert lrs[2] == pytest.approx(0.1) and lrs[4] == pytest.approx(0.01)  # milestone at epoch 1
    ckpt = load_checkpoint(trained / "last.ckpt")
    assert any(k.startswith("model.") for k in ckpt["state_dict"]) and "head.kernel" in ckpt["state_dict"]
    assert "head.batch_mean" in ckpt["state_dict"] and ckpt["hyper_parameters"]["arch"] == "tinynet"
    assert ckpt["hyper_parameters"]["m"] == 0.4 and ckpt["hyper_parameters"]["h"] == 0.333
    model, info = load_backbone(trained / "best.ckpt")
    assert info["arch"] == "tinynet"
    assert json.loads((trained / "config.json").read_text())["accumulate_grad_batches"] == 2


def test_evaluate_only_mode(trained, data, tmp_path, capsys):
    code = main(["train", *train_args(data, tmp_path / "eval"), "--evaluate",
                 "--start_from_model_statedict", str(trained / "best.ckpt")])
    assert code == 0
    assert "lfw" in capsys.readouterr().out
    evaluation = json.loads((tmp_path / "eval" / "evaluation.json").read_text())
    assert set(evaluation["results"]) == {"lfw", "average"}


def _state(path: Path) -> dict:
    return load_checkpoint(path)["state_dict"]


def test_killed_run_resumes_to_the_same_weights(data, tmp_path):
    # tinynet has dropout: the torch RNG state must be restored too. No validation sets: weights only.
    flags = ["--epochs", "2", "--save_every_steps", "2", "--precision", "fp32", "--lr_milestones", "1",
             "--warmup_epochs", "0.5", "--limit_train_batches", "3", "--batch_size", "4",
             "--crop_augmentation_prob", "0.5", "--low_res_augmentation_prob", "0.5", "--val_data_path", "none"]
    killed = tmp_path / "killed"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, str(ROOT / "main.py"), *train_args(data, killed, *flags)],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 240
    while not (killed / "last.ckpt").exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL, "the run finished before it could be killed"
    saved = load_checkpoint(killed / "last.ckpt")["facetrain"]["extra"]
    assert saved["global_step"] < 6  # killed before the end (normally mid-epoch 0, after step 2)
    resumed = subprocess.run([sys.executable, str(ROOT / "main.py"), *train_args(
        data, killed, *flags, "--resume_from_checkpoint", str(killed / "last.ckpt"))], env=env,
        capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr[-2000:]

    reference = tmp_path / "reference"
    with pytest.warns(UserWarning, match="without validation"):
        assert main(["train", *train_args(data, reference, *flags)]) == 0
    a, b = _state(killed / "last.ckpt"), _state(reference / "last.ckpt")
    assert a.keys() == b.keys()
    for key in a:
        assert torch.allclose(a[key].float(), b[key].float(), rtol=0, atol=1e-6), key
    ra = json.loads((killed / "results.json").read_text())
    rb = json.loads((reference / "results.json").read_text())
    assert ra["global_step"] == rb["global_step"] == 6


def test_nonfinite_loss_skips_the_step_and_restores_buffers(data, tmp_path):
    config = TrainConfig(**{**_small(data, tmp_path), "head": "adaface"})
    trainer = Trainer(build_run(config, DistContext()))
    params = [p.detach().clone() for p in trainer.run.net.parameters()]
    buffers = _buffers(trainer.run.net)
    images, labels = next(iter(trainer.run.loader))
    trainer.snapshot.take()
    loss = trainer.train_step(images, labels, group_size=1, last_in_group=True)
    assert torch.isfinite(loss)
    assert not all(torch.equal(b, s) for b, s in zip(_buffers(trainer.run.net), buffers))  # the forward moved them
    assert trainer.optimizer_step(torch.tensor(float("nan"))).item() == 1.0
    assert all(torch.equal(p, q) for p, q in zip(trainer.run.net.parameters(), params))
    assert all(torch.equal(b, s) for b, s in zip(_buffers(trainer.run.net), buffers))
    assert all(p.grad is None for p in trainer.run.net.parameters())
    trainer.train_step(images, labels, group_size=1, last_in_group=True)
    assert trainer.optimizer_step(loss).item() == 0.0
    assert not all(torch.equal(p, q) for p, q in zip(trainer.run.net.parameters(), params))
    assert not all(torch.equal(b, s) for b, s in zip(_buffers(trainer.run.net), buffers))


def _buffers(module: torch.nn.Module) -> list[torch.Tensor]:
    return [b.detach().clone() for b in module.buffers() if b.is_floating_point()]


def test_diverging_run_stops_with_a_clear_error(data, tmp_path, capsys):
    with pytest.warns(UserWarning, match="non-finite loss"):
        code = main(["train", *train_args(data, tmp_path / "nan", "--lr", "1e30", "--epochs", "1",
                                          "--max_nonfinite_steps", "3")])
    assert code == 1
    assert "non-finite losses in a row" in capsys.readouterr().err


def _small(data: Path, tmp_path: Path) -> dict:
    return dict(data_root=str(data), train_data_path="train/imgs", val_data_path="val", arch="tinynet",
                batch_size=8, num_workers=0, gpus=0, output_dir=str(tmp_path / "out"), progress=False, epochs=1)


def test_bad_inputs_fail_before_training(data, tmp_path, capsys, trained):
    base = train_args(data, tmp_path / "bad", "--epochs", "1")
    cases = [
        (["--custom_num_class", "3"], "label"),
        (["--train_data_path", "nowhere/imgs"], "not found"),
        (["--batch_size", "64"], "fewer than one batch"),
        (["--start_from_model_statedict", str(trained / "last.ckpt"), "--arch", "ir_18"], "tinynet"),
        (["--resume_from_checkpoint", str(trained / "last.ckpt"), "--custom_num_class", "9"], "class_num"),
    ]
    for extra, message in cases:
        assert main(["train", *base, *extra]) == 1, extra
        err = capsys.readouterr().err
        assert err.startswith("error:") and message in err, (extra, err)
    assert not (tmp_path / "bad" / "last.ckpt").exists()


def test_training_without_validation_sets_warns_and_trains(data, tmp_path):
    with pytest.warns(UserWarning, match="without validation"):
        code = main(["train", *train_args(data, tmp_path / "noval", "--epochs", "1", "--limit_train_batches", "1"),
                     "--val_data_path", "missing"])
    assert code == 0
    results = json.loads((tmp_path / "noval" / "results.json").read_text())
    assert results["best_checkpoint"] == "" and results["test"] == {} and results["global_step"] == 1
