"""pneumo.inference.fitting: fitting the input check from feature rows, on synthetic rows whose truth is
known (a Gaussian of inliers, outliers shifted in the multi-depth statistics), plus one real case.

`tests/inference/test_features.py` runs the fit on the bundled model's real features end to end (the
check's shapes, what it flags, the site check on real films, the file); these tests hold the fitting
functions' own contract: their refusals, the distance-only fallback and its note, where each limit is
drawn, what is counted in a `CheckFit`, determinism, and `fit_feature_check`'s reuse of given rows.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from pneumo.data.preprocess import load_image
from pneumo.errors import PneumoError
from pneumo.inference.checks import FeatureCheck, SiteCheck, mahalanobis_distance
from pneumo.inference.fitting import (
    COPY_QUANTILE,
    CheckFit,
    fit_check,
    fit_feature_check,
    fit_site_check,
)
from pneumo.inference.torch_backend import TorchModel, feature_rows
from pneumo.models import create_model
from pneumo.models.meta import CheckpointMeta
from tests.conftest import pick

pytestmark = pytest.mark.slow  # whole-network passes over many cases: the full suite runs them, the fast loop leaves them out

P, Q = 6, 8  # penultimate features, multi-depth statistics


def rows(n: int, seed: int, stats_shift: float = 0.0, features_shift: float = 0.0, scale: float = 1.0) -> np.ndarray:
    """[n, P + Q] rows: a standard Gaussian, shifted (in the statistics or the features) or widened."""
    x = np.random.default_rng(seed).normal(size=(n, P + Q)) * scale
    x[:, :P] += features_shift
    x[:, P:] += stats_shift
    return x


@pytest.fixture(scope="module")
def data() -> dict[str, np.ndarray]:
    return {"train": rows(200, 0), "val": rows(120, 1), "outliers": rows(60, 2, stats_shift=2.5), "fresh": rows(400, 3)}


@pytest.fixture(scope="module")
def sources() -> list[str]:
    return [f"hospital{i % 6}" for i in range(60)]


@pytest.fixture(scope="module")
def full(data: dict[str, np.ndarray], sources: list[str]) -> CheckFit:
    return fit_check(data["train"], P, data["val"], data["outliers"], sources)


def test_too_few_training_rows_are_refused(data: dict[str, np.ndarray]) -> None:
    with pytest.raises(PneumoError, match="needs at least 20 training images, got 19"):
        fit_check(data["train"][:19], P)
    with pytest.raises(PneumoError, match="needs at least 40 training images, got 39"):
        fit_check(data["train"][:39], P, folds=10)
    assert fit_check(data["train"][:20], P).check.mean.shape == (P,)  # exactly enough is enough


@pytest.mark.parametrize("quantile, probe_quantile", [(0.4, 0.995), (1.0, 0.995), (0.99, 1.0), (0.99, 0.3), (float("nan"), 0.99)])
def test_quantiles_outside_half_to_one_are_refused(data: dict[str, np.ndarray], quantile: float, probe_quantile: float) -> None:
    with pytest.raises(PneumoError, match=r"quantiles must be in \[0\.5, 1\)"):
        fit_check(data["train"], P, quantile=quantile, probe_quantile=probe_quantile)


def test_without_outlier_films_the_check_is_the_distance_alone_and_says_why(data: dict[str, np.ndarray]) -> None:
    alone = fit_check(data["train"], P)
    assert not alone.check.has_probe and alone.check.width == P and alone.notes == ["distance check only: no outlier films were given"]
    assert (alone.n_val, alone.n_outliers, alone.outliers_caught) == (0, 0, 0) and alone.copy_flagged == {}
    few = fit_check(data["train"], P, data["val"], data["outliers"][:9])  # fewer than 2 * folds outliers
    assert not few.check.has_probe and few.notes == ["distance check only: too few outlier or validation films"]
    small_val = fit_check(data["train"], P, data["val"][:19], data["outliers"])
    assert not small_val.check.has_probe and "too few" in small_val.notes[0]
    assert set(small_val.copy_flagged) == {"none"}  # the validation films still count as a copy for the distance


def test_the_gaussian_is_the_training_features_mean_and_a_shrunk_precision(data: dict[str, np.ndarray]) -> None:
    check = fit_check(data["train"], P).check
    np.testing.assert_allclose(check.mean, data["train"][:, :P].mean(axis=0), atol=1e-12)
    assert check.precision.shape == (P, P) and np.allclose(check.precision, check.precision.T)
    assert np.linalg.eigvalsh(check.precision).min() > 0  # positive definite: every distance is real


def test_the_distance_limit_passes_new_inliers_and_refuses_far_rows(data: dict[str, np.ndarray]) -> None:
    check = fit_check(data["train"], P, quantile=0.99).check
    fresh = check.flags(check.scores(data["fresh"]))
    assert fresh.mean() <= 0.05, f"{fresh.mean():.1%} of new inlier rows flagged"
    far = check.flags(check.scores(rows(50, 4, features_shift=6.0)))
    assert far.all()
    looser = fit_check(data["train"], P, quantile=0.999).check
    assert looser.distance_limit >= check.distance_limit  # a higher quantile, a limit no lower


def test_the_distance_limit_rises_to_keep_each_shifted_copy_inside(data: dict[str, np.ndarray]) -> None:
    wide = rows(200, 5, scale=1.6)  # a validation copy the training rows never looked like
    plain = fit_check(data["train"], P, data["val"])
    shifted = fit_check(data["train"], P, data["val"], shifted_val={"wider": wide})
    assert shifted.check.distance_limit > plain.check.distance_limit
    beyond = mahalanobis_distance(wide[:, :P], shifted.check.mean, shifted.check.precision) > shifted.check.distance_limit
    assert beyond.mean() <= 1 - COPY_QUANTILE + 1e-9
    assert set(shifted.copy_flagged) == {"none", "wider"} and shifted.copy_flagged["wider"] == pytest.approx(beyond.mean())


def test_the_probe_tells_outliers_from_inliers(full: CheckFit, data: dict[str, np.ndarray]) -> None:
    check = full.check
    assert check.has_probe and check.width == P + Q and not full.notes
    assert check.probe_center.shape == check.probe_scale.shape == check.probe_weight.shape == (Q,) and (check.probe_scale > 0).all()
    new_outliers = rows(100, 6, stats_shift=2.5)  # never seen by the fit
    assert check.flags(check.scores(new_outliers)).mean() >= 0.9
    assert check.flags(check.scores(data["fresh"])).mean() <= 0.05
    np.testing.assert_array_equal(check.outlier_rows, data["outliers"][:, P:].astype(np.float32))  # kept for a later site check


def test_the_probe_limit_is_drawn_on_the_validation_films(full: CheckFit, data: dict[str, np.ndarray]) -> None:
    val_scores = full.check.scores(data["val"])[:, 1]
    assert full.check.probe_limit == pytest.approx(np.quantile(val_scores, 0.995))
    assert (val_scores > full.check.probe_limit).sum() <= 1
    strict = fit_check(data["train"], P, data["val"], data["outliers"], probe_quantile=0.9).check
    assert (strict.scores(data["val"])[:, 1] > strict.probe_limit).mean() == pytest.approx(0.1, abs=1 / len(data["val"]))


def test_what_the_fit_measured_is_counted(full: CheckFit, sources: list[str]) -> None:
    assert (full.n_val, full.n_outliers, full.n_sources) == (120, 60, 6)
    assert 0 <= full.val_flagged <= 6  # held-out halves of inliers: few false alarms
    assert full.outliers_caught >= 0.9 * 60  # outliers of sources the probe was fitted without
    assert set(full.copy_flagged) == {"none"} and 0 <= full.copy_flagged["none"] <= 0.05


def test_the_probe_reads_only_the_statistics_and_the_distance_only_the_features(data: dict[str, np.ndarray]) -> None:
    """Outliers that differ only in the penultimate features teach the probe nothing; the distance catches them."""
    feature_outliers = rows(60, 7, features_shift=6.0)
    fit = fit_check(data["train"], P, data["val"], feature_outliers)
    scores = fit.check.scores(rows(50, 8, features_shift=6.0))
    assert (scores[:, 0] > fit.check.distance_limit).all()
    assert (scores[:, 1] > fit.check.probe_limit).mean() <= 0.2


def test_views_count_as_training_like_for_the_probe(data: dict[str, np.ndarray]) -> None:
    """Copies that share half the outliers' shift (in half the statistics): as inliers, they turn the probe
    towards the other half, and such copies stop being flagged while the outliers still are."""

    def half_shifted(n: int, seed: int) -> np.ndarray:
        x = rows(n, seed)
        x[:, P : P + Q // 2] += 2.5
        return x

    views = half_shifted(200, 9)
    without = fit_check(data["train"], P, data["val"], data["outliers"]).check
    with_views = fit_check(data["train"], P, data["val"], data["outliers"], views=views).check
    copies, outliers = half_shifted(200, 10), rows(100, 11, stats_shift=2.5)

    def flagged(check: FeatureCheck, x: np.ndarray) -> float:
        return float((check.scores(x)[:, 1] > check.probe_limit).mean())

    assert flagged(with_views, copies) <= 0.1 < flagged(without, copies)
    assert flagged(with_views, outliers) >= 0.8
    same = fit_check(data["train"], P, data["val"], data["outliers"], views=views[:0]).check  # empty views: none
    np.testing.assert_array_equal(same.probe_weight, without.probe_weight)


def test_faults_teach_the_probe_but_are_not_counted_as_outlier_films(data: dict[str, np.ndarray], sources: list[str]) -> None:
    """Rows of films put in wrong way, shifted elsewhere in the statistics than the outlier films: without them
    the probe passes such rows; with them it refuses fresh ones; the outlier films' count is theirs alone."""

    def wrong_way(n: int, seed: int) -> np.ndarray:
        x = rows(n, seed)
        x[:, P + Q // 2 :] -= 6.0  # the other half of the statistics, the other direction
        return x

    without = fit_check(data["train"], P, data["val"], data["outliers"], sources)
    with_faults = fit_check(
        data["train"], P, data["val"], data["outliers"], sources, faults=wrong_way(100, 12), faults_val={"turned": wrong_way(200, 13)}
    )
    fresh = wrong_way(200, 14)
    assert with_faults.check.flags(with_faults.check.scores(fresh)).mean() >= 0.9 > without.check.flags(without.check.scores(fresh)).mean()
    assert with_faults.fault_flagged["turned"] >= 0.9 and without.fault_flagged == {}
    assert with_faults.n_outliers == without.n_outliers == len(data["outliers"]) and with_faults.n_sources == without.n_sources
    assert with_faults.val_flagged <= 0.05 * with_faults.n_val


def test_the_same_rows_and_seed_give_the_same_check(full: CheckFit, data: dict[str, np.ndarray], sources: list[str]) -> None:
    again = fit_check(data["train"], P, data["val"], data["outliers"], sources)
    for name, value in full.check.arrays().items():
        np.testing.assert_array_equal(again.check.arrays()[name], value)
    assert (again.val_flagged, again.outliers_caught) == (full.val_flagged, full.outliers_caught)
    other = fit_check(data["train"], P, data["val"], data["outliers"], sources, seed=1)
    np.testing.assert_array_equal(other.check.probe_weight, full.check.probe_weight)  # the seed draws only the measuring splits


def test_outliers_without_sources_are_each_their_own_source(data: dict[str, np.ndarray]) -> None:
    fit = fit_check(data["train"], P, data["val"], data["outliers"])
    assert fit.n_sources == 60 and fit.n_outliers == 60


def test_a_site_check_is_fitted_on_the_sites_own_films(full: CheckFit) -> None:
    site = rows(150, 11, features_shift=1.5, stats_shift=0.8)  # a site whose films the model's own check often refuses
    own = full.check
    assert own.own_flags(own.scores(site)).mean() > 0.3
    fitted = fit_site_check(own, site)
    assert isinstance(fitted, SiteCheck) and fitted.mean.shape == (P,) and fitted.precision.shape == (P, P)
    assert fitted.probe_weight.shape == (Q,) and np.isfinite([fitted.distance_limit, fitted.probe_limit]).all()
    widened = own.with_site(fitted)
    new_site = rows(150, 12, features_shift=1.5, stats_shift=0.8)
    assert widened.flags(widened.scores(new_site)).mean() <= 0.1  # the site's own kind of film is judged
    assert widened.flags(widened.scores(rows(100, 13, stats_shift=2.5))).mean() >= 0.9  # outliers stay refused


def test_a_site_check_needs_a_check_with_a_probe_and_its_outlier_rows(data: dict[str, np.ndarray], full: CheckFit) -> None:
    distance_only = fit_check(data["train"], P).check
    with pytest.raises(PneumoError, match="keeps no outlier films' statistics"):
        fit_site_check(distance_only, data["val"])
    scoring_only = FeatureCheck.from_arrays(full.check.arrays(scoring_only=True), "an export")
    with pytest.raises(PneumoError, match="keeps no outlier films' statistics.*pneumo ensemble"):
        fit_site_check(scoring_only, data["val"])


def test_fit_feature_check_reuses_given_validation_rows(shared_data: Path) -> None:
    """The real case: an untrained seed_cnn at 64 px on real films; rows given for validation are the rows
    a pass would give, and the fit is the same either way."""
    torch.manual_seed(0)
    net = create_model("seed_cnn", image_size=64).eval()
    meta = CheckpointMeta("seed_cnn", "binary", ["NORMAL", "PNEUMONIA"], 1, 64, 0.5, 0.25, 0.5)
    model = TorchModel(net, meta)
    films = np.stack([load_image(f, 64) for f in pick("NORMAL", 24, offset=4) + pick("PNEUMONIA", 24, offset=4)])
    train, val = films[::2], films[1::2]
    by_images = fit_feature_check(model, train, val)
    by_rows = fit_feature_check(model, train, val_rows=feature_rows(model, val)[1])
    assert not by_images.check.has_probe and by_images.check.mean.shape == (64,)
    for name, value in by_images.check.arrays().items():
        np.testing.assert_allclose(by_rows.check.arrays()[name], value, rtol=1e-5, atol=1e-6)
    assert set(by_rows.copy_flagged) == {"none"}
    with pytest.raises(PneumoError, match="needs at least 40 training images, got 24"):
        fit_feature_check(model, train, folds=10)  # refused before any forward pass
