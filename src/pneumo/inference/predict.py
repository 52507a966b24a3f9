"""Files in, probabilities out, at the model's own stored threshold.

Two backends share one path (`pneumo.inference.classify`): a checkpoint through PyTorch, or an
exported `.onnx` through onnxruntime. Without PyTorch installed, the bundled model runs from
its ONNX export, so `pneumo predict` works on the base install. Nothing here imports torch
unless a checkpoint is loaded.
"""
from __future__ import annotations

import importlib.util
from importlib import resources
from pathlib import Path
from typing import Iterable

from pneumo.errors import PneumoError
from pneumo.inference.base import Model, PredictionBatch
from pneumo.inference.classify import classify
from pneumo.models.meta import META
from pneumo.utils.walk import expand_paths

__all__ = ["load_model", "predict", "bundled_model_dir", "BUNDLED_ONNX"]

BUNDLED_ONNX = "pneumo.onnx"  # the bundled checkpoint's export, beside it in weights/


def bundled_model_dir() -> Path:
    """Where the model shipped inside the package lives."""
    return Path(str(resources.files("pneumo") / "weights"))


def _is_export(path: Path) -> bool:
    return path.suffix.lower() == ".onnx" or (path.suffix.lower() == ".json" and path.name != META)


def load_model(path: str | Path | Model | None = None, device: str = "cpu") -> Model:
    """A checkpoint (run folder, checkpoint folder or its meta.json), an exported `.onnx`, or the
    bundled model when None: through PyTorch where it is installed, else its ONNX export.
    A model object is returned as it is."""
    if isinstance(path, Model):
        return path
    if path is None:
        bundled = bundled_model_dir()
        if not (bundled / META).exists():
            raise PneumoError("this pneumo has no bundled model; train one (`pneumo train`) and pass --model RUN_DIR")
        if importlib.util.find_spec("torch") is None:
            return _load_export(bundled / BUNDLED_ONNX)
        path = bundled
    if _is_export(Path(path)):
        return _load_export(path)
    from pneumo.inference.torch_backend import TorchModel

    return TorchModel.load(path, device=device)


def _load_export(path: str | Path) -> Model:
    from pneumo.inference.onnx_backend import OnnxModel

    return OnnxModel.load(path)


def predict(
    paths: Iterable[str | Path], model: str | Path | Model | None = None, batch_size: int = 32, strict: bool = False, abstain: bool = True
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
    return classify(expand_paths(paths), load_model(model).with_feature_check(), batch_size, strict, abstain)
