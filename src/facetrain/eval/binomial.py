"""Exact binomial intervals without scipy: Clopper-Pearson intervals for a proportion, and the
distribution-free interval for a quantile from order statistics.

Both rest on the regularised incomplete beta function I_x(a, b), since
P(Binomial(n, p) <= k) = I_{1-p}(n - k, k + 1). It is evaluated with Lentz's continued fraction
(converges in O(sqrt(max(a, b))) terms, so millions of impostor pairs cost milliseconds), and
inverted by bisection, which needs no derivative and cannot leave [0, 1].
"""
from __future__ import annotations

import math

_TINY = 1e-300


def _beta_fraction(a: float, b: float, x: float) -> float:
    """The continued fraction of I_x(a, b) (modified Lentz), valid for x < (a + 1) / (a + b + 2)."""
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > _TINY else _TINY)
    h = d
    for m in range(1, 100_000):
        m2 = 2 * m
        for numerator in (m * (b - m) * x / ((qam + m2) * (a + m2)), -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))):
            d = 1.0 + numerator * d
            d = 1.0 / (d if abs(d) > _TINY else _TINY)
            c = 1.0 + numerator / c
            c = c if abs(c) > _TINY else _TINY
            h *= d * c
        if abs(d * c - 1.0) < 1e-15:
            break
    return h


def betainc(a: float, b: float, x: float) -> float:
    """Regularised incomplete beta function I_x(a, b) for a, b > 0 and 0 <= x <= 1."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    log_front = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    if x < (a + 1.0) / (a + b + 2.0):
        return math.exp(log_front) * _beta_fraction(a, b, x) / a
    return 1.0 - math.exp(log_front) * _beta_fraction(b, a, 1.0 - x) / b


def binomial_cdf(k: int, n: int, p: float) -> float:
    """P(Binomial(n, p) <= k)."""
    if k < 0:
        return 0.0
    if k >= n:
        return 1.0
    return betainc(n - k, k + 1, 1.0 - p)


def _bisect(f, target: float, lo: float = 0.0, hi: float = 1.0) -> float:
    """x in [lo, hi] with f(x) = target, for f increasing in x (60 halvings: below float spacing)."""
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        if f(mid) < target:
            lo = mid
        else:
            hi = mid
    return 0.5 * (lo + hi)


def clopper_pearson(successes: int, trials: int, level: float = 0.95) -> tuple[float, float]:
    """Exact (conservative) two-sided interval for a proportion seen as successes / trials."""
    if trials <= 0:
        return 0.0, 1.0
    alpha = 1.0 - level
    # lower: P(X >= k | p) = alpha / 2, i.e. the Beta(k, n - k + 1) quantile; upper: Beta(k + 1, n - k)
    lower = 0.0 if successes == 0 else _bisect(lambda p: betainc(successes, trials - successes + 1, p), alpha / 2)
    upper = 1.0 if successes == trials else _bisect(lambda p: betainc(successes + 1, trials - successes, p),
                                                      1.0 - alpha / 2)
    return lower, upper


def quantile_rank_interval(n: int, q: float, level: float = 0.95) -> tuple[int, int]:
    """1-based ranks (lo, hi) of sorted samples with P(x_(lo) <= quantile_q <= x_(hi)) >= level, from the
    Binomial(n, q) count of samples below the quantile. A rank of 0 or n + 1 means the interval is open
    on that side (too few samples to bound it)."""
    alpha = 1.0 - level
    lo = _binomial_quantile(n, q, alpha / 2)  # P(B <= lo - 1) <= alpha / 2
    hi = _binomial_quantile(n, q, 1.0 - alpha / 2) + 1
    return lo, min(hi, n + 1)


def _binomial_quantile(n: int, p: float, target: float) -> int:
    """The largest k in [0, n] with P(Binomial(n, p) <= k - 1) <= target (0 when even P(B = 0) > target)."""
    lo, hi = 0, n
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if binomial_cdf(mid - 1, n, p) <= target:
            lo = mid
        else:
            hi = mid - 1
    return lo
