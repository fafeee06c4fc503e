"""Throughput of the data layer; prints a table. Run on one core for comparable figures:

    taskset -c 0 .venv/bin/python benchmarks/data_formats.py

Inputs are generated here (drawn faces with noise, JPEG-encoded): nothing is downloaded.
Targets (one core): .bin -> memfile >= 5,000 img/s; RecordIO index scan >= 200,000 records/s;
memfile random batches of 256 >= 50,000 img/s; decode + AdaFace augmentations (p=0.2) + flip into
uint8 batches, as a loader worker does >= 4,000 img/s (normalisation runs on the device).
"""
from __future__ import annotations

import argparse
import pickle
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import torch

from facetrain.data.tools.convert import bin_to_memfile
from facetrain.data.formats.memfile import open_memfile
from facetrain.data.formats.recordio import RecordReader, RecordWriter
from facetrain.data.transforms import normalize_batch


def make_faces(n: int, seed: int = 0) -> list[bytes]:
    """`n` JPEG faces (q95): a few hundred distinct drawings, repeated (decoding cost is per image)."""
    rng = np.random.default_rng(seed)
    distinct = []
    for i in range(min(n, 300)):
        img = np.full((112, 112, 3), rng.integers(30, 120, 3), np.uint8)
        cv2.ellipse(img, (56, 60), (34, 44), 0, 0, 360, tuple(int(c) for c in rng.integers(100, 230, 3)), -1)
        for x in (42, 70):
            cv2.circle(img, (x + int(rng.integers(-3, 4)), 50), 5, (20, 20, 20), -1)
        img = cv2.GaussianBlur(cv2.add(img, rng.integers(0, 40, img.shape, dtype=np.uint8)), (3, 3), 0)
        distinct.append(cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 95])[1].tobytes())
    return [distinct[i % len(distinct)] for i in range(n)]


def timed(fn, repeat: int = 1) -> tuple[float, float]:
    """Best (wall seconds, CPU seconds) of `repeat` runs. On a shared machine the CPU time of this
    process is the fair one-core figure (wall time also counts waiting for the core)."""
    best = (float("inf"), float("inf"))
    for _ in range(repeat):
        wall, cpu = time.perf_counter(), time.process_time()
        fn()
        best = min(best, (time.perf_counter() - wall, time.process_time() - cpu), key=lambda t: t[1])
    return best


def rates(n: int, seconds: tuple[float, float]) -> tuple[float, float]:
    return n / seconds[0], n / seconds[1]


def bench_bin_to_memfile(tmp: Path, n: int) -> tuple[tuple[float, float], Path, float]:
    encoded = make_faces(n)
    (tmp / "lfw.bin").write_bytes(pickle.dumps((encoded, [True, False] * (n // 4)), protocol=4))
    seconds = timed(lambda: bin_to_memfile(tmp / "lfw.bin", tmp, progress=False))
    return rates(n, seconds), tmp / "lfw.dat", sum(map(len, encoded)) / n


def bench_index_scan(tmp: Path, n: int) -> tuple[float, float]:
    payload = make_faces(1)[0][:1024]  # the scan never decodes: any bytes of a realistic order of size
    with RecordWriter(tmp / "train.rec", tmp / "train.idx") as w:
        for key in range(n):
            w.write(key, float(key % 1000), payload)

    def scan() -> None:
        labels = RecordReader(tmp / "train.rec").labels
        assert len(labels) == n

    return rates(n, timed(scan, repeat=3))


def bench_memfile_batches(path: Path, batches: int, batch_size: int = 256) -> tuple[float, float]:
    mm = open_memfile(path)
    rng = np.random.default_rng(0)
    np.asarray(mm).sum()  # warm the page cache, as an epoch after the first would be

    def run() -> None:
        for _ in range(batches):
            idx = np.sort(rng.choice(len(mm), batch_size, replace=False))
            torch.from_numpy(mm[idx])

    return rates(batches * batch_size, timed(run, repeat=3))


def bench_augment(n: int) -> tuple[tuple[float, float], dict[str, float]]:
    """What a training loader worker does per image (uint8 out: normalisation happens on the device):
    decode, a generator seeded per sample, crop/low-res/photometric at p=0.2 and flip, uint8
    collation in batches of 256. Also the CPU seconds per image of each part, to show what dominates."""
    from facetrain.data.augment import Augmenter
    from facetrain.training.batches import collate_uint8

    cv2.setNumThreads(1)  # as in the loader's workers
    aug = Augmenter(crop_p=0.2, low_res_p=0.2, photometric_p=0.2, flip_p=0.5)
    encoded = [np.frombuffer(e, np.uint8) for e in make_faces(n, seed=1)]

    def run() -> None:
        for start in range(0, n, 256):
            collate_uint8([(aug(cv2.imdecode(e, cv2.IMREAD_COLOR), np.random.default_rng((0, 0, start + i))), 0)
                           for i, e in enumerate(encoded[start:start + 256])])

    total = rates(n, timed(run))
    decoded = [cv2.imdecode(e, cv2.IMREAD_COLOR) for e in encoded]
    parts = {
        "decode": timed(lambda: [cv2.imdecode(e, cv2.IMREAD_COLOR) for e in encoded])[1],
        "per-sample generator": timed(lambda: [np.random.default_rng((0, 0, i)) for i in range(n)])[1],
        "augmentations + flip": timed(lambda: [aug(d, np.random.default_rng(i)) for i, d in enumerate(decoded)])[1]
        - timed(lambda: [np.random.default_rng(i) for i in range(n)])[1],
        "uint8 collation": timed(lambda: [collate_uint8([(d, 0) for d in decoded[s:s + 256]])
                                          for s in range(0, n, 256)])[1],
        "normalise on the CPU (not in the loader)": timed(
            lambda: [normalize_batch(torch.from_numpy(np.stack(decoded[s:s + 256]))) for s in range(0, n, 256)])[1],
    }
    return total, {name: 1e6 * seconds / n for name, seconds in parts.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bin_images", type=int, default=12000)
    parser.add_argument("--records", type=int, default=200000)
    parser.add_argument("--batches", type=int, default=100)
    parser.add_argument("--augment_images", type=int, default=5000)
    parser.add_argument("--only_augment", action="store_true", help="only the decode + augment benchmark")
    args = parser.parse_args()
    torch.set_num_threads(1)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        if not args.only_augment:
            rate, memfile, size = bench_bin_to_memfile(tmp, args.bin_images)
            rows.append((f".bin ({args.bin_images} JPEGs, {size / 1000:.1f} kB each) -> memfile", rate, "img/s", 5000))
            rows.append((f"RecordIO index scan ({args.records} records, no decoding)",
                         bench_index_scan(tmp, args.records), "records/s", 200000))
            rows.append(("memfile random batches of 256", bench_memfile_batches(memfile, args.batches), "img/s",
                         50000))
        augment_rate, parts = bench_augment(args.augment_images)
        rows.append(("decode + crop/low-res/photometric (p=0.2) + flip, uint8 batches", augment_rate, "img/s", 4000))
    print(f"{'benchmark':<64} {'per CPU-s':>11} {'per wall-s':>11} {'unit':<10} {'target':>8}  ok")
    for name, rate, unit, target in rows:
        if isinstance(rate, str):
            print(f"{name:<64} {rate}")
        else:
            wall, cpu = rate
            print(f"{name:<64} {cpu:>11,.0f} {wall:>11,.0f} {unit:<10} {target:>8,}  {'yes' if cpu >= target else 'NO'}")
    print("decode + augment, CPU microseconds per image by part:")
    for name, micros in parts.items():
        print(f"  {name:<44} {micros:8.1f}")


if __name__ == "__main__":
    main()
