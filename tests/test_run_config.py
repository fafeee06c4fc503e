"""A run's folder says what ran and replays it: config.json holds the values used (the head's m/h/s
resolved), `--config` is strict and overridden by flags, and replaying config.json into a new folder
gives the same weights. Also the run's own log (train.log), its sample grid, and W&B offline."""
import dataclasses
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from facetrain.checkpoint import load_checkpoint
from facetrain.cli import main
from facetrain.data.formats.image_folder import ImageFolder
from facetrain.data.formats.memfile import write_training_memfile
from facetrain.errors import ConfigError
from facetrain.training.config import TrainConfig
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


# --- a --config file is checked as strictly as the flags: one line, exit 1, nothing written

def _refused(argv: list[str], root, capsys) -> str:
    before = sorted(p.relative_to(root).as_posix() for p in root.rglob("*"))
    capsys.readouterr()
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ") and "Traceback" not in err, err
    assert sorted(p.relative_to(root).as_posix() for p in root.rglob("*")) == before
    return err


@pytest.mark.parametrize("name, text, fragment", [
    ("a.json", '{"batch_size": "16"}', "--batch_size must be a whole number, got '16'"),
    ("a.json", '{"lr_milestones": "8,12"}', "--lr_milestones must be a list of whole numbers, got '8,12'"),
    ("a.json", '{"seed": 1.5}', "--seed must be a whole number, got 1.5"),
    ("a.json", '{"batch_size": 1e400}', "--batch_size must be a whole number, got inf"),
    ("a.json", '{"lr": 1e400}', "--lr must be a finite number, got inf"),
    ("a.json", '{"lr_milestones": [1e999]}', "--lr_milestones must be a list of whole numbers, got [inf]"),
    ("a.json", '{"lr": NaN}', "--lr must be a finite number, got nan"),
    ("a.json", '{"use_16bit": 1}', "--use_16bit must be true or false, got 1"),
    ("a.json", '{"m": "0.4"}', "--m must be a finite number or null, got '0.4'"),
    ("a.json", '{"data_root": null}', "--data_root must be a string, got None"),
    ("a.json", '[1, 2]', "a config file holds a mapping"),
    ("a.json", "[" * 100000, "not valid JSON"),
    ("a.json", "{\"lr\": 0.1}".encode("utf-16").decode("latin-1"), "a config file is UTF-8 text"),
    ("a.yaml", "batch_size: [1, 2\n", "a.yaml: not valid YAML"),
    ("a.yaml", "lr: !!python/object/apply:os.system ['touch {D}/ran']\n", "a.yaml: not valid YAML"),
    ("a.yaml", "1: 2\n", "a config file holds a mapping of option names"),
    ("a.yaml", "lr: 1.0e+400\n", "--lr must be a finite number, got inf"),
    # YAML aliases: 9^12 references in a few hundred bytes, quoted without expanding them
    ("a.yaml", "lr_milestones: [&l0 [1, 1, 1, 1, 1, 1, 1, 1, 1], " + ", ".join(
        f"&l{k} [{', '.join([f'*l{k - 1}'] * 9)}]" for k in range(1, 13)) + "]\n",
     "--lr_milestones must be a list of whole numbers, got [[1, 1, 1, 1, ...], [[...], [...], [...], [...], ...], "),
])
def test_config_file_values_are_checked_like_flags(tmp_path, capsys, name, text, fragment):
    path = tmp_path / name
    path.write_text(text.replace("{D}", str(tmp_path)), encoding="latin-1")
    err = _refused(["train", "--config", str(path), "--output_dir", str(tmp_path / "run")], tmp_path, capsys)
    assert fragment in err and str(path) in err, err
    assert not (tmp_path / "ran").exists()


_JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
                     lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=2),
                     max_leaves=4)


@settings(max_examples=150, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(key=st.sampled_from(sorted(f.name for f in dataclasses.fields(TrainConfig))), value=_JSON)
def test_any_config_value_is_one_line_exit_1_nothing_written(tmp_path, capsys, key, value):
    """No data there, so every config is refused, by its checks or by the missing data, in one line."""
    root = Path(tempfile.mkdtemp(dir=tmp_path))
    base = {"data_root": str(root / "absent"), "output_dir": str(root / "run"), "arch": "tinynet", "gpus": 0,
            "num_workers": 0}
    (root / "c.json").write_text(json.dumps({**base, key: value}))
    cwd = os.getcwd()
    os.chdir(root)  # relative paths a value may name stay inside the example's folder
    try:
        _refused(["train", "--config", str(root / "c.json")], root, capsys)
    finally:
        os.chdir(cwd)


# --- config.json describes the run; checkpoints know their data

def _resumed(data, first, tmp_path):
    """`first` (1 epoch) continued to 2 epochs in a copy of its folder."""
    run = Path(shutil.copytree(first, tmp_path / "resumed"))
    assert main(["train", "--config", str(run / "config.json"), "--output_dir", str(run), "--epochs", "2",
                 "--resume_from_checkpoint", str(run / "last.ckpt")]) == 0
    return run


def test_replaying_a_resumed_run_trains_it_from_the_start(data, first, tmp_path):
    resumed = _resumed(data, first, tmp_path)
    config = json.loads((resumed / "config.json").read_text())
    assert "resume_from_checkpoint" not in config and config["epochs"] == 2
    replay = tmp_path / "replay"
    assert main(["train", "--config", str(resumed / "config.json"), "--output_dir", str(replay)]) == 0
    assert json.loads((replay / "results.json").read_text())["global_step"] == 2 * 3
    a, b = (load_checkpoint(d / "last.ckpt")["state_dict"] for d in (resumed, replay))
    assert all(torch.equal(a[k], b[k]) for k in a)  # the resume was exact, and so is the replay


def test_resuming_onto_other_data_is_refused_unless_asked(data, first, tmp_path, capsys):
    other = make_dataset(tmp_path / "other", seed=1)  # as many classes and images, other faces
    run = Path(shutil.copytree(first, tmp_path / "run"))
    before = {p.name: p.read_bytes() for p in run.iterdir()}
    argv = ["train", "--config", str(run / "config.json"), "--data_root", str(other), "--output_dir", str(run),
            "--resume_from_checkpoint", str(run / "last.ckpt")]
    capsys.readouterr()
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"last.ckpt: was trained on other data than {other}" in err, err
    assert "--resume_onto_other_data" in err and {p.name: p.read_bytes() for p in run.iterdir()} == before
    with pytest.warns(UserWarning, match="trained on other data"):
        assert main([*argv, "--resume_onto_other_data"]) == 0  # 1 epoch of 1: only the final test, on the new data
    assert "resume_onto_other_data" not in json.loads((run / "config.json").read_text())
    # the same data in another format is the same data
    folder = ImageFolder(data / "train" / "imgs")
    write_training_memfile(tmp_path / "mem", np.stack([folder.read(i)[0] for i in range(len(folder.samples))]),
                           folder.labels)
    assert main(["train", "--config", str(first / "config.json"), "--data_root", "", "--train_data_path",
                 str(tmp_path / "mem"), "--val_data_path", str(data / "val"), "--output_dir", str(tmp_path / "mem_run"),
                 "--epochs", "2", "--resume_from_checkpoint", str(first / "last.ckpt")]) == 0


def test_the_api_trains_any_number_of_times(data, tmp_path):
    import facetrain

    for k in range(2):  # the first call imports facetrain.training.*; the function stays what `facetrain.train` names
        result = facetrain.train({"data_root": str(data), "train_data_path": "train/imgs", "val_data_path": "val",
                                  "arch": "tinynet", "batch_size": 8, "num_workers": 0, "gpus": 0, "epochs": 1,
                                  "limit_train_batches": 1, "progress": False, "output_dir": str(tmp_path / f"r{k}")})
        assert result.global_step == 1
    bad = tmp_path / "bad.json"
    bad.write_text('{"seed": 1.5}')
    with pytest.raises(ConfigError, match=f"^{bad}: --seed must be a whole number, got 1.5$"):
        facetrain.train(bad)


def test_disk_full_at_the_first_checkpoint_is_one_line(data, tmp_path):
    """A file-size limit makes the first checkpoint's write fail as a full disk does."""
    out = tmp_path / "full"

    def limit_file_size():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # the write fails (EFBIG) instead of killing the process
        resource.setrlimit(resource.RLIMIT_FSIZE, (5 << 20, 5 << 20))

    proc = subprocess.run([sys.executable, "-m", "facetrain", "train", *train_args(data, out, "--epochs", "1",
                                                                                   "--limit_train_batches", "1")],
                          capture_output=True, text=True, timeout=300, preexec_fn=limit_file_size)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == (f"error: {out / 'best.ckpt'}: cannot write the checkpoint (File too "
                                                    "large); nothing was written"), proc.stderr
    assert not [p for p in out.iterdir() if ".ckpt" in p.name]  # no checkpoint, no temporary


@pytest.mark.slow
def test_ctrl_c_says_how_to_resume_in_one_line(tmp_path):
    big = make_dataset(tmp_path / "big", per_class=40)
    out = tmp_path / "run"
    argv = [sys.executable, "-m", "facetrain", "train", *train_args(big, out, "--epochs", "50", "--save_every_steps",
                                                                    "2")]
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,  # Ctrl-C's default
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))  # even under nohup
    deadline = time.time() + 240
    while not (out / "last.ckpt").exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    err = proc.communicate(timeout=120)[1]
    hint = (f"interrupted; resume with: facetrain train --config {out / 'config.json'} --resume_from_checkpoint "
            f"{out / 'last.ckpt'}")
    assert proc.returncode == 130 and err.strip() == hint, err
    assert main(["train", *hint.split(": ", 1)[1].split()[2:], "--epochs", "1"]) == 0  # it resumes


def test_loader_workers_are_capped_by_the_cpus(data, tmp_path):
    cpus = len(os.sched_getaffinity(0))
    out = tmp_path / "workers"
    argv = train_args(data, out, "--epochs", "1", "--limit_train_batches", "1", "--val_data_path", str(data / "val"))
    argv[argv.index("--num_workers") + 1] = "1000"
    with pytest.warns(UserWarning, match=f"--num_workers 1000: this node has {cpus} CPU"):
        assert main(["train", *argv]) == 0
    assert json.loads((out / "results.json").read_text())["runtime"]["num_workers"] == cpus
    assert json.loads((out / "config.json").read_text())["num_workers"] == 1000  # the request, as given
