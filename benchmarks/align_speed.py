"""MTCNN detection + alignment speed on a real photo (skimage's astronaut, resized).

    python benchmarks/align_speed.py [--sizes 1280x886 640x443] [--threads 1 0] [--device cpu] [--repeats 10]

Prints one row per (size, torch threads): pyramid levels, faces found, median and best time of
`FaceAligner.align` (detection + warp). threads 0 = torch's default. Target (DESIGN 7 / issue 5):
<= 0.3 s for a 1280x886 photo on CPU.
"""
from __future__ import annotations

import argparse
import statistics
import time

import cv2
import numpy as np
import torch
from skimage import data

from facetrain.align.aligner import FaceAligner
from facetrain.align.detect import pyramid_scales


def photo(width: int, height: int) -> np.ndarray:
    """The astronaut photo on a larger canvas of the requested size (face stays ~1/5 of the height)."""
    canvas = np.full((height, width, 3), 120, np.uint8)
    side = min(width, height)
    canvas[:side, (width - side) // 2 : (width - side) // 2 + side] = cv2.resize(data.astronaut(), (side, side))
    return canvas


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", nargs="+", default=["1280x886", "640x443"])
    parser.add_argument("--threads", nargs="+", type=int, default=[1, 0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=10)
    args = parser.parse_args()

    default_threads = torch.get_num_threads()
    aligner = FaceAligner(device=args.device)
    print(f"device {args.device}, torch {torch.__version__}")
    print(f"{'image':>10} {'threads':>7} {'levels':>6} {'faces':>5} {'median s':>9} {'best s':>8}")
    for size in args.sizes:
        width, height = (int(v) for v in size.split("x"))
        image = photo(width, height)
        levels = len(pyramid_scales(height, width, aligner.detector.min_face_size, aligner.detector.factor))
        for threads in args.threads:
            torch.set_num_threads(threads or default_threads)
            faces = len(aligner.detector.detect(image)[0])  # warm-up
            times = []
            for _ in range(args.repeats):
                start = time.perf_counter()
                aligner.align(image)
                if args.device.startswith("cuda"):
                    torch.cuda.synchronize()
                times.append(time.perf_counter() - start)
            print(f"{size:>10} {torch.get_num_threads():>7} {levels:>6} {faces:>5} "
                  f"{statistics.median(times):>9.3f} {min(times):>8.3f}")


if __name__ == "__main__":
    main()
