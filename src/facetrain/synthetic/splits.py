"""Who and what each split renders: training identities, verification pairs (deterministic, disjoint).

Every identity and every image has its own `np.random.Generator` seeded from (seed, stream, index...),
so the output is the same byte for byte whatever the order or the number of worker processes. Each
split (training, each benchmark, the IJB protocol) draws its identities from its own stream, so the
people in the verification sets never appear in training.
"""
from __future__ import annotations

from concurrent.futures import ProcessPoolExecutor
from typing import Callable, Iterable, Sequence

import numpy as np

from facetrain.synthetic.identity import Identity, sample_identity
from facetrain.synthetic.profiles import PROFILES, sample_nuisance, sample_pair_nuisance
from facetrain.synthetic.render import render_face
from facetrain.io_utils import ignore_interrupts

# One random stream per split: the identities of different splits are disjoint by construction.
STREAMS = {"train": 0, "lfw": 1, "cfp_fp": 2, "cfp_ff": 3, "cplfw": 4, "calfw": 5, "agedb_30": 6, "ijb": 7, "tinyface": 8,
           "group_a": 9, "group_b": 10, "group_c": 11, "group_d": 12}
_IDENTITY, _IMAGE, _PAIR = 0, 1, 2


def stream_rng(seed: int, split: str, *path: int) -> np.random.Generator:
    return np.random.default_rng([seed, STREAMS[split], *path])


def make_identity(seed: int, split: str, index: int) -> Identity:
    return sample_identity(stream_rng(seed, split, _IDENTITY, index))


def identity_name(split: str, index: int) -> str:
    return f"id_{index:05d}" if split == "train" else f"{split}_{index:05d}"


def render_training_identity(seed: int, index: int, count: int) -> list[np.ndarray]:
    """The `count` aligned training images of training identity `index`."""
    ident = make_identity(seed, "train", index)
    images = []
    for n in range(count):
        rng = stream_rng(seed, "train", _IMAGE, index, n)
        images.append(render_face(ident, sample_nuisance(PROFILES["train"], rng), rng).image)
    return images


def parallel_map(fn: Callable, items: Sequence, workers: int) -> Iterable:
    """`map` in order, in `workers` processes when > 1 (results do not depend on it)."""
    if workers <= 1 or len(items) < 2:
        return map(fn, items)
    pool = ProcessPoolExecutor(workers, initializer=ignore_interrupts)
    try:
        return list(pool.map(fn, items, chunksize=max(1, len(items) // (8 * workers))))
    finally:
        pool.shutdown(cancel_futures=True)  # interrupted: the chunks not started are dropped


class _TrainingRenderer:  # a picklable closure for worker processes
    def __init__(self, seed: int, count: int):
        self.seed, self.count = seed, count

    def __call__(self, index: int) -> list[np.ndarray]:
        return render_training_identity(self.seed, index, self.count)


def iter_training_identities(seed: int, num_identities: int, images_per_identity: int,
                             workers: int = 1) -> Iterable[list[np.ndarray]]:
    """Yield each training identity's list of images, identity 0 first."""
    return parallel_map(_TrainingRenderer(seed, images_per_identity), range(num_identities), workers)


def _pick_impostor(rng: np.random.Generator, first: int, vectors: np.ndarray, hard: bool) -> int:
    n = len(vectors)
    candidates = rng.choice(np.delete(np.arange(n), first), size=min(6 if hard else 1, n - 1), replace=False)
    if not hard:
        return int(candidates[0])
    distances = np.linalg.norm(vectors[candidates] - vectors[first], axis=1)
    return int(candidates[np.argmin(distances)])


class _PairRenderer:
    def __init__(self, seed: int, name: str, identities: list[Identity], plan: np.ndarray):
        self.seed, self.name, self.identities, self.plan = seed, name, identities, plan

    def __call__(self, k: int) -> tuple[np.ndarray, np.ndarray]:
        a, b = self.plan[k]
        rng = stream_rng(self.seed, self.name, _IMAGE, k)
        first, second = sample_pair_nuisance(PROFILES[self.name], rng)
        return (render_face(self.identities[a], first, rng).image, render_face(self.identities[b], second, rng).image)


def pair_plan(seed: int, name: str, num_pairs: int, num_identities: int) -> tuple[list[Identity], np.ndarray, np.ndarray]:
    """Who is in each pair: (identities, (N, 2) identity indices, (N,) issame). Genuine and impostor pairs
    alternate, so every contiguous fold of the 10-fold protocol is balanced."""
    if num_identities < 2:
        raise ValueError(f"{name}: need at least 2 identities for impostor pairs, got {num_identities}")
    identities = [make_identity(seed, name, i) for i in range(num_identities)]
    vectors = np.stack([ident.to_vector() for ident in identities])
    vectors = (vectors - vectors.mean(0)) / (vectors.std(0) + 1e-6)
    rng = stream_rng(seed, name, _PAIR)
    issame = np.arange(num_pairs) % 2 == 0
    plan = np.empty((num_pairs, 2), dtype=np.int64)
    for k in range(num_pairs):
        first = int(rng.integers(num_identities))
        second = first if issame[k] else _pick_impostor(rng, first, vectors, PROFILES[name].hard_negatives)
        plan[k] = first, second
    return identities, plan, issame


def render_pairs(seed: int, name: str, num_pairs: int, num_identities: int | None = None,
                 workers: int = 1) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A verification set named after a benchmark (its nuisance profile): images (2N,112,112,3) uint8 BGR,
    issame (N,) bool and the (N, 2) identity indices within the set's own identities."""
    num_identities = num_identities or max(2, num_pairs // 2)
    identities, plan, issame = pair_plan(seed, name, num_pairs, num_identities)
    images = np.empty((2 * num_pairs, 112, 112, 3), dtype=np.uint8)
    for k, (one, two) in enumerate(parallel_map(_PairRenderer(seed, name, identities, plan), range(num_pairs), workers)):
        images[2 * k], images[2 * k + 1] = one, two
    return images, issame, plan
