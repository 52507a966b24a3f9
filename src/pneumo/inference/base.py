"""What every backend's model is, and what a prediction is.

`Model` holds a checkpoint's metadata (`pneumo.models.meta.CheckpointMeta`) and turns uint8
images into class probabilities; the PyTorch checkpoint (`TorchModel`) and the onnxruntime
export (`OnnxModel`) are its two kinds. A model with an input check fitted on its training
films (`pneumo.inference.checks.FeatureCheck`) also scores each input against it on the same
forward pass (`probabilities_and_scores`); the others return no scores, and only the rule checks warn.
"""

from __future__ import annotations

from pathlib import Path

import math
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from pneumo.errors import PneumoError
from pneumo.inference.checks import FeatureCheck
from pneumo.models.meta import CheckpointMeta
from pneumo.tasks import Task, pneumonia_probability

__all__ = ["NO_VERDICT", "Model", "Prediction", "PredictionBatch", "non_finite_error"]


NO_VERDICT = "no verdict: input outside what the model was trained on"


def non_finite_error(where: str, value: object) -> PneumoError:
    """The error for a probability that is NaN or infinite: never a label (NaN >= t is False, which would read NORMAL)."""
    return PneumoError(f"the model produced a non-finite probability for {where} ({value}); the model or the input is damaged")


@dataclass(frozen=True)
class Prediction:
    """One image's verdict: P(pneumonia), the label at the threshold, and every class's probability.

    When the input checks find the image outside what the model was trained on, the model
    abstains: `abstain` is True, `label` is None and `abstain_reason` says why; the
    probabilities are still there, for whoever wants to look (`abstain=False` forces a label).
    """

    path: str
    probability: float
    label: str | None
    threshold: float
    class_probabilities: dict[str, float]
    warnings: tuple[str, ...] = ()  # why the input may be outside what the model can judge (pneumo.inference.checks)
    abstain: bool = False
    abstain_reason: str | None = None

    @property
    def verdict(self) -> str:
        """The label, or the words for no verdict."""
        return self.label if self.label is not None else NO_VERDICT

    def to_dict(self) -> dict[str, Any]:
        """The one serialisation of a prediction, its fields by name in declaration order: the JSON
        `format_predictions` writes (and Ray's workers send back), what every CSV cell is written
        from (`pneumo.inference.formats.prediction_rows`) and the service's answer (which calls
        `path` `filename`), so the three cannot drift apart."""
        return {**asdict(self), "warnings": list(self.warnings)}


class PredictionBatch(list):
    """The predictions for a batch of files (a list of `Prediction`), and the files skipped because
    they could not be read, each with the reason: `skipped = [(path, message), ...]`."""

    def __init__(self, predictions: Iterable[Prediction] = (), skipped: list[tuple[str, str]] | None = None) -> None:
        super().__init__(predictions)
        self.skipped: list[tuple[str, str]] = skipped or []


class Model:
    """A classifier with its metadata. Subclasses implement `class_probabilities`."""

    meta: CheckpointMeta
    checkpoint: Path | None = None  # the folder it was loaded from, so the other backend can load the same model

    @property
    def image_size(self) -> int:
        return self.meta.image_size

    @property
    def threshold(self) -> float:
        return self.meta.threshold

    @property
    def classes(self) -> list[str]:
        return list(self.meta.classes)

    @property
    def task(self) -> Task:
        return self.meta.task_spec

    @property
    def feature_check(self) -> FeatureCheck | None:
        """The input check fitted on the model's own features; None when it has none (or it is not attached)."""
        return None

    def class_probabilities(self, images: np.ndarray, batch_size: int = 256, progress: bool = False) -> np.ndarray:
        """uint8 [N, S, S] images at the model's size -> probabilities [N, n_classes] in `classes` order."""
        raise NotImplementedError

    def probabilities_and_scores(
        self, images: np.ndarray, batch_size: int = 256, progress: bool = False
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """Class probabilities and, where the model has its input check attached, each image's scores
        ([N, 2]: distance and probe, see `FeatureCheck.scores`), from one pass."""
        return self.class_probabilities(images, batch_size, progress), None

    def pneumonia_probability(self, images: np.ndarray, batch_size: int = 256) -> np.ndarray:
        """P(pneumonia) for every image: 1 - P(normal), for binary and pathogen models alike."""
        return pneumonia_probability(self.class_probabilities(images, batch_size))

    def label(self, probability: float, where: str = "an image") -> str:
        """The verdict at the model's threshold; a PneumoError naming `where` for a NaN or infinite
        probability, or one outside [0, 1]: a damaged model or input gets no label."""
        p = float(probability)
        if not math.isfinite(p) or not 0.0 <= p <= 1.0:
            raise (
                non_finite_error(where, p)
                if not math.isfinite(p)
                else PneumoError(f"the model produced a probability of {p} for {where}, outside [0, 1]; the model or the input is damaged")
            )
        return "PNEUMONIA" if p >= self.threshold else "NORMAL"

    def with_feature_check(self) -> Model:
        """This model with its input check attached where it has one (see `TorchModel`)."""
        return self
