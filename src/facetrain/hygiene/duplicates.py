"""Exact duplicate images: two identical images make a genuine pair trivially easy (or an impostor pair
impossible), and a set whose images repeat is smaller than it looks. Pairs that reuse an image of
another pair are normal in LFW-style protocols and only counted."""
from __future__ import annotations

import hashlib

import numpy as np


def image_digests(images: np.ndarray) -> list[bytes]:
    return [hashlib.blake2b(np.ascontiguousarray(image).tobytes(), digest_size=16).digest() for image in images]


def duplicate_report(images: np.ndarray, pairs: bool = True) -> dict:
    """Counts of identical images; with `pairs`, images 2i and 2i+1 form pair i and identical pairs are listed."""
    digests = image_digests(images)
    counts: dict[bytes, int] = {}
    for digest in digests:
        counts[digest] = counts.get(digest, 0) + 1
    report = {"images": len(digests), "distinct_images": len(counts),
              "images_repeated": int(sum(c for c in counts.values() if c > 1))}
    if pairs:
        report["identical_pairs"] = [i for i in range(len(digests) // 2) if digests[2 * i] == digests[2 * i + 1]]
    return report
