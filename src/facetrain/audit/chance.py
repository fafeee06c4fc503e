"""How many pairs of different people score above a cosine by chance, and whether a count exceeds it.

A face model's impostor cosines (pairs of different people) are close to normal around a small mean. The
audit fits that normal to impostor pairs of the right kind (pairs of identities the model has not seen for
leakage, centroid pairs for identity-level questions) and reads thresholds and chance counts off the fit,
because the pairs at hand (a benchmark's few hundred non-matching pairs, a small dataset's identities)
cannot resolve a false-accept rate of 1e-6 directly, and because a robust fit is not moved by the few
matches it has to find (a collision's own pairs set an empirical threshold that hides it).

The normal is fitted to atanh(cosine) (Fisher's z), which is close to the cosine itself for a trained
model's impostors (near 0) and keeps the fit inside [-1, 1] for a weak model whose impostors spread over
the whole range (every threshold it gives is a cosine). The fit is conservative: location = median,
scale = the normal scale implied by the median absolute deviation, widened to the scale implied by an empirical
upper quantile that enough pairs resolve (at least `TAIL_PAIRS` pairs beyond it) when that one is larger by
more than twice the two estimates' sampling error. A heavier-than-normal tail therefore widens the fit rather
than being extrapolated away; the sampling test keeps a few hundred pairs (a dataset's identity centroids)
from widening it by noise alone, which would put a threshold at FAR 1e-4 above the matches it is there to find
(the larger of two noisy estimates is biased high).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

# upper quantiles that may widen the fitted scale when at least TAIL_PAIRS impostor pairs lie beyond them;
# the highest ones are left out so that a few true matches among the pairs (a leak, a collision) cannot
# widen it: at most half a percent of the pairs may be matches without moving the 0.99 quantile far
TAIL_QUANTILES = (0.9, 0.99)
TAIL_PAIRS = 10
# a tail quantile widens the fit when its scale exceeds the MAD's by more than this many standard errors
TAIL_SIGMAS = 2.0
MAD_RELATIVE_ERROR = 1.166  # sqrt(n) x relative standard error of the MAD's normal scale (efficiency 37 %)
MIN_PAIRS = 30  # fewer impostor pairs say too little about their spread
ALPHA = 1e-3  # an excess is significant below this p-value (after the scan's correction): impostor pairs that
# share an image are not independent, so chance counts scatter more than Poisson; a leak scores far below it


def normal_sf(z: float) -> float:
    return 0.5 * math.erfc(z / math.sqrt(2.0))


def normal_isf(p: float) -> float:
    return float(-torch.special.ndtri(torch.tensor(p, dtype=torch.float64)))


def poisson_sf(count: int, mean: float) -> float:
    """P(X >= count) for X ~ Poisson(mean)."""
    if count <= 0:
        return 1.0
    if mean <= 0:
        return 0.0
    return float(torch.special.gammainc(torch.tensor(float(count), dtype=torch.float64),
                                        torch.tensor(mean, dtype=torch.float64)))


def fisher_z(cosine: np.ndarray | float) -> np.ndarray:
    return np.arctanh(np.clip(np.asarray(cosine, np.float64), -1 + 1e-9, 1 - 1e-9))


@dataclass
class ImpostorFit:
    """A normal fitted to Fisher's z of impostor cosines (see the module note); `source` says which pairs."""

    location: float  # in z = atanh(cosine)
    scale: float
    pairs: int
    source: str

    def far(self, cosine: float) -> float:
        """Share of impostor pairs expected at or above `cosine`."""
        return normal_sf((float(fisher_z(cosine)) - self.location) / self.scale)

    def threshold(self, far: float) -> float:
        return float(np.float32(np.tanh(self.location + self.scale * normal_isf(far))))

    @property
    def median_cosine(self) -> float:
        return float(np.tanh(self.location))

    def as_json(self) -> dict:
        return {"impostor_source": self.source, "impostor_pairs": self.pairs, "fit": "normal of atanh(cosine)",
                "fit_location": round(self.location, 6), "fit_scale": round(self.scale, 6)}


@dataclass
class TailFit:
    """An exponential tail of Fisher's z above a high quantile of the very pairs compared (peaks over threshold):
    P(z >= x) = share x exp(-(x - start) / mean excess). Pairs of a reference and a training set have a longer
    tail than the reference's own impostors (a few reference images resemble many training faces); this reads
    it off the compared pairs where a leak is too rare to matter, and any leak there only lengthens it."""

    start: float
    share: float
    mean_excess: float
    pairs: int
    source: str

    def far(self, cosine: float) -> float:
        z = float(fisher_z(cosine))
        return min(1.0, self.share * math.exp(-(z - self.start) / self.mean_excess))

    def threshold(self, far: float) -> float:
        if far >= self.share:
            return float(np.float32(np.tanh(self.start)))
        return float(np.float32(np.tanh(self.start + self.mean_excess * math.log(self.share / far))))


# the tail starts at the smallest of these shares that leaves TAIL_MIN_PAIRS above it: the nearer the start to
# the thresholds, the less an exponential has to extrapolate (a tail that widens further out is caught)
TAIL_SHARES = (1e-4, 1e-3, 1e-2)
TAIL_MIN_PAIRS = 100


def fit_tail(scores: np.ndarray, source: str) -> TailFit | None:
    """The exponential tail above the top share (TAIL_SHARES) of `scores`; None with too few pairs."""
    z = fisher_z(np.asarray(scores, np.float64))
    shares = [share for share in TAIL_SHARES if len(z) * share >= TAIL_MIN_PAIRS]
    if not shares:
        return None
    share = shares[0]
    start = float(np.quantile(z, 1 - share))
    excess = z[z > start] - start
    return TailFit(start, share, max(float(excess.mean()), 1e-6), int(len(z)), source)


@dataclass
class ChanceModel:
    """The larger chance of two models at every cosine (see `TailFit`): the reference's own impostors and, where
    enough pairs are compared, the compared pairs' tail."""

    impostors: ImpostorFit
    tail: TailFit | None

    @property
    def source(self) -> str:
        return self.impostors.source

    def far(self, cosine: float) -> float:
        return max(self.impostors.far(cosine), self.tail.far(cosine) if self.tail else 0.0)

    def threshold(self, far: float) -> float:
        return max(self.impostors.threshold(far), self.tail.threshold(far) if self.tail else -1.0)

    def as_json(self) -> dict:
        out = self.impostors.as_json()
        if self.tail is not None:
            out["tail"] = {"source": self.tail.source, "pairs": self.tail.pairs, "above_cosine": round(
                float(np.tanh(self.tail.start)), 6), "share": self.tail.share, "mean_excess_z": round(self.tail.mean_excess, 6)}
        return out


def fit_impostors(scores: np.ndarray, source: str) -> ImpostorFit | None:
    """The conservative normal fit of the module note; None with fewer than MIN_PAIRS pairs."""
    scores = fisher_z(np.asarray(scores, np.float64)[np.isfinite(scores)])
    if len(scores) < MIN_PAIRS:
        return None
    n = len(scores)
    median = float(np.median(scores))
    mad_scale = 1.4826 * float(np.median(np.abs(scores - median)))
    scale = mad_scale
    for q in TAIL_QUANTILES:
        if n * (1 - q) >= TAIL_PAIRS:
            tail_scale = (float(np.quantile(scores, q)) - median) / normal_isf(1 - q)
            if tail_scale > mad_scale * (1 + TAIL_SIGMAS * _relative_scale_error(q, n)):
                scale = max(scale, tail_scale)
    return ImpostorFit(median, max(scale, 1e-6), int(n), source)


def _relative_scale_error(q: float, n: int) -> float:
    """Relative standard error of (scale from the q-quantile) - (scale from the MAD) for n normal pairs: the
    q-quantile's sqrt(q (1 - q) / n) / (pdf(z_q) z_q) and the MAD's 1.166 / sqrt(n), taken as independent."""
    z = normal_isf(1 - q)
    quantile = math.sqrt(q * (1 - q) / n) / (math.exp(-z * z / 2) / math.sqrt(2 * math.pi) * z)
    return math.hypot(quantile, MAD_RELATIVE_ERROR / math.sqrt(n))


def excess_test(scores: np.ndarray, compared: int, fit: ImpostorFit, threshold: float, alpha: float = ALPHA,
                score: str = "cosine") -> dict:
    """Are there more pairs above `threshold` than chance gives among `compared` impostor pairs?

    A scan over levels: at the threshold and at each observed score above it (the k best pairs score >= the
    k-th best), the Poisson probability of at least that many pairs where `fit` expects compared x FAR(level),
    multiplied by the number of levels scanned (Bonferroni). Near-duplicates far above the threshold are
    thus found even among many chance pairs near it, and a count at chance level is not. The excess is the
    pairs at or above the lowest significant level: every pair that a significant count still includes."""
    ranked = np.sort(np.asarray(scores, np.float64)[np.asarray(scores) >= threshold])[::-1]
    levels = [(len(ranked), threshold)] + [(k, float(level)) for k, level in enumerate(ranked, start=1)]
    tests = []
    for count, level in levels:
        expected = compared * fit.far(level)
        tests.append((min(1.0, poisson_sf(count, expected) * len(levels)), count, level, expected))
    significant = [t for t in tests if t[0] < alpha and t[1] > t[3]]
    expected_at_threshold = tests[0][3]
    if significant:
        p, count, level, expected = max(significant, key=lambda t: (t[1], -t[2]))  # the lowest significant level
        verdict = f"excess: {count} pairs at {score} >= {level:.3f} over the {expected:.3g} expected (p = {p:.2g})"
    else:
        p = min(t[0] for t in tests)
        verdict = f"consistent with chance: {len(ranked)} pairs over the {expected_at_threshold:.3g} expected"
    return {"verdict": verdict, "significant": bool(significant), "p_value": p, "alpha": alpha,
            "pairs": int(len(ranked)), "expected_by_chance": expected_at_threshold,
            "excess_level": level if significant else None, "excess_pairs": count if significant else 0,
            "excess_expected": expected if significant else None, "levels_scanned": len(levels)}
