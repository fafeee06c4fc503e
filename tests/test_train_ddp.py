"""DistributedDataParallel on CPU (gloo): two processes with half a batch each take the same step as
one process with the whole batch, and keep identical AdaFace statistics; torchrun runs the CLI."""
import json
import re
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from facetrain.data.transforms import normalize_batch
from facetrain.training.build import build_run
from facetrain.training.config import TrainConfig
from facetrain.training.distributed import DistContext, cleanup_distributed, free_port, init_distributed, spawn
from facetrain.training.loop import Trainer
from train_fixtures import make_dataset, train_args

GLOBAL_BATCH = 8


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_dataset(tmp_path_factory.mktemp("faces"))


def _config(data: Path, out: Path) -> TrainConfig:
    # h=0: AdaFace's margin does not depend on the batch statistics, so one step is comparable exactly;
    # the statistics themselves are still updated and synchronised.
    return TrainConfig(data_root=str(data), train_data_path="train/imgs", val_data_path="val", arch="tinynet",
                       head="adaface", h=0.0, batch_size=GLOBAL_BATCH, num_workers=0, gpus=0, output_dir=str(out),
                       progress=False, precision="fp32", lr=0.01)


def _global_batch() -> tuple[torch.Tensor, torch.Tensor]:
    rng = np.random.default_rng(3)
    images = torch.from_numpy(rng.integers(0, 256, (GLOBAL_BATCH, 112, 112, 3), dtype=np.uint8))
    return images, torch.from_numpy(rng.integers(0, 6, GLOBAL_BATCH))


def _one_step(trainer: Trainer, images: torch.Tensor, labels: torch.Tensor, whole_batch: torch.Tensor) -> dict:
    # Batch norm in eval mode: DDP normalises with per-process batch statistics (SyncBatchNorm does
    # not run on CPU), which differ from the whole batch's. With running statistics measured once on
    # the whole batch, identically in every process, both set-ups compute the same function.
    bns = [m for m in trainer.run.model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # cumulative average: one pass gives the batch's statistics
    trainer.run.model.train()
    for m in trainer.run.model.modules():  # dropout masks are drawn per process: no way to match them
        if isinstance(m, nn.Dropout):
            m.eval()
    with torch.no_grad():
        trainer.run.model(normalize_batch(whole_batch))
    for m in bns:
        m.eval()
    trainer.snapshot.take()
    loss = trainer.train_step(images, labels, group_size=1, last_in_group=True)
    assert trainer.optimizer_step(loss).item() == 0.0
    return {k: v.detach().clone() for k, v in trainer.run.net.state_dict().items()}


def _ddp_worker(data: Path, out: Path) -> None:
    torch.set_num_threads(1)
    ctx = init_distributed(gpus=0)
    try:
        trainer = Trainer(build_run(_config(data, out / "run"), ctx))
        assert trainer.run.batch_size == GLOBAL_BATCH // 2
        images, labels = _global_batch()
        shard = slice(ctx.rank * trainer.run.batch_size, (ctx.rank + 1) * trainer.run.batch_size)
        torch.save(_one_step(trainer, images[shard], labels[shard], images), out / f"rank{ctx.rank}.pt")
    finally:
        cleanup_distributed()


def test_two_processes_step_like_one_process_on_the_whole_batch(data, tmp_path):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        spawn(_ddp_worker, 2, (data, tmp_path))
        images, labels = _global_batch()
        single = _one_step(Trainer(build_run(_config(data, tmp_path / "single"), DistContext())), images, labels, images)
    finally:
        torch.set_num_threads(threads)
    rank0, rank1 = torch.load(tmp_path / "rank0.pt"), torch.load(tmp_path / "rank1.pt")
    initial = build_run(_config(data, tmp_path / "init"), DistContext()).net.state_dict()
    assert not torch.equal(single["head.kernel"], initial["head.kernel"])  # a real step happened
    first_conv = next(k for k, v in single.items() if k.startswith("model.") and v.ndim == 4)
    assert (single[first_conv] - initial[first_conv]).abs().max() > 1e-4  # large enough to tell 1e-5 apart
    for key, value in single.items():
        assert torch.equal(rank0[key], rank1[key]), f"ranks differ in {key}"
        if key != "head.batch_std":  # the mean of per-process stds is not the whole batch's std
            assert torch.allclose(rank0[key].float(), value.float(), rtol=0, atol=1e-5), key
    assert not torch.equal(rank0["head.batch_mean"], initial["head.batch_mean"])


@pytest.mark.slow
def test_torchrun_cpu_training_end_to_end(data, tmp_path):
    out = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    # an explicit free port: torchrun's static rendezvous hangs with --master_port 0
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
           "--master_port", str(free_port()), "-m", "facetrain", "train",
           *train_args(data, out, "--epochs", "1", "--limit_train_batches", "2", "--batch_size", "8")]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads((out / "results.json").read_text())
    assert results["global_step"] == 2 and "accuracy" in results["test"]["lfw"]
    assert "4 x 2 process(es)" in proc.stdout


def _as_nodes(cmd: list[str], world: int) -> list[subprocess.Popen]:
    """Each rank a process of its own, as on separate nodes: no launcher ends the others when one fails."""
    port, procs = str(free_port()), []
    for rank in range(world):
        env = {**os.environ, "OMP_NUM_THREADS": "1", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": port,
               "RANK": str(rank), "WORLD_SIZE": str(world), "LOCAL_RANK": "0", "LOCAL_WORLD_SIZE": "1",
               "FACETRAIN_DIST_TIMEOUT_MIN": "5"}
        procs.append(subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    return procs


def test_an_error_on_one_rank_ends_every_rank_with_its_line(tmp_path):
    # only rank 0 reads the validation sets: the others go on to the next collective (DDP's set-up) and
    # would wait there for the process group's timeout
    data = make_dataset(tmp_path / "faces")
    (data / "val" / "lfw.bin").write_bytes((data / "val" / "lfw.bin").read_bytes()[:1000])
    cmd = [sys.executable, "-m", "facetrain", "train", *train_args(data, tmp_path / "run", "--epochs", "1")]
    tic = time.monotonic()
    procs = _as_nodes(cmd, 2)
    try:
        outputs = [p.communicate(timeout=120) for p in procs]
    finally:
        for p in procs:
            p.kill()
    assert time.monotonic() - tic < 90
    lines = [[line for line in err.splitlines() if line.startswith("error: ")] for _, err in outputs]
    assert [p.returncode for p in procs] == [1, 1], [err[-2000:] for _, err in outputs]
    assert len(lines[0]) == 1 and "lfw.bin" in lines[0][0], outputs[0][1][-2000:]
    assert lines[1] == [f"{lines[0][0]} (rank 0)"], outputs[1][1][-2000:]


@pytest.mark.slow
def test_a_local_spawn_ends_with_the_failing_ranks_line(tmp_path, monkeypatch, capfd):
    from facetrain.cli import main

    data = make_dataset(tmp_path / "faces")
    (data / "val" / "lfw.bin").write_bytes((data / "val" / "lfw.bin").read_bytes()[:1000])
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)  # the launcher's check; the processes use the CPU
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert main(["train", *train_args(data, tmp_path / "run", "--epochs", "1", "--gpus", "2")]) == 1
    errors = [line for line in capfd.readouterr().err.splitlines() if line.startswith("error: ")]
    assert any("lfw.bin: truncated" in line for line in errors), errors
    assert re.fullmatch(r"error: training process [01] of 2 stopped with exit code 1: its error is above", errors[-1])
