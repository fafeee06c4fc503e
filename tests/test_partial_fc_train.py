"""`facetrain train --partial_fc`: shard files next to the checkpoints, `facetrain consolidate`, resume
from any layout (a consolidated checkpoint as full head or Partial FC, shards of another world size),
and (slow) two torchrun processes killed with SIGKILL resume to the same weights."""
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from facetrain.checkpoint import load_checkpoint
from facetrain.cli import main
from facetrain.heads.partial_fc import all_shards
from facetrain.heads.partial_fc_checkpoint import load_columns, shard_dir
from facetrain.training.distributed import free_port
from train_fixtures import make_dataset, train_args

CLASSES = 7  # odd: 4 + 3 classes on two processes


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_dataset(tmp_path_factory.mktemp("faces"), classes=CLASSES)


def _flags(*extra: str) -> list[str]:
    return ["--epochs", "1", "--limit_train_batches", "2", "--batch_size", "4", "--precision", "fp32",
            "--val_data_path", "none", "--lr_milestones", "5", *extra]


def _weights(path: Path) -> dict[str, torch.Tensor]:
    """Backbone and head (consolidated when sharded) of a checkpoint."""
    loaded = load_checkpoint(path)
    state = dict(loaded["state_dict"])
    extra = loaded["facetrain"]["extra"]
    if "partial_fc" in extra:
        state["head.kernel"], _ = load_columns(path, {}, extra, None, 0, extra["partial_fc"]["num_classes"])
    return state


def _assert_same(a: dict, b: dict, tol: float) -> None:
    assert a.keys() == b.keys()
    for key in a:  # relative too: batch-norm running variances reach tens
        assert torch.allclose(a[key].float(), b[key].float(), rtol=tol, atol=tol), key


def test_consolidated_checkpoint_resumes_with_or_without_partial_fc(data, tmp_path, capsys):
    with pytest.warns(UserWarning, match="without validation"):
        assert main(["train", *train_args(data, tmp_path / "pfc", *_flags("--partial_fc"))]) == 0
    last = tmp_path / "pfc" / "last.ckpt"
    assert [p.name for p in shard_dir(last).iterdir()] == ["rank0of1-step2.pt"]
    assert "head.kernel" not in load_checkpoint(last)["state_dict"]  # the centres live in the shard

    # resuming the sharded checkpoint as a full head is refused with a way out
    resume = ["--epochs", "2", "--resume_from_checkpoint"]
    assert main(["train", *train_args(data, tmp_path / "full", *_flags(*resume, str(last)))]) == 1
    assert "facetrain consolidate" in capsys.readouterr().err

    full = tmp_path / "full.ckpt"
    assert main(["consolidate", str(last), "--out", str(full)]) == 0
    consolidated = load_checkpoint(full)
    assert consolidated["state_dict"]["head.kernel"].shape == (512, CLASSES)
    assert set(consolidated["state_dict"]) == set(_weights(last))
    _assert_same(consolidated["state_dict"], _weights(last), tol=0)

    # one more epoch from the consolidated file: as the full head, and as Partial FC (sample_rate 1)
    with pytest.warns(UserWarning, match="without validation"):
        assert main(["train", *train_args(data, tmp_path / "as_full", *_flags(*resume, str(full)))]) == 0
        assert main(["train", *train_args(data, tmp_path / "as_pfc", *_flags(*resume, str(full), "--partial_fc"))]) == 0
    as_full, as_pfc = _weights(tmp_path / "as_full" / "last.ckpt"), _weights(tmp_path / "as_pfc" / "last.ckpt")
    assert not torch.allclose(as_full["head.kernel"], consolidated["state_dict"]["head.kernel"])
    _assert_same(as_full, as_pfc, tol=1e-5)


def test_shards_reslice_to_another_world_size(tmp_path):
    """Columns for a new layout are read from the overlapping shards of the saved one."""
    kernel, momentum = torch.randn(4, 11), torch.randn(4, 11)
    checkpoint = tmp_path / "last.ckpt"
    names = []
    for s in all_shards(11, 3):
        names.append(f"rank{s.rank}of3-step5.pt")
        shard_dir(checkpoint).mkdir(exist_ok=True)
        torch.save({"kernel": kernel[:, s.start:s.stop], "momentum": momentum[:, s.start:s.stop], "start": s.start,
                    "stop": s.stop, "num_classes": 11, "rank": s.rank, "world_size": 3},
                   shard_dir(checkpoint) / names[-1])
    extra = {"partial_fc": {"num_classes": 11, "world_size": 3, "shards": names}}
    for s in all_shards(11, 2):
        columns, moments = load_columns(checkpoint, {}, extra, None, s.start, s.stop)
        assert torch.equal(columns, kernel[:, s.start:s.stop]) and torch.equal(moments, momentum[:, s.start:s.stop])
    # and from a full head's kernel and its momentum in the optimizer state
    full_extra = {"optimizer_states": [{"state": {3: {"momentum_buffer": momentum}}}]}
    columns, moments = load_columns(checkpoint, {"kernel": kernel}, full_extra, 3, 6, 11)
    assert torch.equal(columns, kernel[:, 6:]) and torch.equal(moments, momentum[:, 6:])


def _torchrun(data: Path, out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
            "--master_port", str(free_port()), "-m", "facetrain", "train", *train_args(data, out, *extra)]


@pytest.mark.slow
def test_killed_two_process_run_resumes_to_the_same_weights(data, tmp_path):
    flags = ["--partial_fc", "--sample_rate", "0.5", "--epochs", "2", "--save_every_steps", "2", "--precision",
             "fp32", "--lr_milestones", "1", "--limit_train_batches", "3", "--batch_size", "4", "--val_data_path",
             "none", "--crop_augmentation_prob", "0.5"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    killed = tmp_path / "killed"
    proc = subprocess.Popen(_torchrun(data, killed, *flags), env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 240
    while not (killed / "last.ckpt").exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)  # torchrun and both workers at once
    proc.wait()
    saved = load_checkpoint(killed / "last.ckpt")["facetrain"]["extra"]
    assert saved["global_step"] < 6 and saved["partial_fc"]["world_size"] == 2
    resumed = subprocess.run(_torchrun(data, killed, *flags, "--resume_from_checkpoint", str(killed / "last.ckpt")),
                             env=env, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    reference = tmp_path / "reference"
    done = subprocess.run(_torchrun(data, reference, *flags), env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    a, b = _weights(killed / "last.ckpt"), _weights(reference / "last.ckpt")
    assert a["head.kernel"].shape == (512, CLASSES)
    _assert_same(a, b, tol=1e-6)
    assert sorted(p.name for p in shard_dir(killed / "last.ckpt").iterdir()) == ["rank0of2-step6.pt",
                                                                                   "rank1of2-step6.pt"]
