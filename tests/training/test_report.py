"""What a run reports: history columns, the validation report with its leak check, the operating
point chosen on validation, the saved model, the figures and the input check's log line.

A freshly initialised notebook network at 32 px on the small folder's real films stands in for a
trained one: each test checks how the report is put together, not how good the model is.
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

from pneumo.config import AugmentConfig, Config, load_config
from pneumo.evaluation.calibration import apply_temperature
from pneumo.inference.features import feature_width
from pneumo.inference.torch_backend import TorchModel, feature_rows, load_checkpoint
from pneumo.models import create_model
from pneumo.models.meta import CheckpointMeta
from pneumo.models.registry import model_spec
from pneumo.tasks import BINARY, PATHOGEN, pneumonia_probability
from pneumo.training.data import (
    TrainingData,
    decode_training_data,
    split_training_records,
)
from pneumo.training.report import (
    FEATURE_STATS_MIN_IMAGES,
    OperatingPoint,
    ValidationPass,
    epoch_metrics,
    inlier_views,
    input_check_line,
    operating_point,
    validation_report,
    validation_row,
    write_figures,
    write_model,
)

pytestmark = pytest.mark.slow  # fits whole models: the full suite runs them, the fast loop leaves them out

SIZE = 32


@pytest.fixture(scope="module")
def config(small_folder: Path) -> Config:
    return load_config("seed", [f"data={small_folder}", f"image_size={SIZE}", "epochs=1", "batch_size=16", "outliers=none"])


@pytest.fixture(scope="module")
def data(config: Config) -> TrainingData:
    """96 training and 24 validation films, real, decoded at 32 px."""
    train, val = split_training_records(config)
    return decode_training_data(config, train, val, torch.device("cpu"), False)


@pytest.fixture(scope="module")
def net() -> torch.nn.Module:
    torch.manual_seed(0)
    return create_model("seed_cnn", image_size=SIZE).eval()


@pytest.fixture(scope="module")
def meta() -> CheckpointMeta:
    spec = model_spec("seed_cnn")
    return CheckpointMeta(
        "seed_cnn", "binary", ["NORMAL", "PNEUMONIA"], num_outputs=1, image_size=SIZE, mean=spec.mean, std=spec.std, threshold=0.5
    )


@pytest.fixture(scope="module")
def point(net: torch.nn.Module, meta: CheckpointMeta, data: TrainingData) -> OperatingPoint:
    """Temperature fitted on validation, threshold by Youden's J, no shifted copies: the cheap path."""
    return operating_point(net, meta, data, calibration="val", threshold_method="youden", n_boot=20, seed=0, batch_size=64)


# --- history columns -----------------------------------------------------------------------------


def test_epoch_metrics_are_those_of_p_pneumonia_at_half() -> None:
    targets = np.array([0, 0, 1, 1, 1])
    probs = np.array([[0.9, 0.1], [0.4, 0.6], [0.3, 0.7], [0.6, 0.4], [0.2, 0.8]])
    row = epoch_metrics("train", targets, probs, BINARY)
    assert list(row) == ["train_accuracy", "train_precision", "train_recall", "train_roc_auc"]
    assert row["train_accuracy"] == pytest.approx(3 / 5) and row["train_precision"] == pytest.approx(2 / 3)
    assert row["train_recall"] == pytest.approx(2 / 3)
    assert row["train_roc_auc"] == pytest.approx(roc_auc_score(targets, probs[:, 1]))


def test_a_pathogen_models_history_counts_both_pneumonias_as_pneumonia_and_adds_three_class_accuracy() -> None:
    targets = np.array([0, 1, 2, 2])
    probs = np.array([[0.8, 0.1, 0.1], [0.1, 0.2, 0.7], [0.2, 0.1, 0.7], [0.6, 0.2, 0.2]])
    row = epoch_metrics("val", targets, probs, PATHOGEN)
    assert row["val_accuracy"] == pytest.approx(3 / 4)  # the bacterial film called viral is still pneumonia
    assert row["val_accuracy_3class"] == pytest.approx(2 / 4)
    assert row["val_recall"] == pytest.approx(2 / 3)


def test_the_validation_loss_is_the_cross_entropy_of_the_class_probabilities() -> None:
    row = validation_row(np.full((4, 2), 0.5), np.array([0, 1, 1, 0]), BINARY)
    assert row["val_loss"] == pytest.approx(math.log(2)) and "val_roc_auc" in row
    three = validation_row(np.full((3, 3), 1 / 3), np.array([0, 1, 2]), PATHOGEN)
    assert three["val_loss"] == pytest.approx(math.log(3))
    # a validation split of one class still has a loss; ROC AUC does not exist
    one = validation_row(np.array([[0.9, 0.1], [0.8, 0.2]]), np.array([0, 0]), BINARY)
    assert math.isfinite(one["val_loss"]) and math.isnan(one["val_roc_auc"])


# --- the validation report's leak check ----------------------------------------------------------


def test_the_leak_check_splits_validation_by_patients_seen_in_training(data: TrainingData) -> None:
    val = data.val[:8]
    seen_patient = val[0].patient_id
    train = [*data.train[:10], dataclasses.replace(data.train[10], patient_id=seen_patient)]
    probs = np.tile([0.3, 0.7], (len(val), 1))
    report = validation_report(val, probs, 0.5, BINARY, train, n_boot=10, seed=0)
    leak = report["leak"]
    n_seen = sum(r.patient_id == seen_patient for r in val)
    assert leak["patients_in_both"] == 1 and leak["val_images_of_patients_seen_in_train"] == n_seen
    assert leak["seen"]["n"] == n_seen and leak["unseen"]["n"] == len(val) - n_seen
    clean = validation_report(val, probs, 0.5, BINARY, data.train[:10], n_boot=10, seed=0)["leak"]
    assert clean["patients_in_both"] == 0 and clean["seen"] is None and clean["unseen"]["n"] == len(val)


# --- the operating point -------------------------------------------------------------------------


def test_the_operating_point_carries_its_temperature_and_threshold_into_the_metadata(point: OperatingPoint, meta: CheckpointMeta) -> None:
    chosen, report = point.meta, point.report
    assert chosen.threshold == report["threshold"] and 0 <= chosen.threshold <= 1
    assert chosen.temperature == report["calibration"]["temperature"] > 0 and report["calibration"]["method"] == "val"
    assert chosen.threshold_method == report["threshold_method"] == "youden" and chosen.logit_offset == 0.0
    assert chosen.val_metrics == {
        k: report[k] for k in ("accuracy", "precision", "recall", "specificity", "f1", "roc_auc", "pr_auc", "loss")
    }
    assert chosen.val_ci95 == report["ci95"] and chosen.calibration_prior == report["calibration_prior"] and chosen.created
    assert meta.threshold == 0.5 and meta.temperature == 1.0 and not meta.val_metrics  # the given metadata is not changed


def test_the_operating_point_reports_the_calibrated_probabilities_of_the_validation_films(
    point: OperatingPoint, net: torch.nn.Module, meta: CheckpointMeta, data: TrainingData
) -> None:
    raw, rows = feature_rows(TorchModel(net, meta), data.x_val)
    np.testing.assert_allclose(point.probability, pneumonia_probability(apply_temperature(raw, point.meta.temperature)), atol=1e-6)
    assert point.report["n"] == len(data.val) == len(point.probability)
    # the same pass tapped the feature rows the input check is fitted on
    assert point.val_rows is not None and point.val_rows.shape[0] == len(data.val) and point.val_rows.shape[1] > feature_width(net)
    np.testing.assert_allclose(point.val_rows, rows, rtol=1e-5, atol=1e-8)
    # no shifted copies were asked for: none are made or reported
    assert point.shifted_rows is None and point.report["shifted"] is None
    assert point.report["calibration"]["ece_shifted_before"] is None
    share = point.report["cam_frame_share"]
    assert math.isnan(share) or 0 <= share <= 1


def test_a_validation_pass_already_made_is_reused_not_made_again(net: torch.nn.Module, meta: CheckpointMeta, data: TrainingData) -> None:
    """Made-up probabilities that separate the classes perfectly: the report says so, which the untrained network could not."""
    y = data.y_val
    perfect = np.c_[1 - (0.1 + 0.8 * y), 0.1 + 0.8 * y]
    rows = np.zeros((len(y), feature_width(net)))
    done = ValidationPass(epoch=1, probabilities=perfect, rows=rows)
    point = operating_point(net, meta, data, calibration="none", threshold_method=0.5, n_boot=10, seed=0, done=done)
    assert point.report["roc_auc"] == 1.0 and point.report["accuracy"] == 1.0
    assert point.val_rows is rows and point.meta.temperature == 1.0 and point.meta.threshold == 0.5


# --- what is saved -------------------------------------------------------------------------------


def test_too_few_training_films_save_the_model_without_an_input_check(
    point: OperatingPoint, net: torch.nn.Module, data: TrainingData, tmp_path: Path
) -> None:
    assert data.n_train < FEATURE_STATS_MIN_IMAGES
    assert write_model(tmp_path / "model", net, point, data) is None
    assert sorted(p.name for p in (tmp_path / "model").iterdir()) == ["meta.json", "training_films.json", "weights.safetensors"]
    saved = load_checkpoint(tmp_path / "model").meta
    assert saved.threshold == point.meta.threshold and saved.temperature == point.meta.temperature
    films = json.loads((tmp_path / "model" / "training_films.json").read_text())
    assert len(films["train"]) == data.n_train and len(films["val"]) == len(data.val)
    assert "none (too few training images)" in input_check_line(None)


def test_the_figures_are_three_pictures(point: OperatingPoint, data: TrainingData, tmp_path: Path) -> None:
    write_figures(tmp_path, point, data, "patient split")
    names = ("roc.png", "confusion.png", "reliability.png")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(names)
    for name in names:
        content = (tmp_path / name).read_bytes()
        assert content.startswith(b"\x89PNG\r\n\x1a\n") and len(content) > 1000, name


def test_inlier_views_are_one_shifted_copy_per_film_and_one_augmented_copy_where_the_recipe_augments(data: TrainingData) -> None:
    films = data.x_train[:12]
    plain = inlier_views(films, None)
    assert plain.shape == (12, SIZE, SIZE) and plain.dtype == np.uint8
    assert not np.array_equal(plain, films.numpy())  # every film is under some shift
    np.testing.assert_array_equal(
        plain, inlier_views(films.numpy(), AugmentConfig())
    )  # augmentation off: the same; a tensor or an array alike
    augmented = inlier_views(films, AugmentConfig(rotate_deg=10, contrast=0.2))
    assert augmented.shape == (24, SIZE, SIZE) and augmented.dtype == np.uint8
    np.testing.assert_array_equal(augmented[12:], plain)  # the shifted copies come after the augmented ones
    np.testing.assert_array_equal(augmented, inlier_views(films, AugmentConfig(rotate_deg=10, contrast=0.2)))  # seeded
    assert not np.array_equal(augmented, inlier_views(films, AugmentConfig(rotate_deg=10, contrast=0.2), seed=1))


# --- the log line --------------------------------------------------------------------------------


def test_the_input_check_line_gives_rates_intervals_and_notes() -> None:
    measured = {"val_false_alarm_rate": 0.0123, "val_false_alarm_ci95": [0.0051, 0.0204], "outlier_catch_rate": 0.9516, "n_outliers": 124}
    assert input_check_line(measured) == (
        "input check: 1.2% of validation children flagged (95% CI 0.5%-2.0%), 95% of 124 outlier films from unseen sources caught"
    )
    assert input_check_line({"notes": ["no outlier films were given", "probe skipped"]}) == (
        "input check: the feature distance only (no outlier films were given; probe skipped)"
    )
    assert input_check_line({}) == input_check_line(None) == "input check: none (too few training images)"
