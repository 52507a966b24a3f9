"""The notebook's first look at the data: a 4x4 grid of a shuffled batch with class titles."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pneumo.data.layout import discover
from pneumo.data.preprocess import load_image
from pneumo.viz.figures import batch_grid

__all__ = ["preview"]


def preview(source: str | Path, out: str | Path, split: str | None = None, n: int = 16, size: int = 180, seed: int = 0) -> Path:
    """Draw `n` random images of a split (the train split of a Kaggle root by default) to a PNG.

    Example:
        >>> preview("../shared/data", "preview.png")
    """
    dataset = discover(source)
    if split is None and "train" in dataset.splits:
        split = "train"
    records = dataset.split(split)
    rng = np.random.default_rng(seed)
    chosen = [records[i] for i in rng.choice(len(records), size=min(n, len(records)), replace=False)]
    images = [load_image(r.path, size) for r in chosen]
    titles = [r.label + (f" ({r.pathogen})" if r.pathogen else "") for r in chosen]
    return batch_grid(images, titles, out)
