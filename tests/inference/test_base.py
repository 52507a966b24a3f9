"""pneumo.inference.base: what a prediction is (its dict, its verdict), what a batch of them carries,
and the `Model` contract every backend shares (the label at the stored threshold, refusals of damaged numbers)."""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pytest

from pneumo.errors import PneumoError
from pneumo.inference.base import (
    NO_VERDICT,
    Model,
    Prediction,
    PredictionBatch,
    non_finite_error,
)
from pneumo.models.meta import CheckpointMeta
from pneumo.tasks import PATHOGEN_CLASSES


class FixedModel(Model):
    """A model whose probabilities are given: the base class's own logic, with no network behind it."""

    def __init__(self, meta: CheckpointMeta, probs: np.ndarray) -> None:
        self.meta = meta
        self.probs = np.asarray(probs, dtype=np.float32)

    def class_probabilities(self, images: np.ndarray, batch_size: int = 256, progress: bool = False) -> np.ndarray:
        return self.probs[: len(images)]


def binary_meta(threshold: float = 0.5, image_size: int = 64) -> CheckpointMeta:
    return CheckpointMeta("seed_cnn", "binary", ["NORMAL", "PNEUMONIA"], 1, image_size, 0.0, 1.0, threshold)


def pathogen_meta() -> CheckpointMeta:
    return CheckpointMeta("seed_cnn", "pathogen", list(PATHOGEN_CLASSES), 3, 64, 0.0, 1.0, 0.4)


def prediction(**changes: object) -> Prediction:
    values: dict = {
        "path": "a.jpeg",
        "probability": 0.7,
        "label": "PNEUMONIA",
        "threshold": 0.5,
        "class_probabilities": {"NORMAL": 0.3, "PNEUMONIA": 0.7},
    }
    values.update(changes)
    return Prediction(**values)


def test_a_prediction_as_a_dict_has_every_field_and_survives_json() -> None:
    p = prediction(warnings=("first", "second"), abstain=True, label=None, abstain_reason="first")
    d = p.to_dict()
    assert list(d) == [f.name for f in dataclasses.fields(Prediction)]
    assert d["warnings"] == ["first", "second"] and isinstance(d["warnings"], list)  # a list, as JSON has it
    assert d["class_probabilities"] == p.class_probabilities and d["class_probabilities"] is not p.class_probabilities
    assert json.loads(json.dumps(d)) == d


def test_a_prediction_cannot_be_changed_after_the_fact() -> None:
    """Frozen: a label once given at a threshold cannot drift from it."""
    p = prediction()
    with pytest.raises(dataclasses.FrozenInstanceError):
        p.label = "NORMAL"  # type: ignore[misc]


def test_the_verdict_is_the_label_or_the_words_for_none() -> None:
    assert prediction().verdict == "PNEUMONIA"
    assert prediction(label="NORMAL").verdict == "NORMAL"
    held = prediction(label=None, abstain=True, abstain_reason="why")
    assert held.verdict == NO_VERDICT and "no verdict" in held.verdict


def test_a_batch_is_a_list_that_also_remembers_the_skipped_files() -> None:
    a, b = prediction(path="a"), prediction(path="b")
    batch = PredictionBatch([a, b], skipped=[("c", "unreadable")])
    assert list(batch) == [a, b] and len(batch) == 2 and batch.skipped == [("c", "unreadable")]
    batch += [prediction(path="d")]  # what `classify` does per chunk: the skipped files stay
    assert [p.path for p in batch] == ["a", "b", "d"] and batch.skipped == [("c", "unreadable")]
    empty, other = PredictionBatch(), PredictionBatch()
    empty.skipped.append(("x", "why"))
    assert other.skipped == [] and not empty  # each batch has its own list, and no prediction is falsy


@pytest.mark.parametrize("threshold", [0.0, 0.3, 0.5, 0.65, 1.0])
def test_the_label_is_taken_at_the_models_threshold_inclusive(threshold: float) -> None:
    model = FixedModel(binary_meta(threshold), np.zeros((0, 2)))
    assert model.label(threshold) == "PNEUMONIA"  # at the threshold: pneumonia
    if threshold > 0:
        assert model.label(math.nextafter(threshold, -1)) == "NORMAL"
        assert model.label(0.0) == "NORMAL"
    assert model.label(1.0) == "PNEUMONIA"
    assert model.label(np.float32(1.0)) == "PNEUMONIA"  # numpy scalars are probabilities too


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_a_non_finite_probability_gets_no_label(bad: float) -> None:
    model = FixedModel(binary_meta(), np.zeros((0, 2)))
    with pytest.raises(PneumoError, match=r"non-finite probability for film\.png .*damaged"):
        model.label(bad, "film.png")


@pytest.mark.parametrize("bad", [-1e-6, 1.000001, 2.0, -3.0])
def test_a_probability_outside_zero_one_gets_no_label(bad: float) -> None:
    model = FixedModel(binary_meta(), np.zeros((0, 2)))
    with pytest.raises(PneumoError, match=r"for film\.png, outside \[0, 1\]; the model or the input is damaged"):
        model.label(bad, "film.png")
    with pytest.raises(PneumoError, match="for an image, outside"):  # the default names no file
        model.label(bad)


def test_non_finite_error_names_where_and_what() -> None:
    err = non_finite_error("x.dcm", [float("nan"), 0.5])
    assert isinstance(err, PneumoError)
    assert str(err) == "the model produced a non-finite probability for x.dcm ([nan, 0.5]); the model or the input is damaged"


def test_the_models_properties_come_from_its_metadata() -> None:
    meta = binary_meta(threshold=0.42, image_size=96)
    model = FixedModel(meta, np.zeros((0, 2)))
    assert (model.image_size, model.threshold, model.classes) == (96, 0.42, ["NORMAL", "PNEUMONIA"])
    assert model.task.classes == ("NORMAL", "PNEUMONIA")
    model.classes.append("OTHER")  # a copy: the caller cannot change the model's classes
    assert model.classes == ["NORMAL", "PNEUMONIA"] and meta.classes == ["NORMAL", "PNEUMONIA"]
    assert model.feature_check is None and model.checkpoint is None
    assert model.with_feature_check() is model  # no check to attach: the model as it is


def test_a_model_without_probabilities_says_so() -> None:
    class Bare(Model):
        meta = binary_meta()

    with pytest.raises(NotImplementedError):
        Bare().class_probabilities(np.zeros((1, 64, 64), np.uint8))


def test_probabilities_and_scores_without_a_check_are_the_probabilities_alone() -> None:
    probs = np.array([[0.9, 0.1], [0.2, 0.8]])
    model = FixedModel(binary_meta(), probs)
    got, scores = model.probabilities_and_scores(np.zeros((2, 64, 64), np.uint8))
    np.testing.assert_array_equal(got, probs.astype(np.float32))
    assert scores is None


def test_pneumonia_probability_is_one_minus_normal_for_either_task() -> None:
    binary = FixedModel(binary_meta(), np.array([[0.9, 0.1], [0.25, 0.75]]))
    np.testing.assert_allclose(binary.pneumonia_probability(np.zeros((2, 64, 64), np.uint8)), [0.1, 0.75], atol=1e-7)
    rows = np.array([[0.5, 0.3, 0.2], [0.1, 0.2, 0.7], [1.0, 0.0, 0.0]])  # normal, bacteria, virus
    pathogen = FixedModel(pathogen_meta(), rows)
    p = pathogen.pneumonia_probability(np.zeros((3, 64, 64), np.uint8))
    np.testing.assert_allclose(p, rows[:, 1:].sum(axis=1), atol=1e-6)
    assert pathogen.label(float(p[0])) == "PNEUMONIA" and pathogen.label(float(p[2])) == "NORMAL"  # threshold 0.4
