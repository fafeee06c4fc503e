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
