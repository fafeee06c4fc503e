"""Training-step throughput (img/s): backbone + margin head + loss + backward + SGD step on synthetic
uint8 batches, for arch x precision x channels_last x compile x batch size. Warm-up steps excluded.

    python benchmarks/train_throughput.py --quick            # CPU: ir_50 at batch 32, a few minutes
    python benchmarks/train_throughput.py --arch ir_50 ir_101 --batch_size 128 256 --device cuda --compile both
    python benchmarks/train_throughput.py --versus_reference --quick   # only: default step vs AdaFace-shaped step

The speed-up column is relative to fp32, channels-first, eager at the same arch / batch size.
`--versus_reference` times, interleaved in one process, our default step (`--precision auto`,
channels_last, fused SGD, uint8 input normalised in the step) against a step shaped like AdaFace's
reference (written here: plain fp32 eager, channels-first, float input normalised beforehand,
torch's default SGD, the loss read back every step as Lightning's progress bar does) and prints
the ratio.
"""
from __future__ import annotations

import argparse
import itertools
import time

import torch

from facetrain.data.transforms import normalize_batch
from facetrain.heads import build_head
from facetrain.models import build_model
from facetrain.precision import resolve_precision
from facetrain.training.amp import Precision, maybe_compile
from facetrain.training.module import RecognitionNet
from facetrain.training.optim import build_optimizer


def training_step(arch: str, precision: str, channels_last: bool, compile_: bool, batch_size: int,
                  device: torch.device, num_classes: int):
    """`facetrain train`'s step (RecognitionNet, fused SGD, the precision's scaler) on one fixed random batch."""
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

    return step


def measure(arch: str, precision: str, channels_last: bool, compile_: bool, batch_size: int, device: torch.device,
            steps: int, warmup: int, num_classes: int) -> float:
    step = training_step(arch, precision, channels_last, compile_, batch_size, device, num_classes)

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


def reference_step(arch: str, batch_size: int, device: torch.device, num_classes: int):
    """AdaFace-shaped training step: fp32, eager, contiguous NCHW float input, unfused SGD, loss.item()."""
    torch.manual_seed(0)
    model = build_model(arch).to(device).train()
    head = build_head("adaface", model.embedding_size, num_classes).to(device)
    optimizer = torch.optim.SGD([*model.parameters(), *head.parameters()], lr=0.1, momentum=0.9, weight_decay=5e-4)
    images = normalize_batch(torch.randint(0, 256, (batch_size, 112, 112, 3), dtype=torch.uint8)).to(device)
    labels = torch.randint(0, num_classes, (batch_size,), device=device)

    def step() -> None:
        embeddings, norms = model(images)
        loss = torch.nn.functional.cross_entropy(head(embeddings, norms, labels), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        loss.item()

    return step


def default_step(arch: str, batch_size: int, device: torch.device, num_classes: int):
    """`facetrain train`'s step with its defaults (precision auto, channels_last, fused SGD)."""
    return training_step(arch, resolve_precision("auto", device), True, False, batch_size, device, num_classes)


def versus_reference(arch: str, batch_size: int, device: torch.device, steps: int, warmup: int,
                     num_classes: int) -> tuple[float, float]:
    """(default img/s, reference img/s), timed in alternating single steps after warm-up. On a CPU
    the time is this process's CPU time (fair on a shared machine; with one thread, the wall time of
    an idle one), on a GPU the wall time."""
    clock = time.perf_counter if device.type == "cuda" else time.process_time
    steps_by_name = {"default": default_step(arch, batch_size, device, num_classes),
                     "reference": reference_step(arch, batch_size, device, num_classes)}
    seconds = dict.fromkeys(steps_by_name, 0.0)
    for _ in range(warmup):
        for step in steps_by_name.values():
            step()
    for _ in range(steps):
        for name, step in steps_by_name.items():
            if device.type == "cuda":
                torch.cuda.synchronize()
            tic = clock()
            step()
            if device.type == "cuda":
                torch.cuda.synchronize()
            seconds[name] += clock() - tic
    return steps * batch_size / seconds["default"], steps * batch_size / seconds["reference"]


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
    parser.add_argument("--threads", type=int, default=0, help="torch threads (default: torch's)")
    parser.add_argument("--versus_reference", action="store_true",
                        help="only the default step against the AdaFace-shaped reference step, and their ratio")
    args = parser.parse_args(argv)
    if args.quick:
        args.steps, args.warmup = 3, 1
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    flags = {"both": (False, True), "on": (True,), "off": (False,)}
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU ({torch.get_num_threads()} threads)"
    print(f"device: {name}; torch {torch.__version__}; {args.steps} timed steps after {args.warmup} warm-up")
    print(f"--precision auto chooses {resolve_precision('auto', device)} here ({cpu_features()})")
    if args.versus_reference:
        for arch, batch in itertools.product(args.arch, args.batch_size):
            ours, ref = versus_reference(arch, batch, device, args.steps, args.warmup, args.num_classes)
            print(f"{arch} batch {batch}: default step {ours:.1f} img/s, AdaFace-shaped reference step {ref:.1f} img/s, "
                  f"ratio {ours / ref:.2f}x", flush=True)
        return
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


def cpu_features() -> str:
    names = ("amx_tile", "avx512_bf16", "avx512", "avx2")
    found = [n for n in names if getattr(torch.cpu, f"_is_{n}_supported", lambda: False)()]
    return "CPU: " + (", ".join(found) or "none of " + ", ".join(names))


if __name__ == "__main__":
    main()
