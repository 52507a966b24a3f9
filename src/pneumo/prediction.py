"""Files in, probabilities out, at the model's own stored threshold.

Two backends share one path (`pneumo.runtime.classify`): a checkpoint through PyTorch, or an
exported `.onnx` through onnxruntime. Without PyTorch installed, the bundled model runs from
its ONNX export, so `pneumo predict` works on the base install.
"""
from __future__ import annotations

import csv
import importlib.util
import io
import json
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Iterable, Union

from pneumo.errors import PneumoError
from pneumo.runtime import OnnxModel, Prediction, PredictionBatch, classify, expand_paths

if TYPE_CHECKING:
    from pneumo.checkpoint import LoadedModel
    from pneumo.feature_stats import FeatureCheckedModel

__all__ = ["Prediction", "PredictionBatch", "load_model", "predict", "with_feature_check", "format_predictions", "bundled_model_dir", "BUNDLED_ONNX"]

Model = Union["LoadedModel", OnnxModel]
BUNDLED_ONNX = "pneumo.onnx"  # the bundled checkpoint's export, beside it in weights/


def bundled_model_dir() -> Path:
    """Where the model shipped inside the package lives."""
    return Path(str(resources.files("pneumo") / "weights"))


def _is_export(path: Path) -> bool:
    return path.suffix.lower() == ".onnx" or (path.suffix.lower() == ".json" and path.name != "meta.json")


def load_model(path: str | Path | Model | None = None, device: str = "cpu") -> Model:
    """A checkpoint (run folder, checkpoint folder or its meta.json), an exported `.onnx`, or the
    bundled model when None: through PyTorch where it is installed, else its ONNX export."""
    if path is not None and not isinstance(path, (str, Path)):
        return path
    if path is None:
        bundled = bundled_model_dir()
        if not (bundled / "meta.json").exists():
            raise PneumoError("this pneumo has no bundled model; train one (`pneumo train`) and pass --model RUN_DIR")
        if importlib.util.find_spec("torch") is None:
            return OnnxModel.load(bundled / BUNDLED_ONNX)
        path = bundled
    if _is_export(Path(path)):
        return OnnxModel.load(path)
    from pneumo.checkpoint import load_checkpoint

    return load_checkpoint(path, device=device)


def format_predictions(results: list[Prediction], fmt: str) -> str:
    """Predictions as "json" (a list of objects) or "csv" (one row per file; a column per class
    probability; the input checks' warnings joined by "; ")."""
    if fmt == "json":
        return json.dumps([r.to_dict() for r in results], indent=2)
    if fmt != "csv":
        raise PneumoError(f"unknown format {fmt!r}; use json or csv")
    classes = list(results[0].class_probabilities) if results else []
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["path", "probability", "label", "threshold", *(f"p_{c}" for c in classes), "warnings"])
    for r in results:
        probabilities = (f"{r.class_probabilities[c]:.6f}" for c in classes)
        writer.writerow([r.path, f"{r.probability:.6f}", r.label, f"{r.threshold:.6g}", *probabilities, "; ".join(r.warnings)])
    return buffer.getvalue()


def predict(
    paths: Iterable[str | Path], model: str | Path | Model | None = None, batch_size: int = 32, strict: bool = False
) -> PredictionBatch:
    """Classify image files, folders of them (recursively) or glob patterns.

    Files that cannot be read are skipped and listed in the result's `.skipped`; `strict`
    makes the first one an error.

    Example:
        >>> [p.label for p in predict(["xray.jpeg"], model="runs/seed")]
        ['PNEUMONIA']
    """
    return classify(expand_paths(paths), with_feature_check(load_model(model)), batch_size, strict)


def with_feature_check(model: Model) -> Model | FeatureCheckedModel:
    """The model with its checkpoint's feature statistics attached, where it has them (the
    bundled model does); otherwise as it is, and only the rule checks warn."""
    if isinstance(model, OnnxModel) or model.folder is None:
        return model
    from pneumo.feature_stats import FeatureCheckedModel, load_feature_stats

    stats = load_feature_stats(model.folder)
    return FeatureCheckedModel(model, stats) if stats is not None else model
