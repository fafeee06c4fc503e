"""Partial FC: shards, initial centres, sampling (positives kept, negatives uniform), and on two gloo
processes: the same SGD steps as one process with the full head (sample_rate 1.0; AdaFace, ArcFace,
CosFace; an odd class count), and with sampling the loss of the full softmax restricted to the
sampled classes."""
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from facetrain.heads import build_head, build_margin
from facetrain.heads.partial_fc import INIT_BLOCK, PartialFC, Shard, all_shards, init_centres, sample_columns
from facetrain.training.amp import Precision
from facetrain.training.config import TrainConfig
from facetrain.training.distributed import DistContext, cleanup_distributed, init_distributed, spawn
from facetrain.training.module import RecognitionNet, build_model_and_head
from facetrain.training.optim import build_optimizer

CLASSES = 11  # odd: shards of 6 and 5
GLOBAL_BATCH = 8
STEPS = 3
HEADS = ("adaface", "arcface", "cosface")
SAMPLED_CLASSES, SAMPLE_RATE = 301, 0.1  # shards of 151 and 150: 15 columns each, 8 labels at most
# Two processes sum the same float32 terms in another order (all-reduce, sharded softmax). A logit is
# s * cos with s = 64 and cos a sum of 512 products, so reordering moves it by about
# s * sqrt(512) * eps32 = 1.7e-4, and a loss of ~56 as much: relative 1e-5 (5.6e-4 at 56) covers that
# on every CPU kind, while a wrong step (a gradient twice too large, a missing class) moves it by > 0.1.
RTOL, ATOL = 1e-5, 1e-5


def test_shards_split_classes_evenly_and_contiguously():
    assert [(s.start, s.stop) for s in all_shards(11, 4)] == [(0, 3), (3, 6), (6, 9), (9, 11)]
    assert [s.size for s in all_shards(2_060_000, 8)] == [257_500] * 8
    assert Shard(5, 5, 4).size == 1


def test_initial_centres_do_not_depend_on_the_number_of_processes():
    classes = INIT_BLOCK + 1000  # shards that straddle a block boundary
    whole = init_centres(4, 0, classes, seed=7)
    assert whole.shape == (4, classes)
    assert torch.allclose(whole.norm(dim=0), torch.ones(classes))
    parts = [init_centres(4, s.start, s.stop, seed=7) for s in all_shards(classes, 3)]
    assert torch.equal(torch.cat(parts, dim=1), whole)
    assert not torch.equal(init_centres(4, 0, classes, seed=8), whole)


def test_one_process_equals_the_full_head():
    torch.manual_seed(0)
    embeddings = F.normalize(torch.randn(6, 16), dim=1)
    norms, labels = torch.rand(6, 1) * 30, torch.tensor([0, 4, 4, 9, 12, 1])
    pfc = PartialFC(build_margin("adaface"), 16, 13, seed=1)
    full = build_head("adaface", 16, 13)
    full.kernel.data.copy_(init_centres(16, 0, 13, seed=1))
    assert torch.allclose(pfc(embeddings, norms, labels), F.cross_entropy(full(embeddings, norms, labels), labels),
                          atol=1e-5)


def test_sampled_columns_alone_get_the_restricted_softmax_gradient():
    torch.manual_seed(0)
    embeddings = F.normalize(torch.randn(6, 16), dim=1)
    norms, labels = torch.rand(6, 1) * 30, torch.tensor([0, 4, 4, 9, 33, 1])
    pfc = PartialFC(build_margin("arcface"), 16, 40, sample_rate=0.25, seed=1)
    torch.manual_seed(5)
    pfc(embeddings, norms, labels).backward()
    torch.manual_seed(5)
    kept, columns = sample_columns(labels, 40, pfc.num_sample(6))
    centres = init_centres(16, 0, 40, seed=1)[:, kept].requires_grad_()
    logits = build_margin("arcface")(embeddings @ F.normalize(centres, dim=0), columns, norms)
    F.cross_entropy(logits, columns).backward()
    assert kept.shape == (10,)
    assert torch.allclose(pfc.kernel.grad[:, kept], centres.grad, atol=1e-6)
    unsampled = torch.ones(40, dtype=torch.bool)
    unsampled[kept] = False
    assert torch.all(pfc.kernel.grad[:, unsampled] == 0)


def test_sampling_keeps_every_positive_and_maps_labels():
    generator = np.random.default_rng(0)
    for _ in range(200):
        labels = torch.from_numpy(generator.integers(-1, 40, 12))
        kept, mapped = sample_columns(labels, 40, 15)
        assert kept.shape == (15,) and torch.equal(kept, kept.unique())  # sorted, distinct
        for label, position in zip(labels.tolist(), mapped.tolist()):
            assert position == -1 if label < 0 else kept[position] == label


def test_sampled_negatives_are_uniform():
    torch.manual_seed(0)
    labels = torch.tensor([0, 1, 1, -1])  # positives 0 and 1; 4 negatives of the other 18 per draw
    counts, draws = torch.zeros(20), 9000
    for _ in range(draws):
        kept, _ = sample_columns(labels, 20, 6)
        counts[kept] += 1
    assert counts[0] == counts[1] == draws
    # each negative expected 9000 * 4 / 18 = 2000 times; chi-square goodness of fit with 17 degrees of
    # freedom below 40.79, its 0.999 quantile (tables): uniform draws fail this once in a thousand seeds
    chi_square = ((counts[2:] - 2000) ** 2 / 2000).sum()
    assert chi_square < 40.79
    assert counts[2:].sum() == draws * 4


# --------------------------------------------------------------------- two gloo processes
def _config(head: str, partial_fc: bool) -> TrainConfig:
    return TrainConfig(arch="tinynet", head=head, partial_fc=partial_fc, seed=5, gpus=0)


def _batch(step: int) -> tuple[torch.Tensor, torch.Tensor]:
    rng = np.random.default_rng(step)
    images = torch.from_numpy(rng.integers(0, 256, (GLOBAL_BATCH, 112, 112, 3), dtype=np.uint8))
    return images, torch.from_numpy(rng.integers(0, CLASSES, GLOBAL_BATCH))


def _train(head: str, ctx: DistContext) -> dict:
    """STEPS SGD steps (momentum, weight decay); Partial FC under DDP when ctx has 2 processes."""
    torch.manual_seed(0)
    model, classifier = build_model_and_head(_config(head, partial_fc=ctx.enabled), CLASSES)
    if not ctx.enabled:
        classifier.kernel.data.copy_(init_centres(model.embedding_size, 0, CLASSES, seed=5))
    net = RecognitionNet(model, classifier, Precision("fp32", torch.device("cpu")))
    optimizer = build_optimizer(model, classifier, lr=0.1, momentum=0.9, weight_decay=5e-4)
    runner = nn.parallel.DistributedDataParallel(net) if ctx.enabled else net
    net.train()
    # batch norm and dropout in eval mode: DDP normalises with per-process batch statistics
    # (SyncBatchNorm does not run on CPU) and draws dropout masks per process
    for m in model.modules():
        if isinstance(m, (nn.modules.batchnorm._BatchNorm, nn.Dropout)):
            m.eval()
    per_rank = GLOBAL_BATCH // ctx.world_size
    mine = slice(ctx.rank * per_rank, (ctx.rank + 1) * per_rank)
    losses = []
    for step in range(STEPS):
        images, labels = _batch(step)
        loss, _ = runner(images[mine], labels[mine])
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(loss.detach())
    state = {f"model.{k}": v.detach().clone() for k, v in model.state_dict().items()}
    state.update({f"margin.{k}": v.clone() for k, v in classifier.margin.state_dict().items()})
    return {"state": state, "kernel": classifier.kernel.detach().clone(), "losses": torch.stack(losses)}


def _sampled_loss(ctx: DistContext) -> dict:
    """One forward with sampling, and the classes each rank kept (drawn again from the same seed)."""
    generator = torch.Generator().manual_seed(11)
    embeddings = F.normalize(torch.randn(GLOBAL_BATCH, 16, generator=generator), dim=1)
    norms = torch.rand(GLOBAL_BATCH, 1, generator=generator) * 40
    labels = torch.randint(0, SAMPLED_CLASSES, (GLOBAL_BATCH,), generator=generator)
    pfc = PartialFC(build_margin("adaface"), 16, SAMPLED_CLASSES, SAMPLE_RATE, seed=2)
    per_rank = GLOBAL_BATCH // ctx.world_size
    mine = slice(ctx.rank * per_rank, (ctx.rank + 1) * per_rank)
    torch.manual_seed(100 + ctx.rank)
    loss = pfc(embeddings[mine], norms[mine], labels[mine])
    torch.manual_seed(100 + ctx.rank)
    local = labels - pfc.shard.start
    local = torch.where((local >= 0) & (local < pfc.shard.size), local, -1)
    kept, _ = sample_columns(local, pfc.shard.size, pfc.num_sample(GLOBAL_BATCH))
    return {"loss": loss.detach(), "kept": kept + pfc.shard.start, "embeddings": embeddings, "norms": norms,
            "labels": labels}


NEWER_COLLECTIVES = ("all_gather_single", "reduce_scatter_single")  # not in torch 2.11, for one


def _worker(out: Path) -> None:
    torch.set_num_threads(1)
    ctx = init_distributed(gpus=0)
    try:
        for head in HEADS:
            if head == HEADS[-1]:  # from here on as with a torch build that has only the older names
                for name in NEWER_COLLECTIVES:
                    if hasattr(dist, name):
                        delattr(dist, name)
            torch.save(_train(head, ctx), out / f"{head}-{ctx.rank}.pt")
        torch.save(_sampled_loss(ctx), out / f"sampled-{ctx.rank}.pt")
        dist.barrier()
    finally:
        cleanup_distributed()


@pytest.fixture(scope="module")
def two_processes(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("pfc")
    threads = torch.get_num_threads()
    try:
        spawn(_worker, 2, (out,))
    finally:
        torch.set_num_threads(threads)
    return out


@pytest.mark.parametrize("head", HEADS)
def test_two_processes_take_the_steps_of_one_process_with_the_full_head(two_processes, head):
    ranks = [torch.load(two_processes / f"{head}-{r}.pt") for r in range(2)]
    single = _train(head, DistContext())
    assert [r["kernel"].shape[1] for r in ranks] == [6, 5]
    consolidated = torch.cat([r["kernel"] for r in ranks], dim=1)
    initial = init_centres(consolidated.shape[0], 0, CLASSES, seed=5)
    assert (single["kernel"] - initial).abs().max() > 1e-3  # the steps moved the centres
    assert torch.allclose(consolidated, single["kernel"], rtol=RTOL, atol=ATOL)
    for r in ranks:
        assert torch.allclose(r["losses"], single["losses"], rtol=RTOL, atol=ATOL)
        for key, value in single["state"].items():
            assert torch.allclose(r["state"][key].float(), value.float(), rtol=RTOL, atol=ATOL), key
    if head == "adaface":  # statistics of the global batch, identical on both ranks
        assert torch.equal(ranks[0]["state"]["margin.batch_std"], ranks[1]["state"]["margin.batch_std"])


def test_sampled_loss_is_the_softmax_over_the_sampled_classes(two_processes):
    ranks = [torch.load(two_processes / f"sampled-{r}.pt") for r in range(2)]
    data = ranks[0]
    kept = torch.cat([r["kept"] for r in ranks])
    assert kept.shape == (30,) and set(data["labels"].tolist()) <= set(kept.tolist())
    # straightforward: cosines to the kept centres, the true class's margin, plain cross-entropy
    centres = F.normalize(init_centres(16, 0, SAMPLED_CLASSES, seed=2)[:, kept], dim=0)
    columns = torch.tensor([kept.tolist().index(label) for label in data["labels"].tolist()])
    margin = build_margin("adaface")
    expected = F.cross_entropy(margin(data["embeddings"] @ centres, columns, data["norms"]), columns)
    assert torch.allclose(ranks[0]["loss"], expected, atol=1e-5)
    assert torch.equal(ranks[0]["loss"], ranks[1]["loss"])
    full = F.cross_entropy(margin(data["embeddings"] @ init_centres(16, 0, SAMPLED_CLASSES, seed=2),
                                  data["labels"], data["norms"]), data["labels"])
    assert not torch.allclose(full, expected, atol=1e-3)  # sampling really changed the loss


# ---- consolidate: every shard is checked against the layout the main file gives -------------------

def _sharded_checkpoint(root: Path, classes: int = 20, world_size: int = 2, embedding: int = 8) -> Path:
    """A main file and its shards as `facetrain train --partial_fc` lays them out (pfc_state.save_shard)."""
    from facetrain.checkpoint import save_checkpoint
    from facetrain.heads.partial_fc import Shard
    from facetrain.models import build_model
    from facetrain.heads.partial_fc_checkpoint import shard_dir

    main_file = root / "last.ckpt"
    names = [f"rank{r}of{world_size}-step3.pt" for r in range(world_size)]
    shard_dir(main_file).mkdir(parents=True)
    for r, name in enumerate(names):
        s = Shard(classes, world_size, r)
        kernel = torch.full((embedding, s.stop - s.start), float(r))
        torch.save({"kernel": kernel, "momentum": kernel * 0.5, "start": s.start, "stop": s.stop,
                    "num_classes": classes, "rank": r, "world_size": world_size}, shard_dir(main_file) / name)
    save_checkpoint(main_file, build_model("tinynet"), extra={"partial_fc": {"num_classes": classes,
                                                                             "world_size": world_size, "shards": names}})
    return main_file


def _consolidate_error(capsys, main_file: Path, out: Path) -> str:
    from facetrain.cli import main

    capsys.readouterr()
    assert main(["consolidate", str(main_file), "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ") and "weights_only" not in err, err
    assert not out.exists() and not list(out.parent.glob(out.name + ".tmp-*"))
    return err


def test_consolidate_gathers_the_shards(tmp_path, capsys):
    from facetrain.checkpoint import load_checkpoint
    from facetrain.cli import main

    main_file = _sharded_checkpoint(tmp_path)
    assert main(["consolidate", str(main_file), "--out", str(tmp_path / "full.ckpt")]) == 0
    kernel = load_checkpoint(tmp_path / "full.ckpt")["state_dict"]["head.kernel"]
    assert kernel.shape == (8, 20) and kernel[:, :10].eq(0).all() and kernel[:, 10:].eq(1).all()


@pytest.mark.parametrize("damage, fragment", [
    ("5_of_20_columns", "rank1of2-step3.pt: holds 5 class centres, but rank 1 of 2 holds classes [10, 20) of 20"),
    ("truncated", "rank1of2-step3.pt: unreadable Partial FC shard, truncated or corrupt"),
    ("pickle_payload", "rank1of2-step3.pt: Partial FC shard cannot be loaded safely"),
    ("momentum_shape", "rank1of2-step3.pt: momentum of shape torch.Size([8, 3])"),
    ("other_embedding_size", "shards of different embedding sizes ([8, 9])"),
])
def test_consolidate_refuses_a_shard_that_does_not_fit(tmp_path, capsys, damage, fragment):
    main_file = _sharded_checkpoint(tmp_path)
    shard = main_file.with_name("last.ckpt.pfc") / "rank1of2-step3.pt"
    record = torch.load(shard)
    if damage == "5_of_20_columns":
        record["kernel"] = record["kernel"][:, :5]
        record["momentum"] = record["momentum"][:, :5]
        torch.save(record, shard)
    elif damage == "truncated":
        shard.write_bytes(shard.read_bytes()[:300])
    elif damage == "pickle_payload":
        torch.save({"kernel": record["kernel"], "payload": _Payload()}, shard)
    elif damage == "momentum_shape":
        record["momentum"] = record["momentum"][:, :3]
        torch.save(record, shard)
    else:
        record["kernel"] = torch.zeros(9, 10)
        record["momentum"] = None
        torch.save(record, shard)
    assert fragment in _consolidate_error(capsys, main_file, tmp_path / "full.ckpt")


class _Payload:
    """Any class: its pickle would run code on load, so weights_only refuses it."""


def test_consolidate_on_a_full_disk_is_one_line_and_leaves_nothing(tmp_path):
    main_file = _sharded_checkpoint(tmp_path, classes=4000, embedding=64)
    out = tmp_path / "out" / "full.ckpt"
    out.parent.mkdir()
    code = ("import resource, signal, sys; signal.signal(signal.SIGXFSZ, signal.SIG_IGN);"
            "resource.setrlimit(resource.RLIMIT_FSIZE, (200000, 200000));"  # the disk fills up after 200 kB
            f"from facetrain.cli import main; sys.exit(main(['consolidate', {str(main_file)!r}, '--out', {str(out)!r}]))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1 and proc.stderr.count("\n") == 1, proc.stderr
    assert proc.stderr.startswith(f"error: {out}: cannot write the consolidated checkpoint (") and \
        proc.stderr.rstrip().endswith("); nothing was written")
    assert list(out.parent.iterdir()) == []
