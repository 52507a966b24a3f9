"""Temperature scaling and the calibration error, against cases worked by hand."""
from __future__ import annotations

import numpy as np
import pytest

from pneumo.errors import PneumoError
from pneumo.evaluation.calibration import apply_temperature, choose_temperature, expected_calibration_error, fit_temperature, reliability_bins


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
