"""Files in, probabilities out, at the model's own stored threshold.

Both backends share one path (`pneumo.inference.classify`); which one runs is `load_model`'s one
rule (`pneumo.inference.loading`): the bundled model, and any checkpoint with its own export beside
it, through onnxruntime, without importing PyTorch. The files are checked before the model loads.
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterable

from pneumo.data.io import check_image_file
from pneumo.errors import PneumoError
from pneumo.inference.base import Model, PredictionBatch
from pneumo.inference.classify import classify
from pneumo.inference.loading import BUNDLED_ONNX, bundled_model_dir, load_model
from pneumo.utils.walk import expand_paths

__all__ = ["load_model", "predict", "readable_files", "bundled_model_dir", "BUNDLED_ONNX"]


def readable_files(paths: Iterable[str | Path], strict: bool = False) -> tuple[list[Path], list[tuple[str, str]]]:
    """The image files `paths` name (folders searched, globs expanded) that can be opened, and the others
    with why (a FIFO, a device, a missing file...), from their metadata alone: checked before a model is
    loaded, so a wrong path is refused in milliseconds. With `strict`, the first such file is an error;
    so is a list with no file that can be opened."""
    files, skipped = [], []
    for f in expand_paths(paths):
        try:
            check_image_file(f)
        except PneumoError as exc:
            if strict:
                raise PneumoError(f"{exc} (--strict stops at the first unreadable file)") from None
            skipped.append((str(f), str(exc)))
            continue
        files.append(f)
    if not files and skipped:
        first = "; ".join(message for _, message in skipped[:3])
        raise PneumoError(f"none of the {len(skipped)} files could be read: {first}")
    return files, skipped


def predict(
    paths: Iterable[str | Path], *, model: str | Path | Model | None = None, batch_size: int = 32, strict: bool = False, abstain: bool = True
) -> PredictionBatch:
    """Classify image files, folders of them (recursively) or glob patterns, with the input checks.

    `model` is a run folder, a checkpoint, an exported .onnx, a loaded model, or None for the
    bundled one. Files that cannot be read are skipped and listed in the result's `.skipped`;
    `strict` makes the first one an error. A file the input checks find outside what the model
    was trained on gets no label (`abstain`); `abstain=False` labels it anyway.

    Example:
        >>> [p.label for p in predict(["xray.jpeg"], model="runs/seed")]
        ['PNEUMONIA']
    """
    files, skipped = readable_files(paths, strict)  # before the model loads: a FIFO or a typo is refused at once
    results = classify(files, load_model(model), batch_size, strict, abstain)
    results.skipped[:0] = skipped
    return results
