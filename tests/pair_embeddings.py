"""Embeddings built to order for the verification tests: pairs at chosen squared distances."""
from __future__ import annotations

import numpy as np


def embeddings_at(dist: np.ndarray) -> np.ndarray:
    """Unit 2-d pair embeddings (rows 2i, 2i+1) at the given squared distances (2 - 2 cos(angle) = d)."""
    emb = np.zeros((2 * len(dist), 2), np.float32)
    emb[0::2, 0] = 1.0
    angle = np.arccos(1 - np.asarray(dist, np.float64) / 2)
    emb[1::2] = np.stack([np.cos(angle), np.sin(angle)], 1)
    return emb


def noisy_pairs(rng: np.random.Generator, n_pairs: int, dim: int, noise: float) -> tuple[np.ndarray, np.ndarray]:
    """(embeddings (2n, dim) float32, issame): same pairs share an identity vector plus noise, different
    pairs are independent; not normalised."""
    issame = rng.random(n_pairs) < 0.5
    base = rng.standard_normal((n_pairs, dim))
    other = np.where(issame[:, None], base, rng.standard_normal((n_pairs, dim)))
    emb = np.empty((2 * n_pairs, dim), np.float32)
    emb[0::2] = base + noise * rng.standard_normal((n_pairs, dim))
    emb[1::2] = other + noise * rng.standard_normal((n_pairs, dim))
    return emb, issame
