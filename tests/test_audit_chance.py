"""The audit's chance model: a conservative normal fit of impostor cosines and the scanned Poisson excess test,
against hand computations and simulated impostors."""
import math

import numpy as np
import pytest

from facetrain.audit.chance import ALPHA, ImpostorFit, excess_test, fit_impostors, normal_isf, poisson_sf


def test_poisson_and_normal_tails_by_hand():
    assert poisson_sf(0, 3.0) == 1.0
    assert poisson_sf(1, 3.0) == pytest.approx(1 - math.exp(-3))
    assert poisson_sf(3, 2.0) == pytest.approx(1 - math.exp(-2) * (1 + 2 + 2), rel=1e-9)
    assert normal_isf(0.025) == pytest.approx(1.959964, abs=1e-6)
    fit = ImpostorFit(0.1, 0.05, 1000, "test")  # a normal of atanh(cosine)
    assert fit.far(math.tanh(0.1 + 0.05 * 1.959964)) == pytest.approx(0.025, rel=1e-5)
    assert fit.threshold(1e-6) == pytest.approx(math.tanh(0.1 + 0.05 * 4.753424), abs=1e-6)
    assert ImpostorFit(1.0, 2.0, 1000, "weak model").threshold(1e-6) <= 1.0  # always a cosine


def test_fit_recovers_a_normal_and_ignores_a_few_matches():
    rng = np.random.default_rng(0)
    scores = np.tanh(rng.normal(0.05, 0.1, 20000))
    fit = fit_impostors(scores, "test")
    assert fit.location == pytest.approx(0.05, abs=0.005) and fit.scale == pytest.approx(0.1, rel=0.05)
    contaminated = np.r_[scores, np.full(40, 0.95)]  # 0.2 % true matches among the "impostors"
    assert fit_impostors(contaminated, "test").scale == pytest.approx(fit.scale, rel=0.03)
    assert fit_impostors(scores[:29], "test") is None


def test_a_heavier_tail_widens_the_fit():
    """Student-t impostors (heavier than normal): the 0.99 quantile lifts the scale above the MAD's."""
    rng = np.random.default_rng(1)
    z = 0.1 * rng.standard_t(3, 50000)
    scores = np.tanh(z)
    fit = fit_impostors(scores, "test")
    assert fit.scale > 1.4826 * np.median(np.abs(z - np.median(z))) * 1.3
    assert fit.far(np.quantile(scores, 0.99)) >= 0.0099


def test_a_few_hundred_normal_pairs_are_not_widened_by_the_quantiles_noise():
    """465 normal pairs (a dataset's 31 identity centroids) whose 0.9 quantile happens to imply a scale 9.6 % above
    the MAD's: within sampling error (2 standard errors are 16 % here), so the fit keeps the MAD's scale; the larger
    of the two would have moved the threshold at FAR 1e-4 from 0.751 up to 0.788."""
    z = np.random.default_rng(11).normal(0.0, 0.3, 465)
    median = np.median(z)
    mad_scale = 1.4826 * np.median(np.abs(z - median))
    assert (np.quantile(z, 0.9) - median) / normal_isf(0.1) == pytest.approx(1.096 * mad_scale, rel=1e-3)
    assert fit_impostors(np.tanh(z), "centroid pairs").scale == pytest.approx(mad_scale, rel=1e-6)


def test_counts_at_chance_are_not_an_excess_and_copies_are():
    """Ten simulations at the chance level: none significant at alpha 1e-3 (the scan is Bonferroni-corrected);
    three exact copies among them are found, at their own level."""
    rng = np.random.default_rng(2)
    fit = ImpostorFit(0.0, 0.1, 1000, "test")
    compared, threshold = 200_000, fit.threshold(1e-4)
    for _ in range(10):
        scores = np.tanh(rng.normal(0.0, 0.1, compared)).astype(np.float32)
        above = scores[scores >= threshold]
        result = excess_test(above, compared, fit, threshold)
        assert not result["significant"] and result["verdict"].startswith("consistent with chance")
        assert result["expected_by_chance"] == pytest.approx(20, rel=1e-3)
    leaked = excess_test(np.r_[above, [0.99, 0.995, 1.0]], compared, fit, threshold)
    assert leaked["significant"] and leaked["p_value"] < ALPHA
    assert leaked["excess_pairs"] == 3 and leaked["excess_level"] == pytest.approx(0.99)
    assert leaked["verdict"].startswith("excess: 3 pairs at cosine >= 0.990")


def test_the_excess_reaches_down_to_the_lowest_significant_level():
    """Leaks at several cosines (one copy, four lookalike photos of shared people) above a few chance pairs:
    every leak is part of the excess, the chance pairs near the threshold are not."""
    fit = ImpostorFit(0.0, 0.1, 1000, "test")
    threshold = fit.threshold(1e-4)  # 0.356
    result = excess_test(np.array([1.0, 0.8, 0.75, 0.7, 0.65, 0.38, 0.375]), 100_000, fit, threshold)  # 10 expected
    assert result["significant"] and result["excess_pairs"] == 5 and result["excess_level"] == pytest.approx(0.65)


def test_the_compared_pairs_tail_keeps_a_long_tail_at_chance():
    """Impostor pairs of the reference alone (150, normal) miss the longer tail of the pairs compared (2 % of them
    from reference images that resemble many faces: a wider normal): their fit alone would call chance an excess;
    the larger of both models does not."""
    from facetrain.audit.chance import ChanceModel, fit_tail

    rng = np.random.default_rng(3)
    own = np.tanh(rng.normal(0.0, 0.2, 150))
    compared = np.tanh(np.r_[rng.normal(0.0, 0.15, 392_000), rng.normal(0.0, 0.35, 8_000)])
    alone = fit_impostors(own, "reference")
    threshold = alone.threshold(1e-4)
    assert excess_test(compared[compared >= threshold], len(compared), alone, threshold)["significant"]
    both = ChanceModel(alone, fit_tail(compared, "compared"))
    threshold = both.threshold(1e-4)
    assert not excess_test(compared[compared >= threshold], len(compared), both, threshold)["significant"]
