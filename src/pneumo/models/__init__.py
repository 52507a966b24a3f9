"""Networks by name (`registry`: `create_model`, `register_model`, `list_models`), the notebook's
CNN (`seed_cnn`), MONAI's networks (`monai_nets`), and the checkpoint format that stores them
(`meta`: the typed metadata, torch-free; `checkpoint`: weights + metadata on disk).

`import pneumo.models` stays light: torch loads with the registry's first use.

Example:
    >>> from pneumo.models import create_model, list_models
    >>> net = create_model("resnet18_half", num_outputs=1, image_size=224)
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

__all__ = ["ModelSpec", "register_model", "create_model", "list_models", "model_spec"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        return getattr(import_module("pneumo.models.registry"), name)
    raise AttributeError(f"module 'pneumo.models' has no attribute {name!r}")
