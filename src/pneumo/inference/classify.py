"""The one loop from images to verdicts, shared by every backend, command and the service:
P(pneumonia) = 1 - P(normal), the label at the model's threshold, and the input checks' warnings."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from pneumo.data.pixels import ImageInfo
from pneumo.data.preprocess import load_image_with_info
from pneumo.data.unreadable import read_each
from pneumo.errors import PneumoError
from pneumo.inference.base import Model, Prediction, PredictionBatch, non_finite_error
from pneumo.inference.checks import abstain_reason, check_inputs
from pneumo.tasks import pneumonia_probability

__all__ = ["MAX_BATCH_SIZE", "classify", "classify_images"]

MAX_BATCH_SIZE = 1 << 20  # images in one batch: past any memory, so a larger one is a slip (2**63 breaks islice)


# reads one input as the model sees it: (the input, its name for messages, the model's size) -> (uint8 [S, S], what it was)
Reader = Callable[[Any, str, int], tuple[np.ndarray, ImageInfo]]


def _read_file(path: Any, name: str, size: int) -> tuple[np.ndarray, ImageInfo]:
    return load_image_with_info(path, size)


def classify(
    files: Sequence[Any],
    model: Model,
    batch_size: int = 32,
    strict: bool = False,
    abstain: bool = True,
    *,
    names: Sequence[str] | None = None,
    read: Reader = _read_file,
    what: str = "files",
) -> PredictionBatch:
    """Predictions for image files with any backend, in batches; see `classify_images` for `abstain`.

    A file that cannot be read is skipped and listed in `.skipped` (one bad file in an archive
    does not stop the batch); with `strict` it is an error. So is a batch with no readable file.
    Other inputs (images in memory) take their own `read`, `names` and the `what` of messages;
    each batch is read only when its turn comes, so at most one batch is held decoded.
    """
    names = [str(f) for f in files] if names is None else list(names)
    results = PredictionBatch()
    for start in range(0, len(files), batch_size):
        batch = range(start, min(start + batch_size, len(files)))
        decoded = [
            (names[i], image, info)
            for i, (image, info) in read_each(
                batch, lambda i: read(files[i], names[i], model.image_size), results.skipped, name=names.__getitem__, strict=strict
            )
        ]
        if decoded:
            judged, images, infos = zip(*decoded)
            results += classify_images(np.stack(images), infos, judged, model, abstain)
    if not results and results.skipped:
        first = "; ".join(message for _, message in results.skipped[:3])
        raise PneumoError(f"none of the {len(results.skipped)} {what} could be read: {first}")
    return results


def classify_images(
    images: np.ndarray, infos: Sequence[ImageInfo | None], names: Sequence[str], model: Model, abstain: bool = True
) -> list[Prediction]:
    """`classify` for images already decoded and resized (uint8 [N, S, S]), e.g. uploads a service
    received: one forward pass, labels at the model's threshold, the input checks' warnings
    (the feature-distance one where the model has feature statistics).

    An image any check warns about gets no label (`abstain`, with the first warning as the
    reason); `abstain=False` labels it anyway, the warnings still attached.
    """
    probs, scores = model.probabilities_and_scores(images)
    probs = np.asarray(probs)
    classes = model.classes
    if probs.shape != (len(names), len(classes)):
        raise PneumoError(
            f"the model returned probabilities of shape {list(probs.shape)} for {len(names)} image(s) and {len(classes)} classes; the model is damaged"
        )
    for name, row in zip(names, probs):  # before any label: NaN >= threshold is False, which would read NORMAL
        if not np.isfinite(row).all():
            raise non_finite_error(name, row.tolist())
    warnings = check_inputs(infos, scores, model.feature_check)
    results = []
    for name, row, p, warned in zip(names, probs, pneumonia_probability(probs), warnings):
        reason = abstain_reason(warned, abstain)
        holds = reason is not None
        results.append(
            Prediction(
                path=name,
                probability=float(p),
                label=None if holds else model.label(float(p), name),
                threshold=model.threshold,
                class_probabilities={c: float(v) for c, v in zip(classes, row)},
                warnings=tuple(warned),
                abstain=holds,
                abstain_reason=reason,
            )
        )
    return results
