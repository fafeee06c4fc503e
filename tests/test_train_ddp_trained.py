"""DDP (gloo, 2 processes) in the configuration that is trained: AdaFace with h=0.333, dropout on,
batch norm in training mode, compared with a single-process reference of the same semantics:

- each process runs its half batch with its own dropout masks (its torch RNG is seeded with
  seed + rank when the run is built), its own batch-norm batch statistics and running-statistic
  update (no SyncBatchNorm on CPU), and its own AdaFace EMA update before zhat;
- the gradient is the mean of the two halves' gradients (DDP's all-reduce), one SGD step;
- afterwards the AdaFace buffers are averaged over processes; BN running statistics stay per process.
The reference replays exactly that in one process: half 0 with RNG seed+0, half 1 with seed+1, from
the same starting state, then steps with the averaged gradient.
"""
from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from facetrain.training.build import build_run
from facetrain.training.config import TrainConfig
from facetrain.training.distributed import DistContext, cleanup_distributed, init_distributed, spawn
from facetrain.training.loop import Trainer
from train_fixtures import make_dataset

GLOBAL_BATCH, SEED = 8, 0


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_dataset(tmp_path_factory.mktemp("faces"))


def _config(data: Path, out: Path) -> TrainConfig:
    return TrainConfig(data_root=str(data), train_data_path="train/imgs", val_data_path="val", arch="tinynet",
                       head="adaface", h=0.333, batch_size=GLOBAL_BATCH, num_workers=0, gpus=0, output_dir=str(out),
                       progress=False, precision="fp32", lr=0.05, seed=SEED)


def _global_batch() -> tuple[torch.Tensor, torch.Tensor]:
    rng = np.random.default_rng(5)
    images = torch.from_numpy(rng.integers(0, 256, (GLOBAL_BATCH, 112, 112, 3), dtype=np.uint8))
    return images, torch.from_numpy(rng.integers(0, 6, GLOBAL_BATCH))


def _worker(data: Path, out: Path) -> None:
    torch.set_num_threads(1)
    ctx = init_distributed(gpus=0)
    try:
        trainer = Trainer(build_run(_config(data, out / "run"), ctx))
        images, labels = _global_batch()
        half = slice(ctx.rank * trainer.run.batch_size, (ctx.rank + 1) * trainer.run.batch_size)
        trainer.run.net.train()
        trainer.snapshot.take()
        loss = trainer.train_step(images[half], labels[half], group_size=1, last_in_group=True)
        assert trainer.optimizer_step(loss).item() == 0.0  # the step was taken (not skipped)
        state = trainer.run.net.state_dict()
        torch.save({k: v.detach().clone() for k, v in state.items()}, out / f"rank{ctx.rank}.pt")
    finally:
        cleanup_distributed()


def _reference(data: Path, out: Path) -> tuple[list[dict], dict]:
    """(state after each half's forward, for the per-process buffers), and the stepped parameters."""
    run = build_run(_config(data, out), DistContext())
    net = run.net.train()
    start = copy.deepcopy(net.state_dict())
    params = [p for p in net.parameters() if p.requires_grad]
    images, labels = _global_batch()
    grads, after_forward = [], []
    for rank in (0, 1):
        net.load_state_dict(start)
        torch.manual_seed(SEED + rank)  # what build_run did in process `rank`
        half = slice(rank * GLOBAL_BATCH // 2, (rank + 1) * GLOBAL_BATCH // 2)
        loss, _ = net(images[half], labels[half])
        grads.append(torch.autograd.grad(loss, params))
        after_forward.append({k: v.detach().clone() for k, v in net.state_dict().items()})
    net.load_state_dict(start)
    for p, g0, g1 in zip(params, *grads):
        p.grad = (g0 + g1) / 2
    run.optimizer.step()
    return after_forward, {k: v.detach().clone() for k, v in net.state_dict().items()}


def _bn_buffer_names(net: nn.Module) -> set[str]:
    return {f"{name}.{b}" for name, m in net.named_modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)
            for b in ("running_mean", "running_var", "num_batches_tracked")}


@pytest.mark.slow
def test_ddp_with_adaface_dropout_and_batchnorm_matches_its_single_process_reference(data, tmp_path):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        spawn(_worker, 2, (data, tmp_path))
        after_forward, stepped = _reference(data, tmp_path / "reference")
        initial = build_run(_config(data, tmp_path / "init"), DistContext()).net
    finally:
        torch.set_num_threads(threads)
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in (0, 1)]
    bn = _bn_buffer_names(initial)
    head_buffers = {"head.batch_mean", "head.batch_std", "head.t"}
    assert bn and head_buffers <= set(stepped)
    start = copy.deepcopy(initial.state_dict())
    first_conv = next(k for k, v in start.items() if k.startswith("model.") and v.ndim == 4)
    assert (stepped[first_conv] - start[first_conv]).abs().max() > 1e-3  # a step far above the tolerance
    for key, value in stepped.items():
        if key in bn:  # per process: each rank's own half
            for r in (0, 1):
                torch.testing.assert_close(ranks[r][key], after_forward[r][key], rtol=0, atol=1e-5, msg=key)
        elif key in head_buffers:  # averaged over processes after the step
            assert torch.equal(ranks[0][key], ranks[1][key]), key
            mean = (after_forward[0][key] + after_forward[1][key]) / 2
            torch.testing.assert_close(ranks[0][key], mean, rtol=1e-6, atol=0, msg=key)
        else:  # parameters: one step with the averaged gradient, identical in both processes
            assert torch.equal(ranks[0][key], ranks[1][key]), key
            torch.testing.assert_close(ranks[0][key], value, rtol=0, atol=1e-5, msg=key)
    # the configuration really is the trained one: halves differ in BN statistics and AdaFace EMA
    running = next(k for k in bn if k.endswith("running_mean"))
    assert not torch.allclose(ranks[0][running], ranks[1][running])
    assert after_forward[0]["head.batch_mean"] != after_forward[1]["head.batch_mean"]
    # and dropout matters: without rank r's own seed the reference would not match
    net, images, labels = initial.train(), *_global_batch()
    losses = []
    for seed in (SEED + 7, SEED):
        net.load_state_dict(start)
        torch.manual_seed(seed)
        losses.append(net(images[:4], labels[:4])[0].item())
    loss_other_mask, loss_rank0_mask = losses
    assert abs(loss_other_mask - loss_rank0_mask) > 1e-3
