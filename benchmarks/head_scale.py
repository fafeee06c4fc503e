"""Partial FC at scale: per-rank memory and step time of the head (forward + backward + SGD step with
momentum and weight decay) for 100k / 1M / 2.06M classes, 1 / 2 / 4 / 8 ranks, sample_rate 1.0 / 0.1.

    python benchmarks/head_scale.py [--classes 100000 1000000 2060000] [--world_sizes 1 2 4 8]
        [--sample_rates 1.0 0.1] [--batch 128] [--memory_budget_gb 5] [--gloo_classes 100000] [--gloo_batch 16]

Each rank of W does the work of a single process holding ceil(C / W) classes for a global batch of
W x batch (the all-gathered embeddings): that is measured in a fresh process per row, within
--memory_budget_gb (peak RSS growth = the head's peak memory; step = median wall time of 3 steps,
1 CPU thread). Rows over the budget are computed from the memory model below (checked against the
measured rows: column `model`, calibrated on them). Head state = centres + momentum (fp32); the gradient lives only
during the step (zero_grad(set_to_none=True)).

GPU on paper: the head step's FLOPs and bytes are counted op by op (torch dispatch, on the CPU run;
fp32 matmuls, SGD as separate element-wise passes) and an IR-50 training step's likewise (bf16, meta
device); each op takes max(FLOPs / peak, bytes / bandwidth) on an H200 (989 TFLOPS bf16, 67 TFLOPS
fp32 without TF32, 4.8 TB/s), summed. Collectives (all-gather of W x batch x 512 floats and its
reduce-scatter, three all-reduces of W x batch floats) are not counted: ~2 MB over NVLink per step at
batch 128.

--gloo_classes: real runs of W gloo processes (collectives included) for that class count, to show
the per-rank figures match the single-process simulation (8 processes share this machine's cores).
"""
from __future__ import annotations

import argparse
import os
import resource
import statistics
import time

import torch
import torch.multiprocessing as mp
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten
from torch.utils.flop_counter import flop_registry

from facetrain.heads import build_margin
from facetrain.heads.partial_fc import PartialFC, Shard
from facetrain.training.distributed import free_port

E = 512
GPU = {"name": "H200 SXM", "bf16_flops": 989e12, "fp32_flops": 67e12, "bytes_per_s": 4.8e12}


class Roofline(TorchDispatchMode):
    """FLOPs, bytes read and written, and GPU time of every op (views are free): per op
    max(FLOPs / peak for its dtype, bytes / bandwidth), summed (no fusion, no overlap between ops).
    An in-place indexed update (index_add_, scatter_, index_fill_ ...) touches only the indexed part
    of its destination: its index and source are counted, read and written."""

    def __init__(self, gpu: dict) -> None:
        super().__init__()
        self.gpu = gpu
        self.flops = self.bytes = 0
        self.seconds = 0.0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        if func.is_view:
            return out
        base = func.__name__.split(".")[0]
        if base.endswith("_") and ("index" in base or "scatter" in base):
            moved = 2 * _nbytes((args[1:], kwargs))
        else:
            moved = _nbytes((args, kwargs, out))
        formula = flop_registry.get(func._overloadpacket)
        flops = formula(*args, **kwargs, out_val=out) if formula else 0
        dtype = next((t.dtype for t in tree_flatten(args)[0] if isinstance(t, torch.Tensor)), torch.float32)
        peak = self.gpu["fp32_flops"] if dtype == torch.float32 else self.gpu["bf16_flops"]
        self.flops, self.bytes = self.flops + flops, self.bytes + moved
        self.seconds += max(flops / peak, moved / self.gpu["bytes_per_s"])
        return out


def _nbytes(tree) -> int:
    return sum(t.numel() * t.element_size() for t in tree_flatten(tree)[0] if isinstance(t, torch.Tensor))


def num_sample(classes: int, world: int, rate: float, global_batch: int) -> tuple[int, int]:
    n = Shard(classes, world, 0).size
    k = n if rate >= 1.0 else min(n, max(int(rate * n), global_batch))
    return n, k


def memory_model(n: int, k: int, global_batch: int, rate: float) -> float:
    """Peak bytes of a rank, calibrated on the measured rows: (E x shard) fp32 tensors x 8 without
    sampling (centres, momentum, gradient, normalised centres and their gradient, temporaries of the
    normalisation's backward and of SGD's weight decay) or x 4 with it (centres, momentum, the dense
    gradient, SGD's temporary); plus the sampled columns (x3), the
    (global batch x k) cosines, logits and probabilities (x4) and the gathered embeddings (x3)."""
    dense, sampled = (8, 0) if rate >= 1.0 else (4, 3)
    return 4 * (dense * E * n + sampled * E * k + 4 * global_batch * k + 3 * global_batch * E)


def _head_step(head: PartialFC, optimizer: torch.optim.Optimizer, batch: int, classes: int) -> None:
    embeddings = torch.nn.functional.normalize(torch.randn(batch, E), dim=1).requires_grad_()
    norms, labels = torch.rand(batch, 1) * 30, torch.randint(0, classes, (batch,))
    head(embeddings, norms, labels).backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def _warm_rss() -> int:
    """Peak RSS after one step of a tiny head (torch's one-time allocations), the baseline of `peak`."""
    head = PartialFC(build_margin("adaface"), E, 64, 0.5)
    _head_step(head, torch.optim.SGD(head.parameters(), lr=0.1, momentum=0.9), 8, 64)
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _measure(classes: int, rate: float, batch: int, steps: int, queue) -> None:
    """One rank's work in this process (world 1): peak memory growth, median step, FLOPs and bytes."""
    torch.set_num_threads(1)
    before = _warm_rss()
    head = PartialFC(build_margin("adaface"), E, classes, rate)
    optimizer = torch.optim.SGD(head.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
    _head_step(head, optimizer, batch, classes)
    times = []
    for _ in range(steps):
        tic = time.perf_counter()
        _head_step(head, optimizer, batch, classes)
        times.append(time.perf_counter() - tic)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - before
    with Roofline(GPU) as cost:
        _head_step(head, optimizer, batch, classes)
    queue.put({"peak": peak, "step_s": statistics.median(times), "flops": cost.flops, "bytes": cost.bytes,
               "gpu_s": cost.seconds})


def _gloo_rank(rank: int, world: int, port: int, classes: int, rate: float, batch: int, steps: int, queue) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.distributed.init_process_group("gloo", rank=rank, world_size=world)
    torch.set_num_threads(1)
    before = _warm_rss()
    head = PartialFC(build_margin("adaface"), E, classes, rate)
    optimizer = torch.optim.SGD(head.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
    times = []
    for step in range(steps + 1):
        torch.distributed.barrier()
        tic = time.perf_counter()
        _head_step(head, optimizer, batch, classes)
        if step:
            times.append(time.perf_counter() - tic)
    queue.put({"rank": rank, "peak": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - before,
               "step_s": statistics.median(times)})
    torch.distributed.destroy_process_group()


def in_fresh_process(target, args: tuple, ranks: int = 0) -> list[dict]:
    """Run target(*args, queue) in a new process, or target(rank, *args, queue) in `ranks` processes."""
    context = mp.get_context("spawn")
    queue = context.Queue()
    arg_lists = [(rank, *args, queue) for rank in range(ranks)] if ranks else [(*args, queue)]
    procs = [context.Process(target=target, args=a) for a in arg_lists]
    for p in procs:
        p.start()
    results = [queue.get(timeout=1800) for _ in procs]
    for p in procs:
        p.join()
    return results


def ir50_step_cost(batch: int) -> Roofline:
    """FLOPs, bytes and GPU time of an IR-50 training step (forward, backward, SGD) in bf16 (meta device)."""
    from facetrain.models import build_model

    with torch.device("meta"):
        model = build_model("ir_50").to(torch.bfloat16)
        x = torch.empty(batch, 3, 112, 112, dtype=torch.bfloat16)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4, foreach=False)
    with Roofline(GPU) as cost:
        embeddings, norms = model(x)
        (embeddings.float().sum() + norms.float().sum()).backward()
        optimizer.step()
    return cost


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--classes", nargs="+", type=int, default=[100_000, 1_000_000, 2_060_000])
    parser.add_argument("--world_sizes", nargs="+", type=int, default=[1, 2, 4, 8])
    parser.add_argument("--sample_rates", nargs="+", type=float, default=[1.0, 0.1])
    parser.add_argument("--batch", type=int, default=128, help="per rank (the global batch is W x batch)")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--memory_budget_gb", type=float, default=5.0)
    parser.add_argument("--max_gflop", type=float, default=100.0,
                        help="measure only rows whose head step is at most this many GFLOP (6 x batch x sampled x 512)")
    parser.add_argument("--gloo_classes", type=int, default=100_000, help="0 = no multi-process runs")
    parser.add_argument("--gloo_batch", type=int, default=16)
    args = parser.parse_args()

    ir50 = ir50_step_cost(args.batch)
    ir_time = ir50.seconds
    print(f"IR-50 step, batch {args.batch} per rank, bf16: {ir50.flops / 1e12:.2f} TFLOP, {ir50.bytes / 1e9:.1f} GB "
          f"moved -> {1e3 * ir_time:.1f} ms on an {GPU['name']} (per-op roofline)\n")
    print("| classes | ranks | sample_rate | shard | sampled | head state / rank | peak / rank | model | "
          "CPU step (1 thread) | GFLOP | GB moved | GPU step (paper) | / IR-50 step |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for classes in args.classes:
        for world in args.world_sizes:
            for rate in args.sample_rates:
                global_batch = world * args.batch
                n, k = num_sample(classes, world, rate, global_batch)
                model = memory_model(n, k, global_batch, rate)
                state = 2 * 4 * E * n
                row = [f"{classes:,}", str(world), f"{rate:g}", f"{n:,}", f"{k:,}", f"{state / 2**30:.2f} GiB"]
                if model <= args.memory_budget_gb * 2**30 and 6 * global_batch * k * E <= args.max_gflop * 1e9:
                    m = in_fresh_process(_measure, (n, rate, global_batch, args.steps))[0]
                    gpu = m["gpu_s"]
                    row += [f"{m['peak'] / 2**30:.2f} GiB", f"{model / 2**30:.2f} GiB", f"{1e3 * m['step_s']:.0f} ms",
                            f"{m['flops'] / 1e9:.0f}", f"{m['bytes'] / 1e9:.1f}", f"{1e3 * gpu:.2f} ms",
                            f"{100 * gpu / ir_time:.1f}%"]
                else:
                    row += ["(not run)", f"{model / 2**30:.2f} GiB", "", f"{6 * global_batch * k * E / 1e9:.0f}", "", "",
                            ""]
                print("| " + " | ".join(row) + " |", flush=True)
    if args.gloo_classes:
        print(f"\nreal gloo processes, {args.gloo_classes:,} classes, batch {args.gloo_batch} per rank "
              "(ranks share this machine's cores):\n")
        print("| ranks | sample_rate | peak / rank (max) | step (median, slowest rank) |\n|---|---|---|---|")
        for world in [w for w in args.world_sizes if w > 1]:
            for rate in args.sample_rates:
                results = in_fresh_process(_gloo_rank, (world, free_port(), args.gloo_classes, rate, args.gloo_batch,
                                                        args.steps), ranks=world)
                print(f"| {world} | {rate:g} | {max(r['peak'] for r in results) / 2**30:.3f} GiB | "
                      f"{1e3 * max(r['step_s'] for r in results):.0f} ms |", flush=True)


if __name__ == "__main__":
    main()
