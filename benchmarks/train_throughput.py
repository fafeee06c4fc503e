"""Training-step throughput (img/s): backbone + margin head + loss + backward + SGD step on synthetic
uint8 batches, for arch x precision x channels_last x compile x batch size. Warm-up steps excluded.

    python benchmarks/train_throughput.py --quick            # CPU: ir_50 at batch 32, a few minutes
    python benchmarks/train_throughput.py --arch ir_50 ir_101 --batch_size 128 256 --device cuda --compile both

The speed-up column is relative to fp32, channels-first, eager at the same arch / batch size.
"""
from __future__ import annotations

import argparse
import itertools
import time

import torch

from facetrain.heads import build_head
from facetrain.models import build_model
from facetrain.train.module import RecognitionNet
from facetrain.train.optim import build_optimizer
from facetrain.train.precision import Precision, maybe_compile, resolve_precision


def measure(arch: str, precision: str, channels_last: bool, compile_: bool, batch_size: int, device: torch.device,
            steps: int, warmup: int, num_classes: int) -> float:
    torch.manual_seed(0)
    policy = Precision(precision, device, channels_last)
    model = policy.prepare_model(build_model(arch).to(device))
    head = build_head("adaface", model.embedding_size, num_classes).to(device)
    net = RecognitionNet(model, head, policy, maybe_compile(model, compile_)).train()
    optimizer = build_optimizer(model, head, lr=0.1, momentum=0.9, weight_decay=5e-4)
    scaler = policy.make_scaler()
    images = torch.randint(0, 256, (batch_size, 112, 112, 3), dtype=torch.uint8, device=device)
    labels = torch.randint(0, num_classes, (batch_size,), device=device)

    def step() -> None:
        loss, _ = net(images, labels)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad(set_to_none=True)

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize()

    for _ in range(warmup):
        step()
    sync()
    tic = time.perf_counter()
    for _ in range(steps):
        step()
    sync()
    return steps * batch_size / (time.perf_counter() - tic)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", nargs="+", default=["ir_50"])
    parser.add_argument("--precision", nargs="+", default=["fp32", "bf16"], choices=("fp32", "fp16", "bf16"))
    parser.add_argument("--channels_last", choices=("both", "on", "off"), default="both")
    parser.add_argument("--compile", choices=("both", "on", "off"), default="off")
    parser.add_argument("--batch_size", nargs="+", type=int, default=[32])
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--num_classes", type=int, default=10000)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--quick", action="store_true", help="few steps (CPU-friendly): 3 timed after 1 warm-up")
    args = parser.parse_args(argv)
    if args.quick:
        args.steps, args.warmup = 3, 1
    device = torch.device(args.device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    flags = {"both": (False, True), "on": (True,), "off": (False,)}
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU ({torch.get_num_threads()} threads)"
    print(f"device: {name}; torch {torch.__version__}; default precision here: "
          f"{resolve_precision('auto', device)}; {args.steps} timed steps after {args.warmup} warm-up")
    print(f"{'arch':<14} {'batch':>5} {'precision':<9} {'layout':<15} {'compile':<7} {'img/s':>9} {'speed-up':>8}")
    for arch, batch in itertools.product(args.arch, args.batch_size):
        baseline = None
        for precision, cl, comp in itertools.product(args.precision, flags[args.channels_last], flags[args.compile]):
            if precision == "fp16" and device.type != "cuda":
                continue
            speed = measure(arch, precision, cl, comp, batch, device, args.steps, args.warmup, args.num_classes)
            if precision == "fp32" and not cl and not comp:
                baseline = speed
            ratio = f"{speed / baseline:.2f}x" if baseline else "-"
            layout = "channels_last" if cl else "channels_first"
            print(f"{arch:<14} {batch:>5} {precision:<9} {layout:<15} {'yes' if comp else 'no':<7} {speed:>9.1f} {ratio:>8}",
                  flush=True)


if __name__ == "__main__":
    main()
