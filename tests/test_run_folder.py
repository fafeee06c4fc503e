"""The run folder: `--overwrite` on a folder holding a previous Partial FC run deletes its shard folders
with its checkpoints; one live run per folder (its lock), whoever else tries and however it dies."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from facetrain.cli import main
from facetrain.training.run_folder import clear_run_files, lock_run_folder, unlock_run_folder
from train_fixtures import make_dataset, train_args


def test_overwrite_deletes_the_shard_folders_of_the_runs_checkpoints_and_nothing_else(tmp_path):
    for name in ("results.json", "last.ckpt", "best.ckpt", "epoch=03.ckpt", "notes.txt"):
        (tmp_path / name).write_text(name)
    for folder in ("last.ckpt.pfc", "best.ckpt.pfc", "epoch=03.ckpt.pfc", "mine.pfc", "last.ckpt.pfc.keep"):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "rank0of2-step7.pt").write_bytes(b"shard")
    deleted = clear_run_files(tmp_path)
    # what says "finished" first, checkpoints before the shards they name
    assert deleted == ["results.json", "best.ckpt", "last.ckpt", "epoch=03.ckpt", "best.ckpt.pfc",
                       "epoch=03.ckpt.pfc", "last.ckpt.pfc"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.ckpt.pfc.keep", "mine.pfc", "notes.txt"]


# --- the run lock: one live run per folder (an OS lock, released by the kernel however the holder dies)

_HOLD = ("import sys, time; from pathlib import Path; from facetrain.training.run_folder import lock_run_folder; "
         "lock_run_folder(Path(sys.argv[1])); print('locked', flush=True); time.sleep(600)")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_dataset(tmp_path_factory.mktemp("faces"), classes=3, per_class=6)


def _holder(folder: Path) -> subprocess.Popen:
    """Another process holding `folder`'s run lock, as a live training run does."""
    proc = subprocess.Popen([sys.executable, "-c", _HOLD, str(folder)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "locked"
    proc.stdout.close()
    return proc


def _files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}


def test_a_live_runs_folder_is_refused_to_a_second_run_and_to_overwrite(data, tmp_path, capsys):
    out = tmp_path / "run"
    flags = ("--epochs", "1", "--limit_train_batches", "1", "--val_data_path", "none")
    with pytest.warns(UserWarning, match="without validation"):
        assert main(["train", *train_args(data, out, *flags)]) == 0
    holder = _holder(out)
    before = _files(out)
    try:
        capsys.readouterr()
        for extra in ([], ["--overwrite"], ["--resume_from_checkpoint", str(out / "last.ckpt"), "--epochs", "2"]):
            assert main(["train", *train_args(data, out, *flags, *extra)]) == 1
            err = capsys.readouterr().err
            assert err == (f"error: {out}: another training process (pid {holder.pid}) is running in this folder; "
                           "wait for it to end, or choose another --output_dir\n"), err
            assert _files(out) == before  # nothing deleted, nothing written
    finally:
        holder.kill()  # SIGKILL: no chance to clean up, and still no stale lock
        holder.wait()
    with pytest.warns(UserWarning, match="without validation"):
        assert main(["train", *train_args(data, out, *flags, "--overwrite")]) == 0


def test_a_new_folder_taken_meanwhile_is_refused(data, tmp_path, capsys):
    """Both runs find the folder empty at first; the later one checks again under the lock."""
    out = tmp_path / "new"
    holder = _holder(out)  # created and locked by another run that has not written anything yet
    try:
        assert main(["train", *train_args(data, out, "--epochs", "1", "--limit_train_batches", "1")]) == 1
        assert "another training process" in capsys.readouterr().err
        assert [p.name for p in out.iterdir()] == [".facetrain.lock"]
    finally:
        holder.kill()
        holder.wait()


@pytest.mark.slow
def test_two_runs_started_together_into_one_folder(data, tmp_path):
    out = tmp_path / "race"
    argv = [sys.executable, "-m", "facetrain", "train", *train_args(data, out, "--epochs", "2")]
    procs = [subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    results = [(p.wait(timeout=300), p.stderr.read()) for p in procs]
    codes = sorted(code for code, _ in results)
    assert codes == [0, 1], results
    err = next(e for code, e in results if code == 1).strip()
    assert err.count("\n") == 0 and err.startswith(f"error: {out}") and "Traceback" not in err, err
    assert json.loads((out / "results.json").read_text())["global_step"] == 2 * 2


def test_a_forked_worker_does_not_keep_a_killed_runs_lock(tmp_path, capsys):
    """Data-loader workers are forked: after kill -9 of the run they live on for a few seconds."""
    code = ("import os, sys, time; from pathlib import Path; from facetrain.training.run_folder import lock_run_folder; "
            "lock_run_folder(Path(sys.argv[1]));\nif os.fork() == 0: time.sleep(600)\nprint(os.getpid(), flush=True); "
            "time.sleep(600)")
    run = subprocess.Popen([sys.executable, "-c", code, str(tmp_path / "run")], stdout=subprocess.PIPE, text=True,
                           start_new_session=True)
    try:
        run.stdout.readline()
        os.kill(run.pid, signal.SIGKILL)
        run.wait()
        unlock_run_folder(lock_run_folder(tmp_path / "run"))  # free although the forked child still lives
    finally:
        os.killpg(run.pid, signal.SIGKILL)
        run.stdout.close()
