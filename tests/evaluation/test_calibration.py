"""Temperature scaling, the calibration error and a site's operating point, against cases worked by hand and simulated sites."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from pneumo.errors import PneumoError
from pneumo.evaluation.calibration import (
    DEFAULT_OFFSET_SD,
    DEFAULT_SLOPE_SD,
    MIN_OFFSET_SD,
    CalibrationPrior,
    apply_temperature,
    choose_temperature,
    estimate_prevalence,
    expected_calibration_error,
    fit_calibration_prior,
    fit_site_line,
    fit_temperature,
    recalibrate,
    reliability_bins,
    site_point,
)


def _binary(logits: np.ndarray) -> np.ndarray:
    p = 1 / (1 + np.exp(-logits))
    return np.stack([1 - p, p], axis=1)


def test_a_known_temperature_is_recovered() -> None:
    rng = np.random.default_rng(0)
    true_logits = rng.normal(0, 2, 20000)
    y = (rng.random(20000) < 1 / (1 + np.exp(-true_logits))).astype(int)
    overconfident = _binary(3.0 * true_logits)  # a network three times too sure of itself
    t = fit_temperature(overconfident, y)
    assert t == pytest.approx(3.0, rel=0.05)
    np.testing.assert_allclose(apply_temperature(overconfident, t)[:, 1], _binary(3.0 * true_logits / t)[:, 1], atol=1e-6)


def test_temperature_keeps_the_ranking_and_sums() -> None:
    probs = np.array([[0.9, 0.05, 0.05], [0.2, 0.5, 0.3], [0.01, 0.01, 0.98]])
    for t in (0.5, 1.0, 4.0):
        out = apply_temperature(probs, t)
        np.testing.assert_allclose(out.sum(1), 1)
        assert (out.argmax(1) == probs.argmax(1)).all()
    np.testing.assert_allclose(apply_temperature(probs, 1.0), probs, atol=1e-9)


def test_a_prior_keeps_separated_films_from_sharpening_to_the_bound() -> None:
    y = np.array([0] * 20 + [1] * 20)
    probs = _binary(np.where(y == 1, 3.0, -3.0))  # perfectly separated
    assert fit_temperature(probs, y) < 0.1  # the likelihood alone runs to the bound
    assert 0.3 < fit_temperature(probs, y, prior_sd=0.5) < 1.0
    with pytest.raises(PneumoError, match="two classes"):
        fit_temperature(probs[:20], y[:20])


def test_ece_and_bins_by_hand() -> None:
    # bin 0.2-0.3: two images at 0.25, one sick (observed 0.5): gap 0.25; bin 0.9-1.0: two at 0.95, both sick: gap 0.05
    y, p = [0, 1, 1, 1], [0.25, 0.25, 0.95, 0.95]
    bins = reliability_bins(y, p)
    assert [b["n"] for b in bins] == [0, 0, 2, 0, 0, 0, 0, 0, 0, 2]
    assert bins[2]["observed"] == 0.5 and bins[9]["mean_probability"] == pytest.approx(0.95)
    assert expected_calibration_error(y, p) == pytest.approx((2 * 0.25 + 2 * 0.05) / 4)
    assert expected_calibration_error([0, 1], [0.0, 1.0]) == 0.0


def test_choose_temperature_follows_the_config() -> None:
    rng = np.random.default_rng(1)
    z = rng.normal(0, 2, 4000)
    y = (rng.random(4000) < 1 / (1 + np.exp(-z))).astype(int)
    shifted = {"none": _binary(z), "blur": _binary(3 * z)}  # calibrated as it is; over-confident when shifted
    assert choose_temperature("none", shifted, y) == 1.0
    assert choose_temperature("val", shifted, y) == pytest.approx(1.0, abs=0.1)
    assert 1.3 < choose_temperature("shift", shifted, y) < 3.0
    with pytest.raises(PneumoError, match="not one of"):
        choose_temperature("platt", shifted, y)


def _site(rng: np.random.Generator, n: int, shift: float, prevalence: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
    """Log-odds of a site whose films all read `shift` higher than validation's: y ~ prevalence, u | y normal around +-3."""
    y = (rng.random(n) < prevalence).astype(int)
    return np.where(y == 1, 3.0, -3.0) + rng.normal(0, 1.5, n) + shift, y


def _prior() -> CalibrationPrior:
    rng = np.random.default_rng(0)
    u, y = _site(rng, 4000, 0.0, prevalence=0.7)
    return fit_calibration_prior({"none": 1 / (1 + np.exp(-u))}, y, threshold=0.5, temperature=1.0)


def test_the_prior_is_the_validation_line_and_no_films_change_nothing() -> None:
    rng = np.random.default_rng(0)
    u, y = _site(rng, 4000, 0.0, prevalence=0.7)
    copies = {"none": u, "a": u + 0.5, "b": u - 0.5, "c": 1.2 * u}
    prior = fit_calibration_prior({k: 1 / (1 + np.exp(-v)) for k, v in copies.items()}, y, threshold=0.5, temperature=1.3)
    # two unit-variance normals 6 apart: log-likelihood ratio 6 u / 1.5^2 in the pooled log-odds, roughly
    assert 1.5 < prior.slope < 3.5 and abs(prior.offset) < 1.0 and prior.prevalence == pytest.approx(0.7, abs=0.03)
    assert prior.offset_sd > MIN_OFFSET_SD and prior.n_sites == 4 and prior.n_films == 4000 and prior.temperature == 1.3
    one = fit_calibration_prior({"none": 1 / (1 + np.exp(-u))}, y, 0.5, 1.0)
    assert (one.slope_sd, one.offset_sd) == (DEFAULT_SLOPE_SD, DEFAULT_OFFSET_SD)  # nothing to measure the spread on
    point = site_point(prior)  # no films at all: the shipped decision, unchanged
    grid = np.linspace(-8, 8, 401)
    np.testing.assert_array_equal(point.decide(grid), grid >= 0.0)


def test_forty_films_move_the_point_part_way_and_four_hundred_further() -> None:
    prior = _prior()
    truth = site_point(prior, *_site(np.random.default_rng(1), 100_000, 2.0))  # the site's films all read 2 higher
    boundary = lambda point: float(np.linspace(-10, 10, 20001)[np.argmax(point.decide(np.linspace(-10, 10, 20001)))])  # noqa: E731
    moved = {
        n: np.median([boundary(site_point(prior, *_site(np.random.default_rng(seed), n, 2.0))) for seed in range(2, 42)]) for n in (40, 400)
    }
    assert 0.0 < moved[40] < moved[400] <= boundary(truth) + 0.2 and boundary(truth) > 1.0


def test_a_known_prevalence_is_recovered_and_judged_at() -> None:
    prior = _prior()
    u, y = _site(np.random.default_rng(3), 3000, 0.0, prevalence=0.25)
    point = site_point(prior, u_unlabeled=u)
    assert point.source == "estimated" and point.prevalence == pytest.approx(0.25, abs=0.03)
    assert estimate_prevalence(prior.log_likelihood_ratio(u)) == pytest.approx(point.prevalence)
    assert point.threshold == 0.5 and (point.decide(u) == (point.probability(u) >= 0.5)).all()
    # calibrated there: the mean probability is the share of pneumonia
    assert point.probability(u).mean() == pytest.approx(y.mean(), abs=0.03)
    given = site_point(prior, prevalence=0.25)
    assert given.source == "given" and given.prevalence == 0.25
    # at a low prevalence fewer films are called pneumonia than at the balanced rule
    assert given.decide(u).mean() < site_point(prior).decide(u).mean()


def test_the_site_point_is_what_the_model_computes_with_its_temperature_and_offset() -> None:
    prior = replace(_prior(), temperature=0.8, threshold=0.6)
    point = site_point(prior, *_site(np.random.default_rng(4), 200, 1.0), prevalence=0.4)
    z = np.linspace(-6, 6, 25)  # the network's logits
    probs = _binary(z / prior.temperature)  # at the prior's own operating point
    after = recalibrate(probs, prior.temperature, 0.0, point.temperature, point.logit_offset)[:, 1]
    np.testing.assert_allclose(after, point.probability(z / prior.temperature), atol=1e-9)
    np.testing.assert_allclose(after, 1 / (1 + np.exp(-(z / point.temperature + point.logit_offset))), atol=1e-9)


def test_a_labelled_sample_of_one_class_is_refused() -> None:
    with pytest.raises(PneumoError, match="both classes"):
        fit_site_line(np.zeros(5), np.ones(5), _prior())
    with pytest.raises(PneumoError, match="needs films"):
        estimate_prevalence(np.zeros(0))
