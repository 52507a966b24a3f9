"""pneumo: pneumonia detection on pediatric chest X-rays.

Example:
    >>> import pneumo
    >>> result = pneumo.train(pneumo.load_config("seed", ["epochs=1"]), "runs/seed")
    >>> report = pneumo.evaluate("path/to/test", model=result.run_dir)
"""
from __future__ import annotations

from importlib import import_module
from typing import Any

__version__ = "0.1.0"

from pneumo.config import Config, load_config  # noqa: E402
from pneumo.errors import PneumoError  # noqa: E402

__all__ = ["__version__", "Config", "PneumoError", "load_config", "load_model", "train", "evaluate", "predict", "discover"]

# Heavy parts (torch, MONAI, matplotlib) load on first use, so `import pneumo` stays light.
_LAZY = {
    "train": "pneumo.training",
    "evaluate": "pneumo.evaluation",
    "predict": "pneumo.prediction",
    "load_model": "pneumo.prediction",
    "discover": "pneumo.data.layout",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'pneumo' has no attribute {name!r}")
