"""MTCNN detection + alignment speed on a real photo (skimage's astronaut, resized), per detector.

    python benchmarks/align_speed.py [--sizes 1280x886 640x443] [--threads 1 0] [--device cpu] [--repeats 10]
                                     [--detectors adaface facenet adaface@0.709]

Prints one row per (detector, size, torch threads): pyramid levels, faces found, median and best
wall time of `FaceAligner.align` (detection + warp), and the best CPU time of the calling thread
(with 1 thread: the time an idle core would take, even when other processes share the machine).
threads 0 = torch's default. A detector is `adaface` (default: AdaFace's own pipeline, pyramid
factor 0.85), `facenet` (facenet-pytorch's conventions, factor 0.709), or `NAME@FACTOR`:
`adaface@0.709` shows what the 0.85 pyramid costs. Target: <= 0.3 s for a
1280x886 photo on one core.
"""
from __future__ import annotations

import argparse
import statistics
import time

import cv2
import numpy as np
import torch
from skimage import data

from facetrain.alignment.aligner import FaceAligner


def photo(width: int, height: int) -> np.ndarray:
    """The astronaut photo on a larger canvas of the requested size (face stays ~1/5 of the height)."""
    canvas = np.full((height, width, 3), 120, np.uint8)
    side = min(width, height)
    canvas[:side, (width - side) // 2 : (width - side) // 2 + side] = cv2.resize(data.astronaut(), (side, side))
    return canvas


def build(spec: str, device: str) -> FaceAligner:
    name, _, factor = spec.partition("@")
    return FaceAligner(device=device, detector=name, factor=float(factor) if factor else None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", nargs="+", default=["1280x886", "640x443"])
    parser.add_argument("--threads", nargs="+", type=int, default=[1, 0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--detectors", nargs="+", default=["adaface", "facenet", "adaface@0.709"])
    args = parser.parse_args()

    default_threads = torch.get_num_threads()
    print(f"device {args.device}, torch {torch.__version__}")
    print(f"{'detector':>14} {'image':>10} {'threads':>7} {'levels':>6} {'faces':>5} "
          f"{'median s':>9} {'best s':>8} {'best cpu s':>10}")
    for spec in args.detectors:
        aligner = build(spec, args.device)
        label = f"{aligner.detector.style}@{aligner.detector.factor:g}"
        for size in args.sizes:
            width, height = (int(v) for v in size.split("x"))
            image = photo(width, height)
            levels = aligner.detector.pyramid_levels(height, width)
            for threads in args.threads:
                torch.set_num_threads(threads or default_threads)
                faces = len(aligner.detector.detect(image)[0])  # warm-up
                times, cpu_times = [], []
                for _ in range(args.repeats):
                    start, start_cpu = time.perf_counter(), time.thread_time()
                    aligner.align(image)
                    if args.device.startswith("cuda"):
                        torch.cuda.synchronize()
                    times.append(time.perf_counter() - start)
                    cpu_times.append(time.thread_time() - start_cpu)
                print(f"{label:>14} {size:>10} {torch.get_num_threads():>7} {levels:>6} {faces:>5} "
                      f"{statistics.median(times):>9.3f} {min(times):>8.3f} {min(cpu_times):>10.3f}")


if __name__ == "__main__":
    main()
