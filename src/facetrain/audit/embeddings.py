"""Flip-fused unit embeddings of an audit set, cached in the audit folder.

The cache key is the checkpoint's content hash, the data's fingerprint (paths, sizes, modification
times) and the fusion method, so a second audit of the same data with the same model (another
threshold, another reference) reads the embeddings instead of running the model again, and any
change to the model or the data computes them afresh. A cache entry is `<stem>-<key>.npy` followed by
its `.json` (written last: an `.npy` without it was cut short); the `.npy` holds the unit embeddings and,
as a last column, the fused feature norms (AdaFace's image quality proxy); an entry that does not read back as
this data's finite embeddings of the model's width is computed again, with a notice.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from facetrain.audit.sources import AuditSet
from facetrain.eval.embed import extract_features
from facetrain.eval.fusion import fuse_flip
from facetrain.io_utils import atomic_path, atomic_write_json, remove_stale_temporaries

CACHE_DIR = "embedding_cache"


def file_hash(path: str | os.PathLike, block: int = 1 << 22) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(block):
            digest.update(chunk)
    return digest.hexdigest()


@dataclass
class Embedder:
    """A loaded backbone and how to run it; `model_id` identifies the weights (the checkpoint's hash)."""

    model: torch.nn.Module
    model_id: str
    device: str = "cpu"
    batch_size: int = 256
    fusion: str = "pre_norm_vector_add"
    progress: bool = True

    def cache_key(self, audit_set: AuditSet) -> str:
        text = json.dumps([self.model_id, audit_set.fingerprint, len(audit_set), self.fusion])
        return hashlib.sha256(text.encode()).hexdigest()[:24]

    def _cached(self, npy: Path, key: str, size: int) -> np.ndarray | None:
        """The cache entry's embeddings, or None (with a notice) when it is missing a part, unreadable or wrong."""
        meta = npy.with_suffix(".json")
        for path in (npy, meta):
            remove_stale_temporaries(path)  # a kill between the two files leaves the second one's temporary
        if not npy.is_file() and not meta.is_file():
            return None
        try:
            info = json.loads(meta.read_text())
            embeddings = np.load(npy, allow_pickle=False)
            width = getattr(self.model, "embedding_size", None)
            ok = (isinstance(info, dict) and info.get("key") == key and embeddings.dtype == np.float32
                  and embeddings.ndim == 2 and embeddings.shape[0] == size and list(embeddings.shape) == info.get("shape")
                  and (width is None or embeddings.shape[1] - 1 in (width, 2 * width)) and bool(np.isfinite(embeddings).all()))
        except (OSError, ValueError, EOFError):
            ok = False
        if ok:
            return embeddings
        print(f"notice: {npy}: embedding cache is incomplete or corrupt; computing it again", file=sys.stderr)
        return None

    def embed(self, audit_set: AuditSet, cache_root: str | os.PathLike | None) -> tuple[np.ndarray, np.ndarray, str]:
        """(unit embeddings (N, D) float32, feature norms (N,), "cache" | "computed")."""
        stem = re.sub(r"[^\w.-]", "_", audit_set.name)
        key = self.cache_key(audit_set)
        cached = Path(cache_root) / CACHE_DIR / f"{stem}-{key}.npy" if cache_root else None
        if cached is not None:
            embeddings = self._cached(cached, key, len(audit_set))
            if embeddings is not None:
                return embeddings[:, :-1], embeddings[:, -1], "cache"
        features, flipped = extract_features(self.model, audit_set.images, batch_size=self.batch_size, device=self.device,
                                             flip=self.fusion != "none", progress=self.progress,
                                             desc=f"embed {audit_set.name}")
        unit, norms = fuse_flip(features, flipped, self.fusion)
        embeddings = np.concatenate([unit, norms.reshape(-1, 1)], axis=1).astype(np.float32)
        if cached is not None:
            with atomic_path(cached) as tmp, open(tmp, "wb") as f:
                np.save(f, embeddings)
            atomic_write_json(cached.with_suffix(".json"), {"key": key, "set": audit_set.name,
                                                            "description": audit_set.description, "model": self.model_id,
                                                            "fusion": self.fusion, "shape": list(embeddings.shape)})
        return embeddings[:, :-1], embeddings[:, -1], "computed"
