"""The input check on real data: the bundled model's features, the fitted distance and probe, their file, and what they leave untouched."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw
from safetensors.numpy import save_file
from sklearn.datasets import load_sample_images

from pneumo.data.layout import discover
from pneumo.data.preprocess import load_image, resize_image
from pneumo.data.split import split_records
from pneumo.errors import PneumoError
from pneumo.evaluation.robustness import apply_shift
from pneumo.inference.checks import FeatureCheck
from pneumo.inference.features import FEATURES, feature_width, load_feature_check, save_feature_check
from pneumo.inference.torch_backend import feature_rows
from pneumo.inference.fitting import CheckFit, fit_feature_check, fit_site_check
from pneumo.inference.predict import bundled_model_dir, load_model
from pneumo.inference.torch_backend import TorchModel
from pneumo.models import create_model
from pneumo.models.checkpoint import copy_checkpoint
from pneumo.models.meta import CheckpointMeta
from pneumo.training.data import outlier_source
from pneumo.utils.walk import image_files
from tests.conftest import BUNDLED_SIZE

pytestmark = pytest.mark.slow  # fits input checks on hundreds of real films: the full suite runs them, the fast loop leaves them out


@pytest.fixture(scope="module")
def model() -> TorchModel:
    return load_model(None, backend="torch")


@pytest.fixture(scope="module")
def split_images(shared_data: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """300 films from the training part of the bundled model's patient split, and 200 + 100 from its held-out part."""
    train, val = split_records(discover(shared_data / "chest_xray").split("train"), 0.2, seed=0, by="patient")
    rng = np.random.default_rng(0)
    fit = [train[i] for i in rng.choice(len(train), 300, replace=False)]
    held = [val[i] for i in rng.choice(len(val), 300, replace=False)]
    images = [np.stack([load_image(r.path, BUNDLED_SIZE) for r in recs]) for recs in (fit, held[:200], held[200:])]
    return images[0], images[1], images[2]


@pytest.fixture(scope="module")
def adult(shared_data: Path) -> tuple[np.ndarray, list[str]]:
    paths = image_files(shared_data / "ood" / "adult_other_hospitals")
    return np.stack([load_image(p, BUNDLED_SIZE) for p in paths]), [outlier_source(p) for p in paths]


@pytest.fixture(scope="module")
def seen_sources(adult: tuple[np.ndarray, list[str]]) -> np.ndarray:
    """Half the adult films' sources (every other one, sorted): the probe is fitted on these only."""
    sources = sorted(set(adult[1]))
    return np.isin(adult[1], sources[::2])


@pytest.fixture(scope="module")
def fit(model: TorchModel, split_images: tuple, adult: tuple, seen_sources: np.ndarray) -> CheckFit:
    images, sources = adult
    return fit_feature_check(model, split_images[0], split_images[1], images[seen_sources], [s for s, k in zip(sources, seen_sources) if k])


def test_check_shapes(model: TorchModel, fit: CheckFit) -> None:
    check = fit.check
    width = feature_width(model.net)  # 256 per ResNet-18 at half width; an ensemble's side by side
    assert width % 256 == 0 and check.mean.shape == (width,) and check.precision.shape == (width, width)
    assert check.has_probe and check.width > width and check.distance_limit > 0 and np.isfinite(check.probe_limit)
    assert np.allclose(check.precision, check.precision.T, atol=1e-4)
    assert fit.n_val == 200 and 0 < fit.n_outliers < 124 and fit.outliers_caught >= 0.8 * fit.n_outliers


def test_held_out_children_mostly_pass(model: TorchModel, fit: CheckFit, split_images: tuple) -> None:
    _, scores = replace(model, check=fit.check).probabilities_and_scores(split_images[2])
    flagged = fit.check.flags(scores)
    assert flagged.sum() <= 6, f"{flagged.sum()} of 100 held-out children's films flagged"


def test_adult_films_from_unseen_sources_are_flagged(model: TorchModel, fit: CheckFit, adult: tuple, seen_sources: np.ndarray) -> None:
    _, scores = replace(model, check=fit.check).probabilities_and_scores(adult[0][~seen_sources])
    flagged = fit.check.flags(scores)
    assert flagged.mean() >= 0.8, f"only {flagged.sum()} of {len(flagged)} adult films from sources the probe never saw flagged"
    assert (scores[:, 1] > fit.check.probe_limit).mean() > (scores[:, 0] > fit.check.distance_limit).mean()  # the probe does the work


def _document() -> np.ndarray:
    page = Image.new("L", (850, 1100), 255)
    draw = ImageDraw.Draw(page)
    for y in range(100, 1000, 28):
        draw.text((80, y), "the quick brown fox jumps over the lazy dog " * 2, fill=0, font_size=18)
    return resize_image(np.asarray(page), BUNDLED_SIZE)


def test_non_xrays_are_flagged(model: TorchModel, fit: CheckFit, split_images: tuple) -> None:
    noise = np.random.default_rng(1).integers(0, 256, (1, BUNDLED_SIZE, BUNDLED_SIZE), dtype=np.uint8)
    photo = resize_image(np.asarray(Image.fromarray(load_sample_images().images[1]).convert("L")), BUNDLED_SIZE)[None]
    x = np.concatenate([noise, photo, _document()[None], 255 - split_images[2][:2]])
    _, scores = replace(model, check=fit.check).probabilities_and_scores(x)
    assert fit.check.flags(scores).all()
    assert all(fit.check.warnings(row) for row in scores)


def test_one_pass_gives_the_models_probabilities(model: TorchModel, fit: CheckFit, split_images: tuple) -> None:
    x = split_images[2][:16]
    checked = replace(model, check=fit.check)
    probs, scores = checked.probabilities_and_scores(x, batch_size=5)
    np.testing.assert_allclose(probs, model.class_probabilities(x), atol=1e-6)
    np.testing.assert_allclose(scores, checked.probabilities_and_scores(x, batch_size=16)[1], rtol=1e-5)
    assert scores.shape == (16, 4) and scores.dtype == np.float64 and np.isnan(scores[:, 2:]).all()  # no site yet
    rows = feature_rows(model, x)[1]
    assert rows.shape == (16, fit.check.width)


def test_the_distance_limit_keeps_every_shifted_copy_inside_it(model: TorchModel, split_images: tuple) -> None:
    train, val = split_images[0][:120], split_images[1][:100]
    noisy = feature_rows(model, apply_shift(val, "noise (sigma 0.05)"))[1]
    plain = fit_feature_check(model, train, val)
    shifted = fit_feature_check(model, train, val, shifted_val_rows={"noise (sigma 0.05)": noisy})
    assert shifted.check.distance_limit >= plain.check.distance_limit
    flagged = shifted.check.flags(shifted.check.scores(noisy)).mean()
    assert (
        flagged <= 0.01
        and shifted.copy_flagged["noise (sigma 0.05)"] == flagged
        and set(shifted.copy_flagged) == {"none", "noise (sigma 0.05)"}
    )


def test_a_site_check_accepts_the_sites_children_and_not_adults_from_unseen_sources(
    model: TorchModel, fit: CheckFit, split_images: tuple, adult: tuple, seen_sources: np.ndarray
) -> None:
    site = feature_rows(model, apply_shift(split_images[2], "blur (sigma 1% of side)"))[1]  # 100 children of a blurrier site
    assert fit.check.outlier_rows is not None and len(fit.check.outlier_rows) == seen_sources.sum()
    widened = fit.check.with_site(fit_site_check(fit.check, site))
    assert widened.flags(widened.scores(site)).mean() <= 0.01
    unseen = feature_rows(model, adult[0][~seen_sources])[1]
    assert widened.flags(widened.scores(unseen)).mean() >= 0.8  # the site check never saw these sources either
    with pytest.raises(PneumoError, match="keeps no outlier films"):
        replace(fit.check, outlier_rows=None).with_site(fit_site_check(replace(fit.check, outlier_rows=None), site))


def test_features_file_round_trips(tmp_path: Path, fit: CheckFit) -> None:
    folder = copy_checkpoint(bundled_model_dir(), tmp_path / "model")
    assert load_feature_check(folder) is not None  # the bundled model's check comes along
    (folder / FEATURES).unlink()
    assert load_feature_check(folder) is None
    path = save_feature_check(fit.check, folder)
    loaded = load_feature_check(folder)
    assert path == folder / FEATURES and loaded is not None and loaded.has_probe
    for key, value in fit.check.arrays().items():
        np.testing.assert_array_equal(loaded.arrays()[key], value)
    assert load_feature_check(tmp_path) is not None  # a run folder holding model/ works too

    shutil.copy(path, tmp_path / "good")
    path.write_bytes((tmp_path / "good").read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(PneumoError, match="damaged"):
        load_feature_check(folder)

    shutil.copy(tmp_path / "good", path)
    meta = json.loads((folder / "meta.json").read_text())
    (folder / "meta.json").write_text(json.dumps({**meta, "weights_sha256": "0" * 64}))
    with pytest.raises(PneumoError, match="other weights"):
        load_feature_check(folder)


def test_a_distance_only_file_still_loads(tmp_path: Path, fit: CheckFit) -> None:
    folder = copy_checkpoint(bundled_model_dir(), tmp_path)
    arrays = {k: v for k, v in fit.check.arrays().items() if not k.startswith("probe_") and k != "outlier_rows"}
    sha = json.loads((folder / "meta.json").read_text())["weights_sha256"]
    save_file(arrays, str(folder / FEATURES), metadata={"format": "pneumo-feature-stats/1", "weights_sha256": sha})
    loaded = load_feature_check(folder)
    assert loaded is not None and not loaded.has_probe
    scores = loaded.scores(np.zeros((2, fit.check.width)))
    assert np.isnan(scores[:, 1]).all() and np.isfinite(scores[:, 0]).all()


def test_damaged_checks_are_refused(fit: CheckFit) -> None:
    arrays = fit.check.arrays()
    with pytest.raises(PneumoError, match="shapes"):
        FeatureCheck.from_arrays({**arrays, "precision": arrays["precision"][:10]}, "here")
    with pytest.raises(PneumoError, match="non-finite"):
        FeatureCheck.from_arrays({**arrays, "mean": arrays["mean"] * np.nan}, "here")
    with pytest.raises(PneumoError, match="lacks probe_limit"):
        FeatureCheck.from_arrays({k: v for k, v in arrays.items() if k != "probe_limit"}, "here")
    with pytest.raises(PneumoError, match="non-positive"):
        FeatureCheck.from_arrays({**arrays, "probe_scale": arrays["probe_scale"] * 0}, "here")
    with pytest.raises(PneumoError, match="another model"):
        fit.check.scores(np.zeros((2, 10)))


def test_model_is_left_as_it_was(split_images: tuple) -> None:
    model = load_model(None, backend="torch")
    model.net.train()  # even a model left in training mode: features come from eval mode, and it stays in training mode
    before = {k: v.clone() for k, v in model.net.state_dict().items()}
    hooks = [(dict(m._forward_pre_hooks), dict(m._forward_hooks)) for m in model.net.modules()]  # its own: a content crop's
    fitted = fit_feature_check(model, split_images[0][:40])
    assert not fitted.check.has_probe and fitted.notes  # no outlier films: the distance alone, and it says so
    replace(model, check=fitted.check).probabilities_and_scores(split_images[2][:4])
    assert model.net.training
    assert all(torch.equal(before[k], v) for k, v in model.net.state_dict().items())
    assert [(dict(m._forward_pre_hooks), dict(m._forward_hooks)) for m in model.net.modules()] == hooks


def test_seed_cnn_features_and_refitting_guard(split_images: tuple, fit: CheckFit) -> None:
    net = create_model("seed_cnn", image_size=64).eval()
    meta = CheckpointMeta("seed_cnn", "binary", ["NORMAL", "PNEUMONIA"], num_outputs=1, image_size=64, mean=0.0, std=1.0, threshold=0.5)
    small = TorchModel(net, meta)
    x = np.stack([resize_image(image, 64) for image in split_images[0][:40]])
    seed_fit = fit_feature_check(small, x)
    assert seed_fit.check.mean.shape == (64,)
    assert feature_rows(small, x[:2])[1].shape[1] > 64  # multi-depth statistics follow the penultimate features
    with pytest.raises(PneumoError, match="another model"):
        replace(small, check=fit.check).probabilities_and_scores(x[:2])
    with pytest.raises(PneumoError, match="at least"):
        fit_feature_check(small, x[:5])


def test_saving_a_check_seals_it_into_the_metadata(tmp_path: Path) -> None:
    """A newly trained folder (no check yet) and a copied one (a check already recorded) both end with
    meta.json recording the new file's checksum, and load; an edited meta.json is refused before any write."""
    from pneumo.models.checkpoint import read_meta, save_checkpoint
    from pneumo.utils.hashing import sha256_file

    net = create_model("seed_cnn", image_size=64).eval()
    meta = CheckpointMeta("seed_cnn", "binary", ["NORMAL", "PNEUMONIA"], num_outputs=1, image_size=64, mean=0.0, std=1.0, threshold=0.5)
    trained = save_checkpoint(tmp_path / "trained", net, meta)
    assert read_meta(trained).features_sha256 == ""
    x = np.random.default_rng(0).integers(0, 256, (40, 64, 64), dtype=np.uint8)
    check = fit_feature_check(TorchModel(net, meta), x).check
    save_feature_check(check, trained)
    assert json.loads((trained / "meta.json").read_text())["features_sha256"] == sha256_file(trained / FEATURES)
    loaded = TorchModel.load(trained).with_feature_check()
    assert loaded.check is not None and np.isfinite(loaded.class_probabilities(x[:2])).all()

    copied = copy_checkpoint(bundled_model_dir(), tmp_path / "copied")
    before = sha256_file(copied / FEATURES)
    bundled = load_feature_check(copied)
    assert bundled is not None
    save_feature_check(replace(bundled, distance_limit=bundled.distance_limit * 2), copied)
    recorded = read_meta(copied).features_sha256
    assert recorded == sha256_file(copied / FEATURES) != before
    # (what read_checkpoint checks before loading; the seed_cnn folder above loaded whole)

    values = json.loads((copied / "meta.json").read_text())
    (copied / "meta.json").write_text(json.dumps({**values, "threshold": 0.1}))
    written = (copied / FEATURES).read_bytes()
    with pytest.raises(PneumoError, match="edited"):
        save_feature_check(bundled, copied)
    assert (copied / FEATURES).read_bytes() == written
