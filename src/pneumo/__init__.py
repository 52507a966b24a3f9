"""pneumo: pneumonia detection on pediatric chest X-rays.

The package is layered; each layer imports only the ones before it:

    errors, version                the one exception for user mistakes; the version
    utils, tasks, config           files, walking, progress; what a model is asked; recipes
    data                           find, read, preprocess, cache, split, batch, augment the images
    models, viz                    networks by name and the checkpoint format; every picture
    inference                      one Model base, torch and onnx backends, input checks, batch prediction
    evaluation                     metrics with intervals, shifts, thresholds, `evaluate`
    training                       the loop and everything around it
    explain, export                Grad-CAM; ONNX export
    serve, then cli                the web service; the command line over everything

Example:
    >>> import pneumo
    >>> result = pneumo.train(pneumo.load_config("seed", ["epochs=1"]), "runs/seed")
    >>> report = pneumo.evaluate("path/to/test", model=result.run_dir)
    >>> [p.label for p in pneumo.predict(["xray.jpeg"])]
    >>> pneumo.calibrate("site/labelled", unlabeled="site/archive", out="models/site").threshold
"""
from __future__ import annotations

from importlib import import_module
from typing import Any

from pneumo.config import Config, load_config
from pneumo.errors import PneumoError
from pneumo.version import __version__

__all__ = ["__version__", "Config", "PneumoError", "load_config", "load_model", "train", "evaluate", "predict", "calibrate", "discover"]

# Heavy parts (torch, MONAI, matplotlib) load on first use, so `import pneumo` stays light.
_LAZY = {
    "train": "pneumo.training",
    "evaluate": "pneumo.evaluation.evaluate",
    "predict": "pneumo.inference.predict",
    "calibrate": "pneumo.evaluation.calibrate",
    "load_model": "pneumo.inference.loading",
    "discover": "pneumo.data.layout",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'pneumo' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
