"""pneumo: pneumonia detection on pediatric chest X-rays.

The package is layered; each layer imports only the ones before it (tests/test_layers.py holds
the same list and checks this text against it):

    errors, version                the one exception for user mistakes, the argument checks that raise it; the version
    utils                          reading, writing and walking files; progress
    tasks, config                  what a model is asked; recipes
    data                           find, read, preprocess, cache, split, batch, augment the images
    models, viz                    networks by name and the checkpoint format; every picture
    inference                      one Model base, torch and onnx backends, input checks, batch prediction
    explain                        Grad-CAM
    evaluation                     metrics with intervals, shifts, thresholds, site calibration, `evaluate`
    training                       the loop and everything around it
    deploy                         ONNX export, float or int8
    service                        the web service and its page
    cli                            the command line over everything

One function per command, options keyword-only after the first argument:

    >>> import pneumo
    >>> result = pneumo.train(pneumo.load_config("seed", ["epochs=1"]), out="runs/seed")
    >>> pneumo.evaluate("path/to/test", model=result.run_dir).accuracy
    >>> [p.label for p in pneumo.predict(["xray.jpeg"])]
    >>> pneumo.predict_archive("scans/", out="results.csv").done
    >>> pneumo.calibrate("site/labelled", unlabeled="site/archive", out="models/site").threshold
    >>> pneumo.export(result.run_dir, out="seed.onnx").max_abs_diff
    >>> pneumo.ensemble(["runs/s0", "runs/s1"], out="models/pair").report["roc_auc"]
    >>> pneumo.serve("models/pair", port=8000)
"""

from __future__ import annotations

import importlib

from pneumo.config import Config, load_config
from pneumo.errors import PneumoError
from pneumo.version import __version__

# one function per command, named as the command; heavy parts (torch, MONAI, matplotlib) load on
# first use, so `import pneumo` stays light
_LAZY = {
    "train": "pneumo.training.loop",
    "evaluate": "pneumo.evaluation.evaluate",
    "predict": "pneumo.inference.predict",
    "predict_archive": "pneumo.inference.batch",
    "calibrate": "pneumo.evaluation.calibrate",
    "ensemble": "pneumo.training.assemble",
    "export": "pneumo.deploy.onnx",
    "serve": "pneumo.service.app",
    "load_model": "pneumo.inference.loading",
    "discover": "pneumo.data.layout",
}
__all__ = ["__version__", "Config", "PneumoError", "load_config", *_LAZY]


def __getattr__(name: str) -> object:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'pneumo' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
