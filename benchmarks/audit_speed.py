"""Speed of the audit's exact neighbour search on precomputed random unit embeddings.

    python benchmarks/audit_speed.py [--train 100000] [--refs 10000] [--dim 512] [--threads 2] [--device cpu]
                                     [--precision auto fp32] [--identities 30000]

Times `facetrain.audit.neighbours.search` (every pair above the threshold plus each reference's nearest
training image) for refs x train, checks its pairs against a float32 brute force on a slice, and
extrapolates the measured rate (pairs scored per second) to 1 M training x 100 k reference images and to
the 30 k x 30 k identity-centroid search of such a dataset. Goal: <= 10 s for 100 k x 10 k on
2 CPU cores. CPU seconds are printed too: on a shared machine, CPU-s / threads is the idle wall time.
`--device cuda` runs the same code on a GPU.
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from facetrain.audit.neighbours import bf16_is_fast, search


def unit_rows(rng: np.random.Generator, n: int, dim: int) -> np.ndarray:
    x = rng.standard_normal((n, dim), dtype=np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train", type=int, default=100_000)
    parser.add_argument("--refs", type=int, default=10_000)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (0 = torch's default)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precision", nargs="+", default=["auto", "fp32"], choices=["auto", "fp32", "bf16"])
    parser.add_argument("--threshold", type=float, default=0.3)
    parser.add_argument("--identities", type=int, default=30_000, help="identities of the 1 M-image extrapolation")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    rng = np.random.default_rng(0)
    train = unit_rows(rng, args.train, args.dim)
    refs = unit_rows(rng, args.refs, args.dim)
    planted = rng.choice(args.train, args.refs // 100, replace=False)  # 1% of references leak, with noise
    noisy = train[planted] + 0.05 * rng.standard_normal((len(planted), args.dim), dtype=np.float32)
    refs[: len(planted)] = noisy / np.linalg.norm(noisy, axis=1, keepdims=True)
    device = torch.device(args.device)
    print(f"{args.refs} refs x {args.train} train x {args.dim} dims, device {device}, "
          f"torch threads {torch.get_num_threads()}, bf16 fast here: {bf16_is_fast(device)}")
    check = slice(0, min(2000, args.refs))
    brute = refs[check] @ train.T
    rows, cols = np.nonzero(brute >= args.threshold)
    for precision in args.precision:
        low = {"auto": None, "fp32": False, "bf16": True}[precision]
        search(refs[:256], train[:20_000], args.threshold, device=device, low_precision=low)  # warm-up
        tic, cpu = time.perf_counter(), time.process_time()
        found = search(refs, train, args.threshold, device=device, low_precision=low)
        if device.type == "cuda":
            torch.cuda.synchronize()
        seconds, cpu = time.perf_counter() - tic, time.process_time() - cpu
        in_check = found.query < check.stop
        exact = (np.array_equal(found.query[in_check], rows) and np.array_equal(found.key[in_check], cols)
                 and np.array_equal(found.best_key[check], brute.argmax(1)))
        # on a shared machine the CPU time per thread is the wall time the search would take on idle cores
        idle = min(seconds, cpu / torch.get_num_threads()) if device.type == "cpu" else seconds
        rate = args.refs * args.train / idle
        big = 1_000_000 * 100_000 / rate
        ids = args.identities ** 2 / rate
        print(f"{precision:>5}: {seconds:7.2f} s wall, {cpu:7.2f} CPU-s, idle-core estimate {idle:6.2f} s  "
              f"{rate / 1e9:6.3f} G pairs/s  pairs {len(found.query):>6} "
              f"(planted {len(planted)})  equal to brute force: {exact}  ->  1M x 100k: {big:8.0f} s "
              f"({big / 60:.1f} min), {args.identities} identity centroids: {ids:.1f} s")


if __name__ == "__main__":
    main()
