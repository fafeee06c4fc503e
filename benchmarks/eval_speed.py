"""Evaluation speed: 10-fold protocol on 7,000 pairs, IJB-C-size scoring + TAR, embedding throughput.

    python benchmarks/eval_speed.py [--templates 23000 --pairs 15700000] [--skip_embed] [--embed_batches 3]

Prints one line per measurement with wall time and the peak RSS of the process so far.
"""
from __future__ import annotations

import argparse
import resource
import time

import numpy as np
import torch

from facetrain.eval.embed import extract_features
from facetrain.eval.ijb_verify import score_pairs, verification_metrics
from facetrain.eval.verification import evaluate_pairs, kfold_accuracy, pair_distances
from facetrain.models import build_model


def peak_rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # Linux: KiB


def bench_kfold(repeats: int = 5) -> None:
    rng = np.random.default_rng(0)
    issame = rng.random(7000) < 0.5
    emb = rng.standard_normal((14000, 512)).astype(np.float32)
    emb[1::2][issame] = emb[0::2][issame] + 0.8 * rng.standard_normal((issame.sum(), 512))
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        res = evaluate_pairs(emb, issame)
        times.append(time.perf_counter() - t)
    dist = pair_distances(emb)
    kfold_times = []
    for _ in range(repeats):
        t = time.perf_counter()
        kfold_accuracy(dist, issame)
        kfold_times.append(time.perf_counter() - t)
    print(f"10-fold accuracy, 7000 pairs: best {1000 * min(kfold_times):.1f} ms; with distances, fusion-free "
          f"evaluate_pairs incl. TAR@FAR=1e-3: best {1000 * min(times):.1f} ms (acc {res['accuracy']:.4f})"
          f"  peak RSS {peak_rss_gib():.2f} GiB")


def bench_ijb(templates: int, pairs: int) -> None:
    rng = np.random.default_rng(0)
    feats = rng.standard_normal((templates, 512))
    feats /= np.linalg.norm(feats, axis=1, keepdims=True)
    r1, r2 = rng.integers(0, templates, pairs), rng.integers(0, templates, pairs)
    labels = (rng.random(pairs) < 0.00125).astype(np.int64)  # ~19.5k genuine pairs as IJB-C
    t = time.perf_counter()
    scores = score_pairs(feats, r1, r2, progress=False)
    t_score = time.perf_counter() - t
    metrics = verification_metrics(scores, labels)
    total = time.perf_counter() - t
    print(f"IJB scoring {templates} templates x {pairs} pairs: scores {t_score:.1f} s, + ROC/TAR {total:.1f} s total"
          f"  peak RSS {peak_rss_gib():.2f} GiB  (TAR@1e-4 {metrics['tar_at_far'][1e-4]:.4f})")


def bench_embed(arch: str, batches: int, batch_size: int) -> None:
    model = build_model(arch).eval()
    images = np.random.default_rng(0).integers(0, 256, (batches * batch_size, 112, 112, 3), dtype=np.uint8)
    extract_features(model, images[:batch_size], batch_size=batch_size, flip=False, progress=False)  # warm-up
    for precision, channels_last in (("fp32", False), ("bf16", True)):
        t = time.perf_counter()
        extract_features(model, images, batch_size=batch_size, precision=precision, channels_last=channels_last,
                         flip=False, progress=False)
        rate = len(images) / (time.perf_counter() - t)
        print(f"embed {arch} {precision}{' channels_last' if channels_last else ''} on {torch.get_num_threads()} threads: "
              f"{rate:.1f} img/s  peak RSS {peak_rss_gib():.2f} GiB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--templates", type=int, default=23000)
    parser.add_argument("--pairs", type=int, default=15_700_000)
    parser.add_argument("--arch", default="ir_50")
    parser.add_argument("--embed_batches", type=int, default=2)
    parser.add_argument("--embed_batch_size", type=int, default=32)
    parser.add_argument("--skip_embed", action="store_true")
    args = parser.parse_args()
    bench_kfold()
    bench_ijb(args.templates, args.pairs)
    if not args.skip_embed:
        bench_embed(args.arch, args.embed_batches, args.embed_batch_size)


if __name__ == "__main__":
    main()
