"""Fitting the input check (`pneumo.inference.checks.FeatureCheck`) from feature rows: scikit-learn lives here.

The rows come from any backend (`pneumo.inference.features.feature_rows` for a PyTorch model, an
ONNX graph's features output for an export): the distance is a Gaussian of the training films'
penultimate features with a shrunk (Ledoit-Wolf) covariance, its limit at a high quantile of
out-of-fold training distances, raised so that each validation copy stays inside it (Lee et al.,
NeurIPS 2018); the probe is a logistic regression on the multi-depth statistics telling the training
films (and their augmented and shifted copies) from outlier films, its limit a high quantile of the
held-out validation films' scores. `fit_site_check` fits a site's own check (`pneumo calibrate`).
Prediction never imports this module.

Example:
    >>> fit = fit_check(train_rows, width, val_rows, outlier_rows, sources)
    >>> fit.check.flags(fit.check.scores(rows))
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
from sklearn.covariance import LedoitWolf
from sklearn.linear_model import LogisticRegression

from pneumo.errors import PneumoError
from pneumo.inference.checks import FeatureCheck, SiteCheck, mahalanobis_distance
from pneumo.utils.progress import progress_bar

if TYPE_CHECKING:
    import torch

    from pneumo.inference.torch_backend import TorchModel

__all__ = ["COPY_QUANTILE", "PROBE_C", "PROBE_QUANTILE", "CheckFit", "fit_check", "fit_feature_check", "fit_site_check"]

# Inverse L2 strength of the probe over standardised statistics (strong: ~100 outlier films face
# ~2000 statistics) and the quantile of validation children's scores where it draws its limit
# (chosen with benchmarks/probe_sweep.py and benchmarks/bench_site.py).
PROBE_C = 3e-2
PROBE_QUANTILE = 0.995
# the distance's limit leaves at most 1% of every validation copy (unshifted or shifted) beyond it
COPY_QUANTILE = 0.99
# a site's own check (`fit_site_check`): the probe's strength, and the share of the site's films each limit passes
SITE_PROBE_C = 1e-2
SITE_QUANTILE = 0.995


def _gaussian(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and Ledoit-Wolf precision: the sample covariance of 256 features from a few
    thousand images (or a few hundred) is near-singular, and its plain inverse would blow
    up every direction the training images happen not to vary in."""
    fitted = LedoitWolf().fit(features)
    return fitted.location_, fitted.precision_


def _out_of_fold_distances(features: np.ndarray, folds: int) -> np.ndarray:
    """Each fold's distances under a Gaussian fitted to the other folds. In-sample distances are
    too small (a fitted point pulls the mean and covariance towards itself, badly so with 256
    features and a few hundred images): fitted on 200 images of an earlier bundled model, their
    99.5% quantile flagged 22-88% of 100 held-out ones (five draws), the out-of-fold one 0-3%."""
    fold = np.arange(len(features)) % folds
    held_out = np.empty(len(features))
    for k in range(folds):
        mean, precision = _gaussian(features[fold != k])
        held_out[fold == k] = mahalanobis_distance(features[fold == k], mean, precision)
    return held_out


def _probe(inliers: np.ndarray, outliers: np.ndarray, c: float = PROBE_C) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """Standardisation and logistic-regression weights telling outliers (1) from inliers (0), classes weighted equally."""
    x = np.vstack([inliers, outliers])
    center, scale = x.mean(axis=0), x.std(axis=0)
    scale = np.where(scale > 1e-8, scale, 1.0)
    y = np.r_[np.zeros(len(inliers)), np.ones(len(outliers))]
    fitted = LogisticRegression(C=c, class_weight="balanced", max_iter=5000).fit((x - center) / scale, y)
    return center, scale, fitted.coef_[0], float(fitted.intercept_[0])


def _probe_scores(rows: np.ndarray, center: np.ndarray, scale: np.ndarray, weight: np.ndarray, bias: float) -> np.ndarray:
    return ((rows - center) / scale) @ weight + bias


@dataclass
class CheckFit:
    """A fitted check with what was measured while fitting it (counts; intervals are the caller's)."""

    check: FeatureCheck
    val_flagged: int = 0  # validation films (held-out children) flagged, limits fitted on the other half
    n_val: int = 0
    outliers_caught: int = 0  # outlier films flagged by a probe fitted without their source
    n_outliers: int = 0
    n_sources: int = 0
    copy_flagged: dict[str, float] = field(default_factory=dict)  # share of each shifted validation copy flagged
    fault_flagged: dict[str, float] = field(default_factory=dict)  # share of validation films put in wrong way (a fault) flagged
    notes: list[str] = field(default_factory=list)


def _source_folds(groups: Sequence[str], folds: int, seed: int) -> list[np.ndarray]:
    names = np.array(sorted(set(groups)))
    np.random.default_rng(seed).shuffle(names)
    return [np.isin(np.asarray(groups), part) for part in np.array_split(names, min(folds, len(names)))]


def _distance_limit(
    train: np.ndarray, copies: Sequence[np.ndarray], mean: np.ndarray, precision: np.ndarray, quantile: float, folds: int
) -> float:
    """The distance's limit: the `quantile` of out-of-fold training distances, raised where needed so that
    at most 1 - COPY_QUANTILE of every validation copy (unshifted and shifted) is beyond it. The distance
    is for gross outliers (photographs, documents, noise), far beyond any copy; the probe is the fine judge."""
    limit = float(np.quantile(_out_of_fold_distances(train, folds), quantile))
    for rows in copies:
        limit = max(limit, float(np.quantile(mahalanobis_distance(rows, mean, precision), COPY_QUANTILE)))
    return limit


def fit_check(
    train: np.ndarray,
    width: int,
    val: np.ndarray | None = None,
    outliers: np.ndarray | None = None,
    outlier_sources: Sequence[str] | None = None,
    views: np.ndarray | None = None,
    shifted_val: dict[str, np.ndarray] | None = None,
    quantile: float = 0.995,
    probe_quantile: float = PROBE_QUANTILE,
    folds: int = 5,
    seed: int = 0,
    progress: bool = False,
    *,
    faults: np.ndarray | None = None,
    faults_val: dict[str, np.ndarray] | None = None,
) -> CheckFit:
    """Fit an input check from feature rows ([N, D]: `width` penultimate features, then the multi-depth statistics).

    Args:
        train: the rows of (a sample of) the films the model was fitted on.
        val: held-out films of the training distribution: the probe's limit is their `probe_quantile`;
            its false-alarm rate is measured on one half with the limit fitted on the other.
        outliers: the rows of films the model must not judge (never its training films), with each film's
            source in `outlier_sources` (films of one source are held out together when measuring how many
            of a new source's films the probe catches).
        views: rows of augmented and shifted copies of training films: the probe counts them as training-like
            too, so a film taken or framed a little differently is not "another site".
        shifted_val: the validation rows under each simulated shift (`pneumo.evaluation.robustness`): the
            distance's limit keeps each copy's false alarms at most 1 - COPY_QUANTILE, and the share of each
            copy the check flags is measured.
        quantile: share of training-like films the distance passes.
        faults: rows of training films put in wrong way (`pneumo.evaluation.robustness.fault_copies`:
            negative, turned, upside down): the probe counts them with the outlier films in every fit,
            but they are not counted among the outlier films caught.
        faults_val: the validation rows under each fault: the share of each the check flags is measured.
    """
    if len(train) < 4 * folds:
        raise PneumoError(f"fitting the input check needs at least {4 * folds} training images, got {len(train)}")
    if not 0.5 <= quantile < 1 or not 0.5 <= probe_quantile < 1:
        raise PneumoError(f"quantiles must be in [0.5, 1), got {quantile} and {probe_quantile}")
    train = np.asarray(train, dtype=np.float64)
    mean, precision = _gaussian(train[:, :width])
    copies = {"none": val} if val is not None else {}
    copies |= dict(shifted_val or {})
    limit = _distance_limit(train[:, :width], [rows[:, :width] for rows in copies.values()], mean, precision, quantile, folds)
    distance_only = FeatureCheck(mean, precision, limit)
    if val is None or outliers is None or len(outliers) < 2 * folds or len(val) < 20:
        why = "no outlier films were given" if outliers is None else "too few outlier or validation films"
        return CheckFit(distance_only, copy_flagged=_copy_flagged(distance_only, copies), notes=[f"distance check only: {why}"])
    val, outliers = np.asarray(val, dtype=np.float64), np.asarray(outliers, dtype=np.float64)
    sources = list(outlier_sources) if outlier_sources is not None else [str(i) for i in range(len(outliers))]
    inliers = (
        train[:, width:]
        if views is None or not len(views)
        else np.vstack([train[:, width:], np.asarray(views, dtype=np.float64)[:, width:]])
    )
    wrong_way = np.zeros((0, outliers.shape[1] - width)) if faults is None else np.asarray(faults, dtype=np.float64)[:, width:]
    center, scale, weight, bias = _probe(inliers, np.vstack([outliers[:, width:], wrong_way]))
    val_scores = _probe_scores(val[:, width:], center, scale, weight, bias)
    check = FeatureCheck(
        mean,
        precision,
        limit,
        center,
        scale,
        weight,
        bias,
        float(np.quantile(val_scores, probe_quantile)),
        outlier_rows=outliers[:, width:].astype(np.float32),
    )
    # false alarms on held-out children: the probe's limit from one half of validation, counted on the other
    half = np.random.default_rng(seed).permutation(len(val)) < len(val) // 2
    distance_flags = mahalanobis_distance(val[:, :width], mean, precision) > limit
    val_flagged = 0
    for fit_half in (half, ~half):
        cut = np.quantile(val_scores[fit_half], probe_quantile)
        val_flagged += int((distance_flags[~fit_half] | (val_scores[~fit_half] > cut)).sum())
    # outliers caught from sources the probe never saw
    caught = 0
    source_folds = _source_folds(sources, folds, seed)
    for held in progress_bar(source_folds, len(source_folds), "probe on unseen sources", progress):
        c, s, w, b = _probe(inliers, np.vstack([outliers[~held, width:], wrong_way]))
        cut = np.quantile(_probe_scores(val[:, width:], c, s, w, b), probe_quantile)
        held_scores = np.c_[
            mahalanobis_distance(outliers[held, :width], mean, precision), _probe_scores(outliers[held, width:], c, s, w, b)
        ]
        caught += int(((held_scores[:, 0] > limit) | (held_scores[:, 1] > cut)).sum())
    return CheckFit(
        check,
        val_flagged,
        len(val),
        caught,
        len(outliers),
        len(set(sources)),
        _copy_flagged(check, copies),
        _copy_flagged(check, faults_val or {}),
    )


def fit_feature_check(
    model: TorchModel,
    train_images: np.ndarray | torch.Tensor,
    val_images: np.ndarray | torch.Tensor | None = None,
    outlier_images: np.ndarray | None = None,
    outlier_sources: Sequence[str] | None = None,
    quantile: float = 0.995,
    probe_quantile: float = PROBE_QUANTILE,
    folds: int = 5,
    batch_size: int = 256,
    progress: bool = False,
    seed: int = 0,
    val_rows: np.ndarray | None = None,
    train_views: np.ndarray | torch.Tensor | None = None,
    shifted_val_rows: dict[str, np.ndarray] | None = None,
    train_faults: np.ndarray | None = None,
    val_faults: dict[str, np.ndarray] | None = None,
) -> CheckFit:
    """`fit_check` for a PyTorch model and uint8 [N, S, S] films: their rows from one tapped pass each.

    `val_rows`: the validation films' rows when a pass over them was just made (the end of a run), so
    they are not computed again; `train_views`: augmented and shifted copies of training films (images);
    `train_faults` and `val_faults`: training films put in wrong way, and validation films under each fault (images).
    """
    from pneumo.inference.features import feature_width
    from pneumo.inference.torch_backend import feature_rows

    if len(train_images) < 4 * folds:
        raise PneumoError(f"fitting the input check needs at least {4 * folds} training images, got {len(train_images)}")

    def rows(images: np.ndarray | torch.Tensor | None) -> np.ndarray | None:
        return None if images is None else feature_rows(model, images, batch_size, progress)[1]

    return fit_check(
        rows(train_images),
        feature_width(model.net),
        val_rows if val_rows is not None else rows(val_images),
        rows(outlier_images),
        outlier_sources,
        rows(train_views) if train_views is not None and len(train_views) else None,
        shifted_val_rows,
        quantile,
        probe_quantile,
        folds,
        seed,
        progress,
        faults=rows(train_faults),
        faults_val={name: rows(images) for name, images in (val_faults or {}).items()},
    )


def _copy_flagged(check: FeatureCheck, copies: dict[str, np.ndarray]) -> dict[str, float]:
    """The share of each validation copy the check flags (the unshifted one in-sample for the probe's limit)."""
    return {name: float(check.flags(check.scores(rows)).mean()) for name, rows in copies.items() if len(rows)}


def fit_site_check(check: FeatureCheck, site_rows: np.ndarray, quantile: float = SITE_QUANTILE, folds: int = 5) -> SiteCheck:
    """A site's own check from the feature rows of its unlabelled films: a Gaussian of their penultimate
    features and a probe telling them from the check's outlier films, each limit at `quantile` of the
    site films' out-of-fold scores (so the limit is not drawn on scores the films fitted themselves)."""
    if check.outlier_rows is None or not check.has_probe:
        raise PneumoError(
            "this model's input check keeps no outlier films' statistics, so a site's films cannot be told from them; refit its check with pneumo ensemble MODEL --out DIR"
        )
    width = len(check.mean)
    rows = np.asarray(site_rows, dtype=np.float64)
    penultimate, stats, outliers = rows[:, :width], rows[:, width : check.width], np.asarray(check.outlier_rows, dtype=np.float64)
    fold = np.arange(len(rows)) % folds
    distances, probe_scores = np.empty(len(rows)), np.empty(len(rows))
    for k in range(folds):
        inside = fold != k
        m, pr = _gaussian(penultimate[inside])
        distances[~inside] = mahalanobis_distance(penultimate[~inside], m, pr)
        probe_scores[~inside] = _probe_scores(stats[~inside], *_probe(stats[inside], outliers, SITE_PROBE_C))
    mean, precision = _gaussian(penultimate)
    center, scale, weight, bias = _probe(stats, outliers, SITE_PROBE_C)
    return SiteCheck(
        mean, precision, float(np.quantile(distances, quantile)), center, scale, weight, bias, float(np.quantile(probe_scores, quantile))
    )
