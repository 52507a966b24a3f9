"""Probabilities that mean what they say: temperature scaling, its error and the reliability curve.

Temperature scaling (Guo et al., ICML 2017) divides a network's logits by one number T fitted
by likelihood on held-out labelled images: T > 1 softens over-confident probabilities, T < 1
sharpens timid ones, and the ranking (so ROC AUC) is unchanged. It is fitted here from class
probabilities, whose logs are the logits up to a constant per image, so it works on what
either backend returns. The expected calibration error (ECE) is the mean gap between the
predicted P(pneumonia) and the observed share of pneumonia, over equal-width bins, weighted
by the bins' sizes.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
from scipy.optimize import minimize_scalar

from pneumo.errors import PneumoError

__all__ = ["CALIBRATION_METHODS", "fit_temperature", "apply_temperature", "choose_temperature", "expected_calibration_error", "reliability_bins", "TEMPERATURE_RANGE"]

TEMPERATURE_RANGE = (0.05, 20.0)
# "none": T = 1; "val": fitted on the validation images; "shift": on them and their shifted copies
# together (`pneumo.evaluation.robustness`), since a new site's films are not validation's
CALIBRATION_METHODS = ("none", "val", "shift")
_EPS = 1e-12  # float64 logs of float32 probabilities: logits up to +-27


def apply_temperature(probs: np.ndarray, temperature: float) -> np.ndarray:
    """Class probabilities [N, K] as the same network would give them with its logits divided by `temperature`."""
    logits = np.log(np.clip(np.asarray(probs, dtype=np.float64), _EPS, 1.0)) / temperature
    logits -= logits.max(axis=1, keepdims=True)
    exp = np.exp(logits)
    return exp / exp.sum(axis=1, keepdims=True)


def _nll(probs: np.ndarray, targets: np.ndarray, temperature: float) -> float:
    p = apply_temperature(probs, temperature)[np.arange(len(targets)), targets]
    return float(-np.log(np.clip(p, _EPS, 1.0)).mean())


def fit_temperature(probs: np.ndarray, targets: Sequence[int], prior_sd: float | None = None) -> float:
    """The temperature (in `TEMPERATURE_RANGE`) that maximises the likelihood of `targets`
    (class indices) under `probs` [N, K].

    With `prior_sd`, the most probable temperature under a normal prior on log T around 0 (no
    change) with that spread: a few films that happen to be perfectly separated would otherwise
    drive T to its lower bound, sharpening every later answer to 0 or 1.
    """
    probs, y = np.asarray(probs, dtype=np.float64), np.asarray(targets, dtype=int)
    if len(y) == 0 or len(np.unique(y)) < 2:
        raise PneumoError("fitting a temperature needs labelled images of at least two classes")
    penalty = (lambda log_t: log_t**2 / (2 * prior_sd**2 * len(y))) if prior_sd else (lambda log_t: 0.0)
    lo, hi = np.log(TEMPERATURE_RANGE[0]), np.log(TEMPERATURE_RANGE[1])
    result = minimize_scalar(lambda log_t: _nll(probs, y, float(np.exp(log_t))) + penalty(log_t), bounds=(lo, hi), method="bounded", options={"xatol": 1e-4})
    return float(np.exp(result.x))


def reliability_bins(y_true: Sequence[int], prob: Sequence[float], bins: int = 10) -> list[dict[str, float]]:
    """Per equal-width bin of P(pneumonia): its range, image count, mean predicted P and observed share of pneumonia."""
    y, p = np.asarray(y_true, dtype=float), np.asarray(prob, dtype=float)
    index = np.clip((p * bins).astype(int), 0, bins - 1)
    rows = []
    for k in range(bins):
        inside = index == k
        n = int(inside.sum())
        rows.append({
            "low": k / bins, "high": (k + 1) / bins, "n": n,
            "mean_probability": float(p[inside].mean()) if n else float("nan"),
            "observed": float(y[inside].mean()) if n else float("nan"),
        })
    return rows


def expected_calibration_error(y_true: Sequence[int], prob: Sequence[float], bins: int = 10) -> float:
    """ECE of P(pneumonia) against 0/1 labels over `bins` equal-width bins (NaN for no images)."""
    rows = [r for r in reliability_bins(y_true, prob, bins) if r["n"]]
    total = sum(r["n"] for r in rows)
    if not total:
        return float("nan")
    return float(sum(r["n"] * abs(r["mean_probability"] - r["observed"]) for r in rows) / total)


def choose_temperature(method: str, shifted: dict[str, np.ndarray], targets: Sequence[int]) -> float:
    """The temperature a config's `calibration` asks for, from validation class probabilities
    under each shift (`shifted["none"]` unshifted, as `shifted_probabilities` gives them for a model's class probabilities)."""
    if method not in CALIBRATION_METHODS:
        raise PneumoError(f"calibration {method!r} is not one of {', '.join(CALIBRATION_METHODS)}")
    if method == "none":
        return 1.0
    pool = list(shifted.values()) if method == "shift" else [shifted["none"]]
    return fit_temperature(np.concatenate(pool), np.tile(np.asarray(targets, dtype=int), len(pool)))
