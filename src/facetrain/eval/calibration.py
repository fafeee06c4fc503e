"""A decision threshold at the false-accept rate you need, with its uncertainty.

Protocol: every pair's cosine similarity of the flip-fused features (the 10-fold protocol's features);
two faces are "the same person" when their similarity is >= the threshold. For a target FAR f over N
impostor pairs, at most k = floor(f * N) impostors may be accepted: the threshold is the smallest float
above the (k+1)-th highest impostor similarity, so the achieved FAR is <= f (lower when scores tie).
Uncertainty, at `level` (95 %):
- achieved FAR and TAR: Clopper-Pearson intervals on the counts (false accepts of N, true accepts of G);
- the threshold: the distribution-free interval of the impostors' (1 - f) quantile from their order
  statistics; an open end (None) means there are too few impostors to bound it on that side.
A FAR with fewer than one expected false accept (f * N < 1) cannot be resolved and is refused; fewer
than ten give a warning, as the threshold then moves with a handful of pairs.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

from facetrain.errors import ConfigError, DataError
from facetrain.eval.binomial import clopper_pearson, quantile_rank_interval

MIN_EXPECTED_FALSE_ACCEPTS = 10


@dataclass(frozen=True)
class Calibration:
    far: float  # the FAR asked for
    threshold: float  # cosine similarity; same person when similarity >= threshold
    false_accepts: int
    impostor_pairs: int
    true_accepts: int
    genuine_pairs: int
    achieved_far_interval: tuple[float, float]
    tar_interval: tuple[float, float]
    threshold_interval: tuple[float | None, float | None]
    level: float

    @property
    def achieved_far(self) -> float:
        return self.false_accepts / self.impostor_pairs

    @property
    def tar(self) -> float:
        return self.true_accepts / self.genuine_pairs

    @property
    def under_resolved(self) -> bool:
        """Fewer than MIN_EXPECTED_FALSE_ACCEPTS false accepts expected: the threshold is uncertain."""
        return self.far * self.impostor_pairs < MIN_EXPECTED_FALSE_ACCEPTS

    def as_dict(self) -> dict:
        return {**asdict(self), "achieved_far": self.achieved_far, "tar": self.tar}


def check_far(far: float, level: float = 0.95) -> None:
    """Refuse a FAR or confidence level outside (0, 1) before any work is done."""
    if not 0.0 < far < 1.0:
        raise ConfigError(f"the FAR must be between 0 and 1 (exclusive), got {far}")
    if not 0.0 < level < 1.0:
        raise ConfigError(f"the confidence level must be between 0 and 1 (exclusive), got {level}")


def threshold_at_far(genuine: np.ndarray, impostor: np.ndarray, far: float, level: float = 0.95) -> Calibration:
    """The threshold at `far` on these similarity scores (see the module for the rule)."""
    check_far(far, level)
    genuine = np.asarray(genuine, np.float64).reshape(-1)
    impostor = np.asarray(impostor, np.float64).reshape(-1)
    if len(genuine) == 0 or len(impostor) == 0:
        raise DataError(f"calibration needs genuine and impostor pairs, got {len(genuine)} genuine and "
                        f"{len(impostor)} impostor")
    if not (np.isfinite(genuine).all() and np.isfinite(impostor).all()):
        raise DataError("calibration got non-finite similarities: the model's features are not finite")
    n = len(impostor)
    if far * n < 1.0:
        raise ConfigError(f"a FAR of {far:g} cannot be resolved with {n} impostor pairs (not one false accept "
                          f"expected); it needs at least {math.ceil(1 / far)}, or ask for a FAR of at least {1 / n:.2g}")
    allowed = int(math.floor(far * n * (1 + 1e-12)))  # guard 0.1 * 30 = 2.9999999999999996
    ranked = np.sort(impostor)  # ascending
    threshold = float(np.nextafter(ranked[n - 1 - allowed], np.inf)) if allowed < n else float(ranked[0])
    false_accepts = int((impostor >= threshold).sum())
    true_accepts = int((genuine >= threshold).sum())
    lo, hi = quantile_rank_interval(n, 1.0 - far, level)
    bounds = (float(ranked[lo - 1]) if lo >= 1 else None, float(ranked[hi - 1]) if hi <= n else None)
    return Calibration(far, threshold, false_accepts, n, true_accepts, len(genuine),
                       clopper_pearson(false_accepts, n, level), clopper_pearson(true_accepts, len(genuine), level),
                       bounds, level)


def format_calibration(result: Calibration, source: str) -> str:
    """The result as a few lines for the terminal."""
    pct = f"{result.level:.0%}"
    lo, hi = result.threshold_interval
    interval = f"[{'open' if lo is None else f'{lo:.4f}'}, {'open' if hi is None else f'{hi:.4f}'}]"
    lines = [
        f"calibrated on {source}: {result.impostor_pairs} impostor and {result.genuine_pairs} genuine pairs",
        f"threshold (cosine) at FAR {result.far:g}: {result.threshold:.4f}  ({pct} interval {interval})",
        f"achieved FAR: {result.achieved_far:.3g} ({result.false_accepts}/{result.impostor_pairs}; {pct} "
        f"[{result.achieved_far_interval[0]:.3g}, {result.achieved_far_interval[1]:.3g}])",
        f"TAR: {result.tar:.4f} ({result.true_accepts}/{result.genuine_pairs}; {pct} "
        f"[{result.tar_interval[0]:.4f}, {result.tar_interval[1]:.4f}])",
    ]
    return "\n".join(lines)


def pair_similarities(model, images: np.ndarray, batch_size: int = 256, device=None, precision: str = "fp32",
                      progress: bool = True, name: str = "pairs") -> np.ndarray:
    """(N,) cosine similarity of each pair (images 2i, 2i+1), flip-fused as the 10-fold protocol embeds
    them; non-finite features are refused naming the model (`extract_features`)."""
    from facetrain.eval.embed import extract_features
    from facetrain.eval.fusion import fuse_flip

    features, flipped = extract_features(model, images, batch_size=batch_size, device=device, precision=precision,
                                         flip=True, progress=progress, desc=name)
    unit, _ = fuse_flip(features, flipped, "pre_norm_vector_add")
    return (unit[0::2].astype(np.float64) * unit[1::2]).sum(axis=1)
