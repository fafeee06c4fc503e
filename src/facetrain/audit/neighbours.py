"""Exact nearest neighbours and every pair above a threshold between two sets of embeddings, in bounded memory.

Scores are inner products (cosines for unit rows) computed tile by tile with matrix products, so memory
holds one (query tile x key tile) block, never the full matrix. On CPUs with native bfloat16 (AMX /
AVX512-BF16) the tiles are first scored in bfloat16, about 4x faster than float32; every candidate that
could pass (within a proven error bound of the decision) is then rescored exactly in float32, so the
pairs and nearest neighbours equal those of a float32 brute force. Elsewhere (CUDA, older CPUs) the
tiles are float32. Device-agnostic torch: pass `device="cuda"` to run on a GPU.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from tqdm import tqdm

# |bf16(x).bf16(y) - x.y| for rows of norm <= 1: inputs rounded (2u + u^2, u = 2^-8, since
# sum|x_i y_i| <= |x||y| <= 1), the bf16 result rounded (|s| u <= 2^-8) and float32 accumulation over
# <= 4096 terms (< 3e-4). 0.0125 covers it; tests check the bound on random and near-duplicate rows.
BF16_MARGIN = 0.0125
DEFAULT_TILE_BYTES = 256 * 2**20


@dataclass
class Neighbours:
    """Pairs with score >= threshold (query index, key index, score; sorted by query then key) and,
    per query, its best key and score (-1 / -inf when there is no key)."""

    query: np.ndarray
    key: np.ndarray
    score: np.ndarray
    best_key: np.ndarray
    best_score: np.ndarray


def bf16_is_fast(device: torch.device) -> bool:
    """bfloat16 tiles pay off on CPUs with native bf16 matrix units; on GPUs float32 is fast enough and exact."""
    return device.type == "cpu" and bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


def _exact(queries: torch.Tensor, keys: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
    return (queries[rows] * keys[cols]).sum(1)


class _Best:
    """Running best key per query row of one query tile (ties: the smallest key index)."""

    def __init__(self, rows: int, device: torch.device):
        self.score = torch.full((rows,), -torch.inf, device=device)
        self.key = torch.full((rows,), -1, dtype=torch.int64, device=device)

    def offer(self, rows: torch.Tensor, cols: torch.Tensor, scores: torch.Tensor) -> None:
        if not len(rows):
            return
        tile_best = torch.full_like(self.score, -torch.inf).scatter_reduce(0, rows, scores, "amax")
        winner = scores == tile_best[rows]
        tile_key = torch.full_like(self.key, torch.iinfo(torch.int64).max).scatter_reduce(
            0, rows[winner], cols[winner], "amin")
        better = (tile_best > self.score) | ((tile_best == self.score) & (tile_key < self.key))
        self.score = torch.where(better, tile_best, self.score)
        self.key = torch.where(better, tile_key, self.key)


def _candidates(scores: torch.Tensor, rows: torch.Tensor, floor: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(row, column) of the entries of `scores[rows]` at or above each row's floor."""
    r, c = torch.nonzero(scores[rows] >= floor[:, None], as_tuple=True)
    return rows[r], c


def search(queries: np.ndarray, keys: np.ndarray, threshold: float | None = None, *, exclude_self: bool = False,
           device: str | torch.device = "cpu", low_precision: bool | None = None,
           tile_bytes: int = DEFAULT_TILE_BYTES, key_block: int | None = None, progress: bool = False,
           desc: str = "neighbours") -> Neighbours:
    """Best key of every query and all (query, key) pairs scoring >= `threshold` (none when None).

    `queries` (M, D) and `keys` (N, D) float32 rows of norm <= 1. `exclude_self`: queries and keys
    are the same set and a row never pairs with itself. `low_precision` None = bfloat16 candidates
    where that is faster (`bf16_is_fast`), with exact float32 rescoring either way. A tile is `key_block`
    keys (default: as many as leave >= 256 queries per tile) by as many queries as fit in `tile_bytes`.
    """
    device = torch.device(device)
    low = bf16_is_fast(device) if low_precision is None else low_precision
    q_all = torch.as_tensor(np.ascontiguousarray(queries, dtype=np.float32))
    k_all = torch.as_tensor(np.ascontiguousarray(keys, dtype=np.float32)).to(device)
    if q_all.ndim != 2 or k_all.ndim != 2 or q_all.shape[1] != k_all.shape[1]:
        raise ValueError(f"queries {tuple(q_all.shape)} and keys {tuple(k_all.shape)} must be (M, D) and (N, D)")
    m, n = len(q_all), len(k_all)
    k_low = k_all.to(torch.bfloat16) if low else k_all
    margin = BF16_MARGIN if low else 0.0
    key_block = max(1, min(n, key_block or tile_bytes // (4 * 256)))
    query_block = max(1, min(m, tile_bytes // (4 * key_block)))
    found_q, found_k, found_s = [], [], []
    best_key = np.full(m, -1, np.int64)
    best_score = np.full(m, -np.inf, np.float32)
    with torch.inference_mode():
        for q0 in tqdm(range(0, m, query_block), desc=desc, disable=None if progress else True, leave=False):
            q = q_all[q0 : q0 + query_block].to(device)
            q_low = q.to(torch.bfloat16) if low else q
            best = _Best(len(q), device)
            every_row = torch.arange(len(q), device=device)
            for k0 in range(0, n, key_block):
                k = k_all[k0 : k0 + key_block]
                scores = q_low @ k_low[k0 : k0 + key_block].T
                if exclude_self and k0 < q0 + len(q) and q0 < k0 + len(k):
                    diag = torch.arange(max(q0, k0), min(q0 + len(q), k0 + len(k)), device=device)
                    scores[diag - q0, diag - k0] = -torch.inf
                if low:
                    _offer_low(best, scores, q, k, k0, margin)
                else:
                    top, arg = scores.max(1)
                    finite = torch.isfinite(top)
                    best.offer(every_row[finite], arg[finite] + k0, top[finite])
                if threshold is not None:
                    row_max = scores.amax(1).float()
                    rows = torch.nonzero(row_max >= threshold - margin).flatten()
                    rows, cols = _candidates(scores, rows, torch.full((len(rows),), threshold - margin, device=device))
                    exact = _exact(q, k, rows, cols) if low else scores[rows, cols]
                    keep = exact >= threshold
                    found_q.append((rows[keep] + q0).cpu())
                    found_k.append((cols[keep] + k0).cpu())
                    found_s.append(exact[keep].float().cpu())
            best_key[q0 : q0 + len(q)] = best.key.cpu().numpy()
            best_score[q0 : q0 + len(q)] = best.score.cpu().numpy()
    if found_q:
        qi, ki, si = torch.cat(found_q).numpy(), torch.cat(found_k).numpy(), torch.cat(found_s).numpy()
        order = np.lexsort((ki, qi))
        qi, ki, si = qi[order], ki[order], si[order]
    else:
        qi, ki, si = np.empty(0, np.int64), np.empty(0, np.int64), np.empty(0, np.float32)
    return Neighbours(qi.astype(np.int64), ki.astype(np.int64), si.astype(np.float32), best_key, best_score)


TOP_CANDIDATES = 8


def _offer_low(best: _Best, scores: torch.Tensor, q: torch.Tensor, k: torch.Tensor, k0: int, margin: float) -> None:
    """Offer the exact scores of every key of a bfloat16 tile that may be a row's nearest: within 2 margins of
    the tile's best and within one margin of the running best. The top few per row are rescored at once;
    the rare rows with more such keys are scanned in full."""
    top, arg = scores.topk(min(TOP_CANDIDATES, scores.shape[1]), dim=1)
    top = top.float()
    floor = torch.maximum(best.score - margin, top[:, 0] - 2 * margin)
    near = (top >= floor[:, None]) & torch.isfinite(top)
    spill = near[:, -1].clone() if scores.shape[1] > top.shape[1] else torch.zeros_like(near[:, -1])
    near &= ~spill[:, None]
    rows, slot = torch.nonzero(near, as_tuple=True)
    cols = arg[rows, slot]
    spill_rows = torch.nonzero(spill).flatten()
    if len(spill_rows):
        more_rows, more_cols = _candidates(scores, spill_rows, floor[spill_rows])
        rows, cols = torch.cat([rows, more_rows]), torch.cat([cols, more_cols])
    best.offer(rows, cols + k0, _exact(q, k, rows, cols))
