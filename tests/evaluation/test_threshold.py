"""Where the decision threshold goes: Youden's J, the shift method, or a number."""

from __future__ import annotations

import numpy as np
import pytest

from pneumo.errors import PneumoError
from pneumo.evaluation.metrics import binary_metrics
from pneumo.evaluation.robustness import shifted_probabilities
from pneumo.evaluation.threshold import choose_threshold, shift_threshold, youden_threshold


def test_youden_separates_a_separable_example() -> None:
    y = [0, 0, 0, 0, 1, 1, 1]
    p = [0.05, 0.2, 0.3, 0.35, 0.6, 0.8, 0.95]
    t = youden_threshold(y, p)
    assert 0.35 < t <= 0.6
    m = binary_metrics(y, p, t)
    assert m["accuracy"] == 1.0 and m["recall"] == 1.0 and m["specificity"] == 1.0


def test_youden_beats_half_when_scores_are_shifted() -> None:
    # a model whose scores all sit above 0.5: 0.5 calls everything positive, Youden does not
    y = [0, 0, 0, 1, 1, 1]
    p = [0.6, 0.62, 0.7, 0.8, 0.85, 0.9]
    t = youden_threshold(y, p)
    assert binary_metrics(y, p, 0.5)["specificity"] == 0.0
    assert binary_metrics(y, p, t)["accuracy"] == 1.0
    assert 0.0 <= t <= 1.0


def test_shift_threshold_lands_between_separated_scores() -> None:
    y = np.array([0] * 50 + [1] * 50)
    predict = lambda imgs: np.where(np.arange(len(imgs)) < 50, 0.2, 0.8)  # noqa: E731
    t = shift_threshold(shifted_probabilities(predict, np.zeros((100, 8, 8), np.uint8)), y)
    assert 0.2 < t <= 0.8 and abs(t - 0.5) < 0.05


def test_choose_threshold_follows_the_config() -> None:
    y = np.array([0, 0, 0, 1, 1, 1])
    p = np.array([0.1, 0.2, 0.3, 0.6, 0.7, 0.8])
    shifted = {"none": p, "brighter": np.clip(p + 0.15, 0, 1)}
    assert choose_threshold(0.42, y, shifted) == 0.42
    assert choose_threshold("youden", y, shifted) == youden_threshold(y, p)
    assert choose_threshold("shift", y, shifted) == shift_threshold(shifted, y)
    assert 0.3 < choose_threshold("shift", y, shifted) <= 0.6
    with pytest.raises(PneumoError, match="not a number"):
        choose_threshold("median", y, shifted)
