"""End-to-end training on a tiny dataset: outputs, exact resume after SIGKILL, non-finite losses,
clear errors before any step, evaluate-only mode."""
import json
import shutil
from pathlib import Path

import pytest
import torch

from facetrain.checkpoint import load_backbone, load_checkpoint, save_checkpoint
from facetrain.cli import main
from facetrain.eval.verification import evaluate_checkpoint
from facetrain.models import build_model
from facetrain.precision import cpu_has_fast_bf16
from facetrain.training.build import build_run
from facetrain.training.config import TrainConfig
from facetrain.training.distributed import DistContext
from facetrain.training.logger import read_metrics
from facetrain.training.loop import Trainer
from crash_tools import CommandServer
from train_checks import assert_same_outputs, check_after_kill, strict_json
from train_fixtures import make_dataset, train_args



pytestmark = pytest.mark.usefixtures("one_torch_thread")


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
    # config.json keeps the requests (precision auto); results.json says what they resolved to, here
    assert json.loads((trained / "config.json").read_text())["precision"] == "auto"
    assert results["runtime"] == {"precision": "bf16" if cpu_has_fast_bf16() else "fp32", "channels_last": True,
                                  "device": "cpu", "world_size": 1, "num_workers": 0, "torch": torch.__version__}


def test_evaluate_only_mode(trained, data, tmp_path, capsys):
    code = main(["train", *train_args(data, tmp_path / "eval"), "--evaluate",
                 "--start_from_model_statedict", str(trained / "best.ckpt")])
    assert code == 0
    assert "lfw" in capsys.readouterr().out
    evaluation = json.loads((tmp_path / "eval" / "evaluation.json").read_text())
    assert set(evaluation["results"]) == {"lfw", "average"}


def _state(path: Path) -> dict:
    return load_checkpoint(path)["state_dict"]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """Runs `facetrain` commands in forked processes, killed at a chosen write event when asked."""
    with CommandServer(tmp_path_factory.mktemp("commands")) as s:
        yield s


def _resume(run: Path) -> list[str]:
    return ["--resume_from_checkpoint", str(run / "last.ckpt")]


def test_killed_run_resumes_to_the_same_weights(data, tmp_path, server):
    # tinynet has dropout: the torch RNG state must be restored too. No validation sets: weights only.
    flags = ["--epochs", "2", "--save_every_steps", "2", "--precision", "fp32", "--lr_milestones", "1",
             "--warmup_epochs", "0.5", "--limit_train_batches", "3", "--batch_size", "4",
             "--crop_augmentation_prob", "0.5", "--low_res_augmentation_prob", "0.5", "--val_data_path", "none"]
    reference = tmp_path / "reference"
    _, commits = server.trace(["train", *train_args(data, reference, *flags)])
    lasts = [n for n, path in commits if path.endswith("last.ckpt")]
    assert len(lasts) == 4  # steps 2 (mid-epoch 0), 3 (end of epoch 0), 4 (mid-epoch 1), 6 (end)
    killed = tmp_path / "killed"
    # deterministic: SIGKILLed halfway through writing the second last.ckpt (the end of epoch 0)
    assert server.run(["train", *train_args(data, killed, *flags)], kill_at=(lasts[0] + lasts[1]) // 2).killed
    assert any(p.name.startswith("last.ckpt.tmp-") for p in killed.iterdir())
    saved = load_checkpoint(killed / "last.ckpt")["facetrain"]["extra"]
    assert (saved["epoch"], saved["batch_in_epoch"], saved["global_step"]) == (0, 2, 2)
    resumed = server.run(["train", *train_args(data, killed, *flags, *_resume(killed))])
    assert resumed.returncode == 0, resumed.log[-2000:]
    assert_same_outputs(killed, reference)
    assert json.loads((killed / "results.json").read_text())["global_step"] == 6


def test_killed_between_best_and_last_checkpoint_resumes_consistently(data, tmp_path, server):
    # the first validation (step 2) improves on nothing: best.ckpt and last.ckpt are written together
    flags = ["--epochs", "1", "--limit_train_batches", "4", "--batch_size", "4", "--precision", "fp32",
             "--save_every_steps", "1", "--val_check_interval", "2"]
    reference = tmp_path / "reference"
    _, commits = server.trace(["train", *train_args(data, reference, *flags)])
    first_best = next(n for n, path in commits if path.endswith("best.ckpt"))
    second = first_best + 1 if (first_best + 1, str(reference / "last.ckpt")) in commits else first_best
    killed = tmp_path / "killed"
    assert server.run(["train", *train_args(data, killed, *flags)], kill_at=second).killed  # between the two
    check_after_kill(killed)  # last.ckpt does not record a best that best.ckpt does not hold
    resumed = server.run(["train", *train_args(data, killed, *flags, *_resume(killed))])
    assert resumed.returncode == 0, resumed.log[-2000:]
    assert_same_outputs(killed, reference)
    results = json.loads((killed / "results.json").read_text())
    best = load_checkpoint(killed / "best.ckpt")["facetrain"]["extra"]  # what the final test evaluated
    assert results["best_step"] == best["global_step"] == 2 and results["best_epoch"] == best["best"]["epoch"] == 0


def test_mid_epoch_validations_follow_the_schedule_and_resume_exactly(data, tmp_path, server):
    # 4 batches, validation every 2 (Lightning: int(4 x 0.5)): steps 2 and 4 of each epoch
    flags = ["--epochs", "2", "--limit_train_batches", "4", "--batch_size", "4", "--precision", "fp32",
             "--val_check_interval", "0.5"]
    reference = tmp_path / "reference"
    _, commits = server.trace(["train", *train_args(data, reference, *flags)])
    val_steps = [r["step"] for r in read_metrics(reference / "metrics.csv") if r["name"] == "val_acc"]
    assert val_steps == [2, 4, 6, 8]
    lasts = [n for n, path in commits if path.endswith("last.ckpt")]
    assert len(lasts) == 4  # a checkpoint after each validation
    killed = tmp_path / "killed"  # after the mid-epoch validation of epoch 0, inside the next checkpoint
    assert server.run(["train", *train_args(data, killed, *flags)], kill_at=(lasts[0] + lasts[1]) // 2).killed
    saved = load_checkpoint(killed / "last.ckpt")["facetrain"]["extra"]
    assert (saved["epoch"], saved["batch_in_epoch"], saved["global_step"]) == (0, 2, 2)
    resumed = server.run(["train", *train_args(data, killed, *flags, *_resume(killed))])
    assert resumed.returncode == 0, resumed.log[-2000:]
    assert_same_outputs(killed, reference)  # includes the logged rows: no validation logged twice
    best = json.loads((killed / "results.json").read_text())
    history = load_checkpoint(killed / "last.ckpt")["facetrain"]["extra"]["best"]["history"]
    assert [h["step"] for h in history] == [2, 4, 6, 8]
    assert best["best_val_acc"] == max(h["val_acc"] for h in history)


def test_validation_falls_at_the_end_of_an_accumulation_group(data, tmp_path):
    # every batch (Lightning's int 1), accumulation 2: weights change after batches 2 and 4 only
    out = tmp_path / "run"
    assert main(["train", *train_args(data, out, "--epochs", "1", "--limit_train_batches", "4", "--batch_size", "4",
                                      "--accumulate_grad_batches", "2", "--val_check_interval", "1")]) == 0
    assert [r["step"] for r in read_metrics(out / "metrics.csv") if r["name"] == "val_acc"] == [1, 2]


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
    model = build_model("tinynet")
    with torch.no_grad():
        next(model.parameters()).fill_(float("nan"))  # every loss is NaN from the first step
    save_checkpoint(tmp_path / "nan.ckpt", model)
    with pytest.warns(UserWarning, match="non-finite loss"):
        code = main(["train", *train_args(data, tmp_path / "nan", "--epochs", "1", "--max_nonfinite_steps", "3",
                                          "--start_from_model_statedict", str(tmp_path / "nan.ckpt"),
                                          "--val_data_path", "none")])  # validating NaN weights is its own error
    assert code == 1
    assert "non-finite losses in a row" in capsys.readouterr().err


def _small(data: Path, tmp_path: Path) -> dict:
    return dict(data_root=str(data), train_data_path="train/imgs", val_data_path="val", arch="tinynet",
                batch_size=8, num_workers=0, gpus=0, output_dir=str(tmp_path / "out"), progress=False, epochs=1)


def test_bad_inputs_fail_before_training(data, tmp_path, capsys, trained):
    base = train_args(data, tmp_path / "bad", "--epochs", "1")
    cases = [
        (["--custom_num_class", "3"], "does not match the 6 classes"),
        (["--custom_num_class", "100000000"], "does not match the 6 classes"),  # before allocating 200 GB
        (["--val_check_interval", "7"], "more batches than an epoch"),
        (["--train_data_path", "nowhere/imgs"], "not found"),
        (["--batch_size", "64"], "fewer than one batch"),
        (["--start_from_model_statedict", str(trained / "last.ckpt"), "--arch", "ir_18"], "tinynet"),
        (["--resume_from_checkpoint", str(trained / "last.ckpt"), "--arch", "ir_18"], "arch"),
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


def test_a_used_output_dir_is_refused_unless_resumed_or_overwritten(data, trained, tmp_path, capsys):
    out = tmp_path / "used"
    flags = ("--epochs", "1", "--limit_train_batches", "1")
    assert main(["train", *train_args(data, out, *flags)]) == 0
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    capsys.readouterr()
    assert main(["train", *train_args(data, out, *flags)]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"error: {out}: --output_dir is not empty") and "--overwrite" in err
    assert f"--resume_from_checkpoint {out / 'last.ckpt'}" in err and err.count("\n") == 1
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == before  # nothing touched
    # a checkpoint from elsewhere does not make the folder ours either
    assert main(["train", *train_args(data, out, *flags, "--epochs", "3", *_resume(trained))]) == 1
    assert "not empty" in capsys.readouterr().err
    assert main(["train", *train_args(data, out, *flags, "--overwrite", *_resume(out))]) == 1
    assert "--overwrite deletes the run" in capsys.readouterr().err


def test_overwrite_replaces_only_the_previous_runs_files(data, tmp_path, capsys):
    out = tmp_path / "reused"
    assert main(["train", *train_args(data, out, "--epochs", "1", "--limit_train_batches", "2",
                                      "--save_all_models")]) == 0
    assert (out / "best.ckpt").exists() and (out / "epoch=00.ckpt").exists()
    (out / "notes.txt").write_text("mine")
    (out / "last.ckpt.tmp-999999999").write_text("left by a killed run")
    with pytest.warns(UserWarning, match="without validation"):  # and without a best checkpoint
        assert main(["train", *train_args(data, out, "--epochs", "1", "--limit_train_batches", "1",
                                          "--val_data_path", "none", "--overwrite")]) == 0
    assert "--overwrite: deleted the previous run's results.json, best.ckpt, last.ckpt" in capsys.readouterr().out
    assert sorted(p.name for p in out.iterdir()) == [".facetrain.lock", "config.json", "curves.png", "last.ckpt", "metrics.csv",
                                                     "notes.txt", "results.json", "train.log",
                                                     "training_samples.jpg"]
    assert (out / "notes.txt").read_text() == "mine"
    assert {r["step"] for r in read_metrics(out / "metrics.csv")} == {1}  # the new run's rows only
    results = strict_json(out / "results.json")
    assert results["best_checkpoint"] == "" and results["best_val_acc"] is None and results["best_step"] == -1


def test_resuming_a_finished_run(data, trained, tmp_path, capsys):
    trained = Path(shutil.copytree(trained, tmp_path / "finished"))
    files = {p.name: p.stat().st_mtime_ns for p in trained.iterdir()}
    # shorter than what was trained: refused, nothing written
    assert main(["train", *train_args(data, trained, "--epochs", "1", *_resume(trained))]) == 1
    err = capsys.readouterr().err
    assert "has trained 2 epoch(s), more than --epochs 1" in err and err.count("\n") == 1
    assert {p.name: p.stat().st_mtime_ns for p in trained.iterdir()} == files
    # as long: nothing to train, the final test again (e.g. after a kill before results.json)
    results = (trained / "results.json").read_text()
    assert main(["train", *train_args(data, trained, "--epochs", "2", "--save_all_models",
                                      "--accumulate_grad_batches", "2", "--limit_train_batches", "3",
                                      *_resume(trained))]) == 0
    assert "nothing left but the final test" in capsys.readouterr().out
    assert json.loads((trained / "results.json").read_text())["best_step"] == json.loads(results)["best_step"]
