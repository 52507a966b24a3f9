"""Probabilities that mean what they say: temperature scaling, its error and the reliability curve.

Temperature scaling (Guo et al., ICML 2017) divides a network's logits by one number T fitted
by likelihood on held-out labelled images: T > 1 softens over-confident probabilities, T < 1
sharpens timid ones, and the ranking (so ROC AUC) is unchanged. It is fitted here from class
probabilities, whose logs are the logits up to a constant per image, so it works on what
either backend returns. The expected calibration error (ECE) is the mean gap between the
predicted P(pneumonia) and the observed share of pneumonia, over equal-width bins, weighted
by the bins' sizes.

A site's films move the operating point through a prior (`CalibrationPrior`): the log-likelihood
ratio of pneumonia as a line in the log-odds the model gives, `a (u - u0) + c` around the
threshold's log-odds `u0`, fitted over validation and its shifted copies when the operating point
was chosen, with the spread of its slope and offset from one shifted copy to another as the prior's
width (how far sites were seen to move it). `fit_site_line` then finds the most probable line for a
site's labelled films under that prior: 40 films move it as far as they can justify, 400 further.
`estimate_prevalence` finds a site's share of pneumonia from unlabelled films (EM; Saerens et al.,
Neural Computation 2002).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Mapping, Sequence

import numpy as np
from scipy.optimize import minimize, minimize_scalar

from pneumo.errors import PneumoError

__all__ = [
    "CALIBRATION_METHODS",
    "TEMPERATURE_RANGE",
    "CalibrationPrior",
    "apply_temperature",
    "choose_temperature",
    "estimate_prevalence",
    "expected_calibration_error",
    "fit_calibration_prior",
    "fit_site_line",
    "fit_temperature",
    "log_odds",
    "recalibrate",
    "reliability_bins",
    "SitePoint",
    "site_point",
]

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
    result = minimize_scalar(
        lambda log_t: _nll(probs, y, float(np.exp(log_t))) + penalty(log_t), bounds=(lo, hi), method="bounded", options={"xatol": 1e-4}
    )
    return float(np.exp(result.x))


def reliability_bins(y_true: Sequence[int], prob: Sequence[float], bins: int = 10) -> list[dict[str, float]]:
    """Per equal-width bin of P(pneumonia): its range, image count, mean predicted P and observed share of pneumonia."""
    y, p = np.asarray(y_true, dtype=float), np.asarray(prob, dtype=float)
    index = np.clip((p * bins).astype(int), 0, bins - 1)
    rows = []
    for k in range(bins):
        inside = index == k
        n = int(inside.sum())
        rows.append(
            {
                "low": k / bins,
                "high": (k + 1) / bins,
                "n": n,
                "mean_probability": float(p[inside].mean()) if n else float("nan"),
                "observed": float(y[inside].mean()) if n else float("nan"),
            }
        )
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


def log_odds(p: np.ndarray | float) -> np.ndarray:
    """log(p / (1 - p)), with p kept inside (1e-7, 1 - 1e-7) so that 0 and 1 stay finite."""
    p = np.clip(np.asarray(p, dtype=np.float64), 1e-7, 1 - 1e-7)
    return np.log(p) - np.log1p(-p)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1 + np.tanh(0.5 * np.asarray(x, dtype=np.float64)))


def recalibrate(probs: np.ndarray, temperature: float, logit_offset: float, new_temperature: float, new_logit_offset: float) -> np.ndarray:
    """Class probabilities [N, K] given at (`temperature`, `logit_offset`) as the same network gives them
    at (`new_temperature`, `new_logit_offset`): what `Task.probabilities` would return, without running it again."""
    logits = np.log(np.clip(np.asarray(probs, dtype=np.float64), _EPS, 1.0))
    logits[:, 1:] -= logit_offset
    logits = logits * (temperature / new_temperature)
    logits[:, 1:] += new_logit_offset
    logits -= logits.max(axis=1, keepdims=True)
    exp = np.exp(logits)
    return exp / exp.sum(axis=1, keepdims=True)


# the widths a prior gets when it cannot measure them (no shifted copies), and the least it gets when
# it can: chosen with benchmarks/bench_site.py, where the slope's width barely mattered and the offset's did
DEFAULT_SLOPE_SD, DEFAULT_OFFSET_SD = 0.3, 1.5
MIN_SLOPE_SD, MIN_OFFSET_SD = 0.1, 0.5


@dataclass(frozen=True)
class CalibrationPrior:
    """The validation evidence behind a model's operating point, as the prior `pneumo calibrate` starts from.

    The log-likelihood ratio of pneumonia at the log-odds `u` the model gives (at `temperature`,
    no offset) is modelled as `slope * (u - log_odds(threshold)) + offset`; the slope and offset
    are expected to differ at a new site by about `slope_sd` and `offset_sd`. `prevalence` is the
    share of pneumonia among the validation films, which the model's probabilities are calibrated to.
    """

    threshold: float
    temperature: float
    slope: float = 1.0
    offset: float = 0.0
    slope_sd: float = DEFAULT_SLOPE_SD
    offset_sd: float = DEFAULT_OFFSET_SD
    prevalence: float = 0.5
    n_films: int = 0  # validation films (one copy) behind it; 0 for the default prior of a model that has none
    n_sites: int = 0  # validation copies (unshifted and shifted) whose spread gave the widths

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> CalibrationPrior:
        return cls(**{k: values[k] for k in cls.__dataclass_fields__ if k in values})

    def log_likelihood_ratio(self, u: np.ndarray) -> np.ndarray:
        return self.slope * (np.asarray(u, dtype=np.float64) - log_odds(self.threshold)) + self.offset


def _fit_line(x: np.ndarray, y: np.ndarray, mean: tuple[float, float], sd: tuple[float, float]) -> tuple[float, float]:
    """The most probable (slope, offset) of the log-likelihood ratio `slope * x + offset` for labels `y`
    under independent normal priors; the sample's own class balance is an offset of the labels' odds."""
    n1 = int(y.sum())
    n0 = len(y) - n1
    if n0 == 0 or n1 == 0:
        raise PneumoError("fitting a site's calibration needs labelled films of both classes")
    balance = np.log(n1 / n0)
    (a0, c0), (sa, sc) = mean, sd

    def objective(w: np.ndarray) -> tuple[float, np.ndarray]:
        a, c = w
        z = a * x + c + balance
        residual = _sigmoid(z) - y
        value = np.sum(np.logaddexp(0, z) - y * z) + (a - a0) ** 2 / (2 * sa**2) + (c - c0) ** 2 / (2 * sc**2)
        return float(value), np.array([np.sum(residual * x) + (a - a0) / sa**2, np.sum(residual) + (c - c0) / sc**2])

    result = minimize(objective, np.array([a0, c0]), jac=True, method="L-BFGS-B", bounds=[(1e-3, 1e3), (-50.0, 50.0)])
    return float(result.x[0]), float(result.x[1])


def fit_calibration_prior(
    probabilities: Mapping[str, np.ndarray], y: Sequence[int], threshold: float, temperature: float
) -> CalibrationPrior:
    """The prior of a model whose operating point was chosen on validation: the line fitted over every
    copy of validation pooled, and the spread of the lines fitted to each copy alone as its widths.

    Args:
        probabilities: P(pneumonia) of the validation films per copy (`"none"` unshifted, and the
            shifted copies of `pneumo.evaluation.robustness`), at the model's calibration.
        y: 0/1 labels of the validation films.
        threshold, temperature: the operating point the probabilities were given at.
    """
    y = np.asarray(y, dtype=int)
    u0 = log_odds(threshold)
    weak = (100.0, 100.0)  # no prior to speak of: thousands of films
    xs = {name: log_odds(p) - u0 for name, p in probabilities.items()}
    slope, offset = _fit_line(np.concatenate(list(xs.values())), np.tile(y, len(xs)), (1.0, 0.0), weak)
    slope_sd, offset_sd = DEFAULT_SLOPE_SD, DEFAULT_OFFSET_SD
    if len(xs) >= 3:
        lines = np.array([_fit_line(x, y, (1.0, 0.0), weak) for x in xs.values()])
        slope_sd, offset_sd = max(MIN_SLOPE_SD, float(lines[:, 0].std(ddof=1))), max(MIN_OFFSET_SD, float(lines[:, 1].std(ddof=1)))
    return CalibrationPrior(
        float(threshold), float(temperature), slope, offset, slope_sd, offset_sd, float(np.clip(y.mean(), 1e-3, 1 - 1e-3)), len(y), len(xs)
    )


def fit_site_line(u: np.ndarray, y: Sequence[int], prior: CalibrationPrior) -> tuple[float, float]:
    """The site's (slope, offset) of the log-likelihood-ratio line: the most probable under `prior`
    given the site's labelled films (their log-odds `u` as the prior's model gives them)."""
    x = np.asarray(u, dtype=np.float64) - log_odds(prior.threshold)
    return _fit_line(x, np.asarray(y, dtype=int), (prior.slope, prior.offset), (prior.slope_sd, prior.offset_sd))


def estimate_prevalence(log_likelihood_ratio: np.ndarray, iterations: int = 200, tolerance: float = 1e-7) -> float:
    """A site's share of pneumonia from its unlabelled films' log-likelihood ratios: the maximum-likelihood
    mixing proportion, by EM (each film's posterior at the current share, averaged, until it settles)."""
    llr = np.asarray(log_likelihood_ratio, dtype=np.float64)
    if not len(llr):
        raise PneumoError("estimating a prevalence needs films")
    share = 0.5
    for _ in range(iterations):
        new = float(np.clip(_sigmoid(llr + log_odds(share)).mean(), 1e-4, 1 - 1e-4))
        if abs(new - share) < tolerance:
            return new
        share = new
    return share


@dataclass(frozen=True)
class SitePoint:
    """A site's operating point: its log-likelihood-ratio line and the prevalence its films are judged at.

    With a prevalence (given, or estimated from unlabelled films), probabilities are calibrated to it
    and a film is PNEUMONIA at P >= 1/2, the best accuracy there; without one, probabilities are
    calibrated to the prior's (validation's) prevalence and the threshold is the balanced rule the
    model's own operating point follows (the log-likelihood ratio at least the prior's offset), so
    with no films at all nothing changes. The model's log-odds `u` are those of the prior's operating
    point (its temperature, no offset); a network's logit `z` gives `u = z / prior.temperature`.
    """

    prior: CalibrationPrior
    slope: float
    offset: float
    prevalence: float | None = None
    source: str = "unknown"  # "given", "estimated" or "unknown"

    @property
    def shown_prevalence(self) -> float:
        return self.prevalence if self.prevalence is not None else self.prior.prevalence

    @property
    def temperature(self) -> float:
        """What the network's logits are divided by."""
        return self.prior.temperature / self.slope

    @property
    def logit_offset(self) -> float:
        """What is then added to the log-odds of pneumonia."""
        return float(self.offset - self.slope * log_odds(self.prior.threshold) + log_odds(self.shown_prevalence))

    @property
    def threshold(self) -> float:
        if self.prevalence is not None:
            return 0.5
        return float(_sigmoid(self.prior.offset + log_odds(self.shown_prevalence)))

    def log_likelihood_ratio(self, u: np.ndarray) -> np.ndarray:
        return self.slope * (np.asarray(u, dtype=np.float64) - log_odds(self.prior.threshold)) + self.offset

    def probability(self, u: np.ndarray) -> np.ndarray:
        """P(pneumonia) at the site for the prior's log-odds `u`."""
        return _sigmoid(self.log_likelihood_ratio(u) + log_odds(self.shown_prevalence))

    def decide(self, u: np.ndarray) -> np.ndarray:
        """True where the film is labelled PNEUMONIA."""
        return self.probability(u) >= self.threshold


def site_point(
    prior: CalibrationPrior,
    u_labelled: np.ndarray | None = None,
    y: Sequence[int] | None = None,
    u_unlabeled: np.ndarray | None = None,
    prevalence: float | None = None,
) -> SitePoint:
    """The operating point for a site from what it gives: labelled films' log-odds and labels (the line,
    `fit_site_line`), unlabelled films' log-odds (the prevalence, `estimate_prevalence`, unless `prevalence` is given)."""
    slope, offset = (prior.slope, prior.offset) if u_labelled is None or y is None else fit_site_line(u_labelled, y, prior)
    source = "given" if prevalence is not None else "unknown"
    if prevalence is None and u_unlabeled is not None and len(u_unlabeled):
        line = SitePoint(prior, slope, offset)
        prevalence, source = estimate_prevalence(line.log_likelihood_ratio(u_unlabeled)), "estimated"
    return SitePoint(prior, slope, offset, None if prevalence is None else float(prevalence), source)
