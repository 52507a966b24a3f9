"""Where the decision threshold goes: a fixed number, Youden's J on validation, or the best
mean balanced accuracy over validation under simulated acquisition shifts (`shift`)."""

from __future__ import annotations

from typing import Sequence

import numpy as np
from sklearn.metrics import roc_curve

from pneumo.errors import PneumoError

__all__ = ["THRESHOLD_METHODS", "youden_threshold", "shift_threshold", "choose_threshold"]

THRESHOLD_METHODS = ("youden", "shift")  # besides a number in [0, 1]; a distilled student may also take "teacher" (config.py)


def youden_threshold(y_true: Sequence[int], prob: Sequence[float]) -> float:
    """The threshold maximising sensitivity + specificity (Youden's J) on the given data."""
    fpr, tpr, thresholds = roc_curve(np.asarray(y_true), np.asarray(prob))
    best = int(np.argmax(tpr - fpr))
    return float(min(max(thresholds[best], 0.0), 1.0))


def shift_threshold(probabilities: dict[str, np.ndarray], y: np.ndarray, grid: int = 99) -> float:
    """The threshold with the best mean balanced accuracy over the unshifted and shifted copies.

    Averaging over shifts keeps the choice away from the extremes a saturated validation
    split produces (where almost any threshold separates the classes).
    """
    thresholds = np.linspace(0.01, 0.99, grid)
    pos, neg = y == 1, y == 0
    scores = [np.mean([((p[pos] >= t).mean() + (p[neg] < t).mean()) / 2 for p in probabilities.values()]) for t in thresholds]
    best = np.flatnonzero(np.isclose(scores, max(scores)))
    return round(float(thresholds[best[len(best) // 2]]), 6)  # the middle of a plateau, not its edge; 0.71, not 0.7100000000000001


def choose_threshold(method: str | float, y: np.ndarray, shifted: dict[str, np.ndarray]) -> float:
    """The threshold a config's `threshold` asks for, from validation labels and `shifted_probabilities` ("none" unshifted)."""
    if method == "youden":
        return youden_threshold(y, shifted["none"])
    if method == "shift":
        return shift_threshold(shifted, y)
    if isinstance(method, str):
        raise PneumoError(f"threshold {method!r} is not a number, {' or '.join(THRESHOLD_METHODS)}")
    return float(method)
