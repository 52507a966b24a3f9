"""Files in, probabilities out, at the model's own stored threshold.

Both backends share one path (`pneumo.inference.classify`); which one runs is `load_model`'s one
rule (`pneumo.inference.loading`): the bundled model, and any checkpoint with its own export beside
it, through onnxruntime, without importing PyTorch. The files are checked before the model loads.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from pneumo.data.in_memory import ACCEPTED, image_from_object, is_in_memory_image
from pneumo.data.io import check_image_file
from pneumo.data.pixels import ImageInfo
from pneumo.data.preprocess import resize_image
from pneumo.data.unreadable import read_each
from pneumo.errors import PneumoError, check_flag, check_path, check_whole, describe
from pneumo.inference.base import Model, PredictionBatch
from pneumo.inference.classify import MAX_BATCH_SIZE, classify
from pneumo.inference.loading import BUNDLED_ONNX, bundled_model_dir, check_model, load_model
from pneumo.utils.walk import expand_paths

__all__ = ["load_model", "predict", "readable_files", "bundled_model_dir", "BUNDLED_ONNX"]


def readable_files(paths: Iterable[str | Path], strict: bool = False) -> tuple[list[Path], list[tuple[str, str]]]:
    """The image files `paths` name (folders searched, globs expanded) that can be opened, and the others
    with why (a FIFO, a device, a missing file...), from their metadata alone: checked before a model is
    loaded, so a wrong path is refused in milliseconds. With `strict`, the first such file is an error;
    so is a list with no file that can be opened."""
    skipped: list[tuple[str, str]] = []
    files = [f for f, _ in read_each(expand_paths(paths), check_image_file, skipped, strict=strict)]
    if not files and skipped:
        first = "; ".join(message for _, message in skipped[:3])
        raise PneumoError(f"none of the {len(skipped)} files could be read: {first}")
    return files, skipped


def _items(inputs: object) -> list[Any]:
    """What was given as a list of single inputs: a lone path or image becomes a list of one (a str
    is one path, never its characters); a stack of grey images [N, H, W] becomes N images."""
    if inputs is None:
        raise PneumoError(f"inputs must be {ACCEPTED}; got None")
    if isinstance(inputs, (str, os.PathLike)):
        return [inputs]
    if is_in_memory_image(inputs):
        shape = tuple(getattr(inputs, "shape", ()))
        tensor = not isinstance(inputs, np.ndarray) and bool(shape)
        one_colour = len(shape) == 3 and (shape[0] in (1, 3, 4) if tensor else shape[-1] in (1, 3, 4))
        return list(inputs) if len(shape) == 4 or (len(shape) == 3 and not one_colour) else [inputs]
    if isinstance(inputs, (dict, set, frozenset)) or not isinstance(inputs, Iterable):
        raise PneumoError(f"inputs must be {ACCEPTED}, or a list of them; got {describe(inputs)}")
    return list(inputs)


def _read_in_memory(image: Any, name: str, size: int) -> tuple[np.ndarray, ImageInfo]:
    pixels, info = image_from_object(image, name)
    return resize_image(pixels, size), info


def predict(
    inputs: Any, *, model: str | Path | Model | None = None, batch_size: int = 32, strict: bool = False, abstain: bool = True
) -> PredictionBatch:
    """Classify images, with the input checks: files, folders of them (recursively) and glob patterns,
    or images a notebook holds (numpy arrays, torch tensors, PIL images, encoded bytes); one, or a
    list of them (paths and in-memory images are not mixed in one call).

    `model` is a run folder, a checkpoint, an exported .onnx, a loaded model, or None for the
    bundled one. Inputs that cannot be read are skipped and listed in the result's `.skipped`
    (in-memory ones named `<image i>`, their place in the list); `strict` makes the first one an
    error. An input the checks find outside what the model was trained on gets no label
    (`abstain`); `abstain=False` labels it anyway.

    Example:
        >>> [p.label for p in predict(["xray.jpeg"], model="runs/seed")]
        ['PNEUMONIA']
        >>> predict(np.asarray(PIL.Image.open("xray.jpeg")))[0].probability
    """
    items = _items(inputs)
    check_model("model", model)
    batch_size = check_whole("batch_size", batch_size, minimum=1, maximum=MAX_BATCH_SIZE)
    strict, abstain = check_flag("strict", strict), check_flag("abstain", abstain)
    in_memory = [is_in_memory_image(item) for item in items]
    if any(in_memory):
        if not all(in_memory):
            raise PneumoError("give either paths or in-memory images in one call to predict, not both")
        names = [f"<image {i}>" for i in range(len(items))]
        return classify(items, load_model(model), batch_size, bool(strict), bool(abstain), names=names, read=_read_in_memory, what="images")
    wrong = next(((i, item) for i, item in enumerate(items) if not isinstance(item, (str, os.PathLike))), None)
    if wrong is not None:
        raise PneumoError(f"inputs must be {ACCEPTED}; item {wrong[0]} is {describe(wrong[1])}")
    for i, item in enumerate(items):  # a NUL byte or a name too long would be an OSError from os.stat
        check_path(f"inputs[{i}]", item, what="an image file, a folder or a glob pattern")
    files, skipped = readable_files(items, bool(strict))  # before the model loads: a FIFO or a typo is refused at once
    results = classify(files, load_model(model), batch_size, bool(strict), bool(abstain))
    results.skipped[:0] = skipped
    return results
