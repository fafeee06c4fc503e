"""What would crash, hang or stall on GPUs / NCCL, caught on a CPU-only machine with stand-ins: a
collective that rejects tensors off the rank's device (the meta device plays the GPU), counted host
synchronisations inside a step, a fake multi-GPU layout, recorded process-group arguments."""
import datetime
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
from torch import nn

from facetrain.errors import ConfigError
import facetrain.eval.embed as embed
from facetrain.eval.embed import eval_batch_size, extract_features
from facetrain.heads import build_head
from facetrain.models import build_model
from facetrain.training import distributed
from facetrain.training.batches import build_train_loader, default_num_workers
from facetrain.training.buffer_snapshot import BufferSnapshot
from facetrain.training.build import build_run, load_scaler_state
from facetrain.training.config import TrainConfig
from facetrain.training.distributed import DistContext
from facetrain.training.logger import read_metrics
from facetrain.training.loop import Trainer
from facetrain.training.state import capture_rng, restore_rng
from facetrain.training.step_window import StepWindow
from train_fixtures import make_dataset

META = torch.device("meta")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_dataset(tmp_path_factory.mktemp("faces"))


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _config(data: Path, out: Path, **kw) -> TrainConfig:
    base = dict(data_root=str(data), train_data_path="train/imgs", val_data_path="val", arch="tinynet",
                head="adaface", batch_size=8, num_workers=0, gpus=0, output_dir=str(out), progress=False, epochs=1)
    return TrainConfig(**{**base, **kw})


class Reached(Exception):
    """The collective stand-in was called with a tensor on the rank's device."""


def _collective_on(device: torch.device, calls: list, then=None):
    def all_reduce(tensor, op=None, **_):
        if tensor.device != device:
            raise RuntimeError(f"NCCL stand-in: tensor on {tensor.device}, the rank's device is {device}")
        calls.append(op)
        if then is not None:
            then(tensor)
    return all_reduce


# 1. loss logging all-reduces a tensor on the rank's device
def test_logging_reduces_one_tensor_on_the_ranks_device(monkeypatch):
    calls: list = []

    def stop(tensor):
        raise Reached

    monkeypatch.setattr(dist, "all_reduce", _collective_on(META, calls, stop))
    window = StepWindow(META)
    window.add_step(torch.ones((), device=META), torch.zeros(1, device=META))
    with pytest.raises(Reached):
        window.collect(DistContext(rank=0, world_size=2, device=META))
    assert calls == [dist.ReduceOp.SUM]


def test_window_means_over_ranks_and_counts_skips(monkeypatch):
    other_rank = torch.tensor([10.0, 2.0, 1.0])  # its loss sum over its 2 taken steps, taken, skipped
    monkeypatch.setattr(dist, "all_reduce", lambda t, op=None, **_: t.add_(other_rank))
    window = StepWindow(torch.device("cpu"))
    for loss, bad in ((1.0, 0.0), (float("nan"), 1.0), (3.0, 0.0)):
        window.add_step(torch.tensor(loss), torch.tensor([bad]))
    window.add_times(0.5, 1.5)
    s = window.collect(DistContext(rank=0, world_size=2))
    assert (s.loss, s.loss_sum, s.steps, s.skipped, s.longest_skip_run) == (14.0 / 4, 7.0, 2, 1, 1)
    assert window.take_times() == (0.5, 1.5)


def test_overflow_skips_neither_extend_nor_break_a_run_of_nonfinite_losses():
    window = StepWindow(torch.device("cpu"))
    one, zero = torch.ones(1), torch.zeros(1)
    # non-finite, overflow, non-finite, non-finite, taken, overflow x 3
    for skipped, nonfinite in [(one, one), (one, zero), (one, one), (one, one), (zero, zero)] + [(one, zero)] * 3:
        window.add_step(torch.tensor(2.0), skipped, nonfinite)
    summary = window.collect(DistContext())
    assert (summary.steps, summary.skipped, summary.longest_skip_run, summary.loss) == (1, 7, 3, 2.0)


def test_skip_counters_continue_across_a_resume():
    """The streak, the longest run and the run's total of skipped steps travel in the checkpoint:
    two skips before the save and one after make a streak of 3 and a total of 4, as uninterrupted."""
    ctx, nan = DistContext(rank=0, world_size=1), float("nan")
    before = StepWindow(torch.device("cpu"))
    for loss in (nan, 1.0, nan, nan):
        before.add_step(torch.tensor(loss), torch.tensor([float(loss != loss)]))
    assert before.collect(ctx).skipped_total == 3
    resumed = StepWindow(torch.device("cpu"))
    resumed.load_state_dict(before.state_dict())
    assert resumed.skipped_total == 3  # before any new step: what results.json of a finished run reports
    resumed.add_step(torch.tensor(nan), torch.tensor([1.0]))
    s = resumed.collect(ctx)
    assert (s.skipped, s.longest_skip_run, s.skipped_total) == (1, 3, 4)
    old_format = StepWindow(torch.device("cpu"))
    old_format.load_state_dict({"sums": [0.0, 0.0, 0.0], "skips": [2.0, 2.0]})
    assert old_format.skipped_total == 0


# 13. the head's buffers in one all-reduce
def test_head_buffers_are_averaged_in_one_collective(monkeypatch):
    calls: list = []
    monkeypatch.setattr(dist, "all_reduce", _collective_on(torch.device("cpu"), calls, lambda t: t.mul_(3.0)))
    head = build_head("adaface", embedding_size=8, class_num=4)
    before = [b.clone() for b in head.buffers() if b.is_floating_point()]
    assert len(before) >= 2
    distributed.sync_float_buffers(head, DistContext(rank=0, world_size=2))
    assert len(calls) == 1
    for b, old in zip([b for b in head.buffers() if b.is_floating_point()], before):
        assert torch.allclose(b, old * 1.5)  # (own + other rank's 2x own) / 2


# 2. the CUDA generator of the rank's own device only
def test_cuda_rng_state_is_the_own_devices_only(monkeypatch):
    got, put = [], []
    monkeypatch.setattr(torch.cuda, "get_rng_state", lambda device="cuda": got.append(device) or torch.zeros(8, dtype=torch.uint8))
    monkeypatch.setattr(torch.cuda, "get_rng_state_all", lambda: pytest.fail("every visible GPU's state read"))
    monkeypatch.setattr(torch.cuda, "set_rng_state", lambda state, device="cuda": put.append(device))
    monkeypatch.setattr(torch.cuda, "set_rng_state_all", lambda states: pytest.fail("every visible GPU's state set"))
    state = capture_rng(torch.device("cuda", 3))
    assert got == [torch.device("cuda", 3)] and state["cuda_device"].shape == (8,)
    restore_rng(state, torch.device("cuda", 1))  # resumed with another GPU index
    assert put == [torch.device("cuda", 1)]
    old_layout = {**capture_rng(), "cuda": [torch.zeros(8, dtype=torch.uint8)] * 2}  # saved with 2 visible GPUs
    restore_rng(old_layout, torch.device("cuda", 5))  # no IndexError: the old per-GPU list is not used
    assert put == [torch.device("cuda", 1)]


# 3. --use_16bit resume of a checkpoint trained without loss scaling
def test_fp16_resume_of_a_run_without_loss_scaling():
    scaler = torch.amp.GradScaler("cpu", enabled=True)
    with pytest.raises(RuntimeError):  # what torch does with the empty state, which used to crash the resume
        torch.amp.GradScaler("cpu", enabled=True).load_state_dict({})
    with pytest.warns(UserWarning, match="loss scale starts afresh"):
        load_scaler_state(scaler, {}, "bf16.ckpt")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load_scaler_state(torch.amp.GradScaler("cpu", enabled=False), {}, "bf16.ckpt")
        load_scaler_state(torch.amp.GradScaler("cpu", enabled=False), scaler.state_dict(), "fp16.ckpt")


# 4. the final test runs on the training device
def test_final_test_runs_on_the_training_device(data, tmp_path, monkeypatch):
    devices = []
    real = embed.extract_features

    def spy(model, images, *args, **kw):
        devices.append(kw.get("device"))
        return real(model, images, *args, **kw)

    monkeypatch.setattr(embed, "extract_features", spy)
    run = build_run(_config(data, tmp_path / "run", precision="bf16", limit_train_batches=2), DistContext())
    result = Trainer(run).fit()
    assert result.test_metrics["lfw"]["accuracy"] >= 0
    # per-epoch validation keeps the (training-device) model in place; the final test names the device
    assert devices[-1] == run.ctx.device


# 5. process-group timeout
def test_process_group_gets_a_timeout(monkeypatch):
    seen = {}
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setattr(dist, "is_initialized", lambda: False)
    monkeypatch.setattr(dist, "init_process_group", lambda backend, **kw: seen.update(kw, backend=backend))
    ctx = distributed.init_distributed(gpus=0)
    assert seen["backend"] == "gloo" and seen["timeout"] == datetime.timedelta(minutes=60)
    assert (ctx.rank, ctx.world_size, ctx.local_world_size) == (1, 2, 2)
    monkeypatch.setenv("FACETRAIN_DIST_TIMEOUT_MIN", "7.5")
    distributed.init_distributed(gpus=0)
    assert seen["timeout"] == datetime.timedelta(minutes=7.5)
    monkeypatch.setenv("FACETRAIN_DIST_TIMEOUT_MIN", "soon")
    with pytest.raises(ConfigError, match="FACETRAIN_DIST_TIMEOUT_MIN"):
        distributed.init_distributed(gpus=0)


# 7. more processes than GPUs; 10. cuDNN autotuning and TF32 matmuls on GPUs
def test_more_processes_than_gpus_is_one_clear_error(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert distributed.pick_device(1, 1, local_world_size=2) == torch.device("cuda", 1)
    with pytest.raises(ConfigError, match="3 processes on this node but 2 CUDA device"):
        distributed.pick_device(1, 2, local_world_size=3)


BACKENDS = ("torch.backends.cudnn.benchmark", "torch.backends.cuda.matmul.allow_tf32",
            "torch.backends.cudnn.deterministic", "torch.are_deterministic_algorithms_enabled()")


def _backends() -> dict:
    return {name: eval(name) for name in BACKENDS}


def test_gpu_settings_hold_inside_training_only():
    saved = torch.backends.cudnn.benchmark, torch.backends.cuda.matmul.allow_tf32
    try:
        torch.backends.cudnn.benchmark = torch.backends.cuda.matmul.allow_tf32 = False
        before = _backends()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # no CUDA device: training on the CPU
            distributed.init_distributed(gpus=1)
        assert _backends() == before
        with distributed.training_backends(torch.device("cpu")):
            assert _backends() == before
        with distributed.training_backends(torch.device("cuda", 0)):
            assert torch.backends.cudnn.benchmark and torch.backends.cuda.matmul.allow_tf32
        assert _backends() == before
        with distributed.training_backends(torch.device("cuda", 0), deterministic=True):
            assert not torch.backends.cudnn.benchmark and torch.backends.cudnn.deterministic
            assert torch.are_deterministic_algorithms_enabled()
        assert _backends() == before
    finally:
        torch.backends.cudnn.benchmark, torch.backends.cuda.matmul.allow_tf32 = saved


def test_training_restores_the_backends_and_can_be_deterministic(data, tmp_path, monkeypatch):
    from facetrain.training.loop import train

    seen = []
    real_fit = Trainer.fit
    monkeypatch.setattr(Trainer, "fit", lambda self: seen.append(_backends()) or real_fit(self))
    before = _backends()
    train(_config(data, tmp_path / "run", limit_train_batches=1, deterministic=True))
    assert seen[0]["torch.are_deterministic_algorithms_enabled()"] and _backends() == before


# 8. loader processes per node; 13. persistent workers that still see the epoch
def test_default_workers_share_the_nodes_cpus():
    assert default_num_workers(8, cpus=128) == 16 and default_num_workers(8, cpus=64) == 8
    assert default_num_workers(1, cpus=2) == 2 and default_num_workers(8, cpus=4) == 1
    assert default_num_workers(1, cpus=256) == 16


def test_persistent_workers_follow_the_epoch(data, tmp_path):
    run = build_run(_config(data, tmp_path / "run", crop_augmentation_prob=1.0, low_res_augmentation_prob=0.5), DistContext())
    loader, sampler = build_train_loader(run.dataset, 8, 1, 0, 1, seed=0)
    assert loader.persistent_workers
    for epoch in (0, 1):
        sampler.set_position(epoch)
        images, _ = next(iter(loader))
        first = next(iter(sampler))
        assert first[0] == epoch
        assert np.array_equal(images[0].numpy(), run.dataset[first][0])
    auto = build_run(_config(data, tmp_path / "auto", num_workers=-1), DistContext())
    assert TrainConfig().num_workers == -1 and auto.loader.num_workers == default_num_workers(1)


# shared memory, where loader workers hand over their batches (containers often have 64 MB)
MB = 2**20


@pytest.mark.parametrize("workers, batch, processes, free, expected", [
    (16, 256, 1, 64 * 2**30, 4), (16, 256, 8, 64 * 2**30, 4),  # 8 ranks x 0.6 GB on a large /dev/shm
    (16, 256, 1, 400 * MB, 2), (4, 64, 2, 64 * MB, 2),  # 16 x 9.6 MB fits twice in 80% of 400 MB
    (2, 32, 1, 64 * MB, 4), (0, 256, 8, 64 * MB, 4), (16, 256, 8, None, 4),  # no workers / no /dev/shm
    (16, 256, 8, 64 * MB, "lower --num_workers to 0"), (16, 64, 2, 64 * MB, "lower --num_workers to 11"),
])
def test_loader_prefetch_fits_shared_memory(workers, batch, processes, free, expected):
    from facetrain.training.batches import loader_prefetch

    if isinstance(expected, int):
        assert loader_prefetch(workers, batch, processes, free) == expected
    else:
        with pytest.raises(ConfigError, match=f"/dev/shm: 64 MB free.*--shm-size.*{expected}"):
            loader_prefetch(workers, batch, processes, free)


def test_a_run_stops_at_start_when_shared_memory_cannot_hold_a_batch(data, tmp_path, monkeypatch):
    import facetrain.training.build as run_module

    monkeypatch.setattr(run_module, "shared_memory_free", lambda: 300_000)  # 0.3 MB: not one batch of 8
    with pytest.raises(ConfigError, match="/dev/shm: 0 MB free"):
        build_run(_config(data, tmp_path / "run", num_workers=2), DistContext())
    monkeypatch.setattr(run_module, "shared_memory_free", lambda: 2 * 8 * 37_648 * 2)  # two batches per worker
    with pytest.warns(UserWarning, match="prepare 1 batch"):
        run = build_run(_config(data, tmp_path / "run2", num_workers=2), DistContext())
    assert run.loader.prefetch_factor == 1


# 9. no host synchronisation inside a step; 11. the rollback copies into preallocated buffers
SYNCS = ("item", "tolist", "cpu", "numpy", "__bool__", "__float__", "__int__", "__index__")


def _count_syncs(monkeypatch) -> list:
    """Calls that make the host wait for the device, except the loader's once-per-epoch shuffle of
    host tensors (torch.utils.data)."""
    calls: list = []
    for name in SYNCS:
        real = getattr(torch.Tensor, name)

        def counted(self, *a, _real=real, _name=name, **kw):
            if "torch/utils/data" not in sys._getframe(1).f_code.co_filename:
                calls.append(_name)
            return _real(self, *a, **kw)

        monkeypatch.setattr(torch.Tensor, name, counted)
    return calls


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_optimizer_steps_do_not_wait_for_the_device(data, tmp_path, monkeypatch, precision):
    trainer = Trainer(build_run(_config(data, tmp_path / "run", precision=precision), DistContext()))
    batches = [b for b, _ in zip(trainer.run.loader, range(3))]
    clones: list = []
    calls = _count_syncs(monkeypatch)
    monkeypatch.setattr(torch.Tensor, "clone", lambda self, *a, **k: clones.append(1) or pytest.fail("clone"))
    for images, labels in batches:
        trainer.snapshot.take()
        loss = trainer.train_step(images, labels, group_size=1, last_in_group=True)
        trainer.window.add_step(loss, trainer.optimizer_step(loss))
    for images, labels in batches[:1]:  # a non-finite loss is skipped without waiting either
        trainer.snapshot.take()
        trainer.train_step(images, labels, group_size=1, last_in_group=True)
        trainer.window.add_step(torch.tensor(float("inf")), trainer.optimizer_step(torch.tensor(float("inf"))))
    assert calls == [] and clones == []
    monkeypatch.undo()
    summary = trainer.window.collect(trainer.run.ctx)
    assert (summary.steps, summary.skipped) == (3, 1)


def test_an_epoch_syncs_only_at_logging_steps_and_logs_times(data, tmp_path, monkeypatch):
    # one validation at the epoch's end (not AdaFace's ten per epoch for short runs): run_epoch itself has
    # only the logging syncs to count
    config = _config(data, tmp_path / "run", log_every=2, val_every=5, val_check_interval=1.0)
    trainer = Trainer(build_run(config, DistContext()))
    calls = _count_syncs(monkeypatch)
    trainer.run_epoch(0)  # 6 batches: logs after steps 2, 4, 6
    monkeypatch.undo()
    assert calls.count("tolist") == 3 and len(calls) == 3, calls
    trainer.run.logger.close()
    rows = read_metrics(trainer.run.output_dir / "metrics.csv")
    for name in ("data_time", "step_time", "train_loss"):
        values = [r["value"] for r in rows if r["name"] == name]
        assert len(values) == 3 and all(v >= 0 for v in values), name
    assert all(r["value"] > 0 for r in rows if r["name"] == "step_time")


def test_buffer_snapshot_restores_only_where_flagged():
    a, b = torch.arange(4.0), torch.ones(2, 3)
    snap = BufferSnapshot([a, b, torch.zeros(2, dtype=torch.int64)])
    snap.take()
    a.fill_(float("nan"))
    b.mul_(5)
    snap.restore_where(torch.tensor([0.0]))
    assert torch.isnan(a).all() and (b == 5).all()
    snap.restore_where(torch.tensor([1.0]))
    assert torch.equal(a, torch.arange(4.0)) and torch.equal(b, torch.ones(2, 3))


# 12. evaluation: big GPU batches, the image and its flip in one forward, one device-to-host copy
class CountingNet(nn.Module):
    def __init__(self, net: nn.Module):
        super().__init__()
        self.net, self.batch_sizes = net, []

    def forward(self, x):
        self.batch_sizes.append(len(x))
        return self.net(x)


def test_evaluation_batches(monkeypatch):
    assert eval_batch_size(256, torch.device("cuda", 0)) == 512 and eval_batch_size(1024, torch.device("cuda")) == 1024
    assert eval_batch_size(64, torch.device("cpu")) == 64
    torch.manual_seed(0)
    net = CountingNet(build_model("tinynet")).eval()
    images = np.random.default_rng(0).integers(0, 256, (10, 112, 112, 3), dtype=np.uint8)
    calls = _count_syncs(monkeypatch)
    features, flipped = extract_features(net, images, batch_size=4, progress=False)
    monkeypatch.undo()
    assert net.batch_sizes == [8, 8, 4] and calls.count("cpu") == 1
    alone, alone_flipped = extract_features(net, images[::-1].copy(), batch_size=1, progress=False)
    assert np.allclose(features, alone[::-1], atol=1e-5) and np.allclose(flipped, alone_flipped[::-1], atol=1e-5)
    assert not np.allclose(features, flipped, atol=1e-3)


# 6. resuming (and starting from a model) needs the checkpoint on rank 0's filesystem only
def _resume_worker(data: Path, out: Path, checkpoint: Path) -> None:
    torch.set_num_threads(1)
    ctx = distributed.init_distributed(gpus=0)
    pickled_tensors = []
    real_broadcast = distributed.broadcast_object
    distributed.broadcast_object = lambda obj, c: pickled_tensors.extend(_tensors(obj)) or real_broadcast(obj, c)
    try:
        if ctx.rank == 1:  # as on a second node, which does not have the checkpoints
            import facetrain.training.build as run_module

            def no_file(*_a, **_k):
                raise AssertionError("rank 1 opened the checkpoint")
            run_module.load_training_state = run_module.load_backbone = no_file
            real_is_file = Path.is_file
            Path.is_file = lambda self: self.suffix != ".ckpt" and real_is_file(self)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # saved by 1 process, resumed by 2: random streams restart
            run = build_run(_config(data, out / "resumed", resume_from_checkpoint=str(checkpoint)), ctx)
            started = build_run(_config(data, out / "started", start_from_model_statedict=str(checkpoint)), ctx)
        try:
            build_run(_config(data, out / "bad", resume_from_checkpoint=str(out / "missing.ckpt")), ctx)
            error = ""
        except ConfigError as exc:
            error = str(exc)
        torch.save({"step": run.position.global_step, "kernel": run.head.kernel.detach().clone(), "error": error,
                    "started": {k: v.clone() for k, v in started.model.state_dict().items()},
                    "pickled_tensors": len(pickled_tensors)},
                   out / f"rank{ctx.rank}.pt")
    finally:
        distributed.cleanup_distributed()


@pytest.mark.slow
def test_resume_reads_the_checkpoint_on_rank0_only(data, tmp_path):
    result = Trainer(build_run(_config(data, tmp_path / "first", limit_train_batches=2), DistContext())).fit()
    distributed.spawn(_resume_worker, 2, (data, tmp_path, result.last_checkpoint))
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(2)]
    saved = torch.load(result.last_checkpoint, weights_only=True)["state_dict"]
    for r in ranks:
        assert r["step"] == 2 and torch.equal(r["kernel"], saved["head.kernel"])
        assert "missing.ckpt: checkpoint not found" in r["error"]
        assert r["pickled_tensors"] == 0  # the state's tensors travel with the backend, not pickled
        for key, value in r["started"].items():  # rank 1 got the weights from rank 0
            assert torch.equal(value, saved[f"model.{key}"]), key


def test_loss_scaled_steps_skip_on_the_device(data, tmp_path, monkeypatch):
    """fp16's path (GradScaler with the fused SGD), run with a CPU scaler: a non-finite loss skips the
    step and lowers the scale, a finite one steps, neither waits for the device."""
    trainer = Trainer(build_run(_config(data, tmp_path / "run", precision="fp32"), DistContext()))
    trainer.run.scaler = torch.amp.GradScaler("cpu", init_scale=2.0**10, enabled=True)
    params = [p.detach().clone() for p in trainer.run.net.parameters()]
    images, labels = next(iter(trainer.run.loader))
    calls = _count_syncs(monkeypatch)
    trainer.snapshot.take()
    trainer.train_step(images, labels, group_size=1, last_in_group=True)
    skipped = trainer.optimizer_step(torch.tensor(float("nan")))
    unchanged = all(torch.equal(p, q) for p, q in zip(trainer.run.net.parameters(), params))
    trainer.snapshot.take()
    loss = trainer.train_step(images, labels, group_size=1, last_in_group=True)
    taken = trainer.optimizer_step(loss)
    assert calls == []
    monkeypatch.undo()
    assert skipped.item() == 1.0 and unchanged and trainer.run.scaler.get_scale() == 2.0**9
    assert taken.item() == 0.0 and not all(torch.equal(p, q) for p, q in zip(trainer.run.net.parameters(), params))


def test_steps_the_loss_scaler_skips_for_overflow_are_counted_as_skipped(data, tmp_path, monkeypatch):
    """fp16's gradient overflow, played by a scale so large that the scaled loss is infinite in float32
    while the loss itself is finite: the step is skipped, counted as skipped and left out of the loss."""
    trainer = Trainer(build_run(_config(data, tmp_path / "run", precision="fp32"), DistContext()))
    trainer.run.scaler = torch.amp.GradScaler("cpu", init_scale=3e38, enabled=True)
    params = [p.detach().clone() for p in trainer.run.net.parameters()]
    images, labels = next(iter(trainer.run.loader))
    calls = _count_syncs(monkeypatch)
    trainer.snapshot.take()
    loss = trainer.train_step(images, labels, group_size=1, last_in_group=True)
    trainer.window.add_step(loss, trainer.optimizer_step(loss), trainer.nonfinite)
    assert calls == []
    monkeypatch.undo()
    summary = trainer.window.collect(trainer.run.ctx)
    assert torch.isfinite(loss) and (summary.steps, summary.skipped, summary.skipped_total) == (0, 1, 1)
    assert summary.longest_skip_run == 0  # the scaler calibrating: not a non-finite loss
    assert all(torch.equal(p, q) for p, q in zip(trainer.run.net.parameters(), params))
    assert trainer.run.scaler.get_scale() < 3e38


@pytest.mark.parametrize("channels_last", [False, True])
def test_the_backbone_gets_the_layout_asked_for(channels_last):
    """--no_channels_last must really mean NCHW (the benchmark grid's "off" rows, evaluation)."""
    from facetrain.training.module import RecognitionNet
    from facetrain.training.amp import Precision

    layout = torch.channels_last if channels_last else torch.contiguous_format
    model, seen = build_model("tinynet"), []
    model.register_forward_pre_hook(lambda module, args: seen.append(args[0]))
    net = RecognitionNet(model, build_head("adaface", model.embedding_size, 4),
                         Precision("fp32", torch.device("cpu"), channels_last))
    images = torch.randint(0, 256, (2, 112, 112, 3), dtype=torch.uint8)
    net(images, torch.tensor([0, 3]))
    extract_features(model, images.numpy(), batch_size=2, channels_last=channels_last, progress=False)
    assert len(seen) == 2
    for x in seen:
        assert x.is_contiguous(memory_format=layout) and x.is_contiguous() != channels_last


def test_a_compiled_backbone_builds_the_training_module():
    """--compile: torch.compile's wrapper refuses truth tests (len()) in recent torch builds."""
    from facetrain.training.module import RecognitionNet
    from facetrain.training.amp import Precision, maybe_compile

    model = build_model("tinynet")
    compiled = maybe_compile(model, True)  # lazy: nothing compiles before the first call
    net = RecognitionNet(model, build_head("adaface", model.embedding_size, 4), Precision("fp32", torch.device("cpu")),
                         compiled)
    assert net._backbone[0] is compiled


# §1: precision auto on CPUs
@pytest.mark.parametrize("amx, avx512_bf16, expected", [(True, True, "bf16"), (False, True, "bf16"),
                                                        (False, False, "fp32")])
def test_auto_precision_follows_the_cpus_bf16_support(monkeypatch, amx, avx512_bf16, expected):
    from facetrain.precision import resolve_precision

    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx, raising=False)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: avx512_bf16, raising=False)
    assert resolve_precision("auto", torch.device("cpu")) == expected


# checkpoints load on a machine without the training device
def _tensors(obj):
    if isinstance(obj, torch.Tensor):
        yield obj
    elif hasattr(obj, "__dataclass_fields__"):
        yield from _tensors(vars(obj))
    elif isinstance(obj, dict):
        for value in obj.values():
            yield from _tensors(value)
    elif isinstance(obj, (list, tuple)):
        for value in obj:
            yield from _tensors(value)


def test_checkpoints_hold_cpu_tensors_only(tmp_path, monkeypatch):
    from facetrain.checkpoint import save_checkpoint

    with torch.device(META):  # the meta device plays the GPU
        model, head = build_model("tinynet"), build_head("adaface", 512, 10)
    extra = {"optimizer_states": [{"state": {0: {"momentum_buffer": torch.zeros(3, device=META)}}}],
             "rng_per_rank": [{"cuda_device": torch.zeros(2, dtype=torch.uint8, device=META), "python": (3, [1], None)}]}
    real_cpu, saved = torch.Tensor.cpu, {}
    # the device-to-host copy of a meta tensor: zeros of its shape
    monkeypatch.setattr(torch.Tensor, "cpu", lambda self: torch.zeros(self.shape, dtype=self.dtype) if self.is_meta
                        else real_cpu(self))
    monkeypatch.setattr(torch, "save", lambda obj, f: saved.update(obj=obj))
    save_checkpoint(tmp_path / "x.ckpt", model, head, extra=extra)
    tensors = list(_tensors(saved["obj"]))
    assert len(tensors) > 10 and {t.device.type for t in tensors} == {"cpu"}
    assert saved["obj"]["facetrain"]["extra"]["rng_per_rank"][0]["python"] == (3, [1], None)
