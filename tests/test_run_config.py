"""A run's folder says what ran and replays it: config.json holds the values used (the head's m/h/s
resolved), `--config` is strict and overridden by flags, and replaying config.json into a new folder
gives the same weights. Also the run's own log (train.log), its sample grid, and W&B offline."""
import json

import cv2
import pytest
import torch

from facetrain.checkpoint import load_checkpoint
from facetrain.cli import main
from train_fixtures import make_dataset, train_args


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_dataset(tmp_path_factory.mktemp("faces"))


@pytest.fixture(scope="module")
def first(data, tmp_path_factory):
    out = tmp_path_factory.mktemp("first") / "run"
    assert main(["train", *train_args(data, out, "--epochs", "1", "--limit_train_batches", "3", "--head", "adaface",
                                      "--photometric_augmentation_prob", "0.5")]) == 0
    return out


def test_config_json_holds_the_values_used_and_replays_exactly(data, first, tmp_path):
    config = json.loads((first / "config.json").read_text())
    assert (config["m"], config["h"], config["s"], config["t_alpha"]) == (0.4, 0.333, 64.0, 0.01)
    assert config["photometric_augmentation_prob"] == 0.5 and config["num_workers"] == 0
    replay = tmp_path / "replay"
    assert main(["train", "--config", str(first / "config.json"), "--output_dir", str(replay)]) == 0
    a, b = (load_checkpoint(d / "last.ckpt")["state_dict"] for d in (first, replay))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert json.loads((replay / "config.json").read_text()) == {**config, "output_dir": str(replay)}


def test_flags_override_the_config_file_and_unknown_keys_are_refused(data, first, tmp_path, capsys):
    config = json.loads((first / "config.json").read_text())
    yaml_path = tmp_path / "run.yaml"
    yaml_path.write_text("".join(f"{k}: {json.dumps(v)}\n" for k, v in {**config, "lr": 0.05}.items()))
    out = tmp_path / "override"
    assert main(["train", "--config", str(yaml_path), "--output_dir", str(out), "--lr", "0.02",
                 "--limit_train_batches", "1"]) == 0
    used = json.loads((out / "config.json").read_text())
    assert (used["lr"], used["limit_train_batches"], used["m"]) == (0.02, 1, 0.4)
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({**config, "learning_rate": 0.1, "output_dir": str(tmp_path / "never")}))
    assert main(["train", "--config", str(bad)]) == 1
    assert capsys.readouterr().err.strip() == f"error: {bad}: unknown option 'learning_rate'"
    (tmp_path / "broken.json").write_text("{")
    assert main(["train", "--config", str(tmp_path / "broken.json")]) == 1
    assert "broken.json: not valid JSON" in capsys.readouterr().err
    assert not (tmp_path / "never").exists()


def test_run_log_and_training_samples(first):
    text = (first / "train.log").read_text()
    assert "1 classes" not in text and "6 classes, 3 batches of 8" in text and "final test (best.ckpt, fp32)" in text
    grid = cv2.imread(str(first / "training_samples.jpg"))
    assert grid.shape == (4 * 112, 8 * 112, 3)  # the first 32 of 48 samples, 8 a row
    tiles = grid.reshape(4, 112, 8, 112, 3).swapaxes(1, 2).reshape(32, -1)
    assert (tiles.mean(axis=1) > 20).all()  # every tile holds a face-like pattern, none left black


@pytest.mark.slow
def test_wandb_logs_offline(data, tmp_path, monkeypatch):
    data_root = data
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    out = tmp_path / "tracked"
    assert main(["train", *train_args(data, out, "--epochs", "1", "--limit_train_batches", "2", "--use_wandb",
                                      "--log_every", "1")]) == 0
    records = list((out / "wandb").glob("offline-run-*/run-*.wandb"))
    assert len(records) == 1  # one offline run, in the run folder, for `wandb sync` later
    data = records[0].read_bytes()  # protobuf records: names and strings appear as plain bytes
    for expected in (b"adaface_face_recognition", out.name.encode(), b"train_loss", b"val_acc", b"lfw_val_acc"):
        assert expected in data, expected
    # resumed in its folder: the same W&B run continues (same id), not a second run of the same name
    run_id = (out / "wandb" / "facetrain-run-id").read_text().strip()
    assert records[0].name == f"run-{run_id}.wandb"
    assert main(["train", *train_args(data_root, out, "--epochs", "2", "--limit_train_batches", "2", "--use_wandb",
                                      "--log_every", "1", "--resume_from_checkpoint", str(out / "last.ckpt"))]) == 0
    records = list((out / "wandb").glob("offline-run-*/run-*.wandb"))
    assert len(records) == 2 and {r.name for r in records} == {f"run-{run_id}.wandb"}
