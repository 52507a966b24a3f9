"""Files in, probabilities out, at the model's own stored threshold."""
from __future__ import annotations

from dataclasses import asdict, dataclass
from importlib import resources
from pathlib import Path
from typing import Iterable

import numpy as np

from pneumo.checkpoint import LoadedModel, load_checkpoint
from pneumo.data.layout import IMAGE_SUFFIXES
from pneumo.errors import PneumoError
from pneumo.preprocess import load_image

__all__ = ["Prediction", "load_model", "predict", "bundled_model_dir"]


@dataclass(frozen=True)
class Prediction:
    """One image's verdict: P(pneumonia), the label at the threshold, and every class's probability."""

    path: str
    probability: float
    label: str
    threshold: float
    class_probabilities: dict[str, float]

    def to_dict(self) -> dict:
        return asdict(self)


def bundled_model_dir() -> Path:
    """Where the model shipped inside the package lives."""
    return Path(str(resources.files("pneumo") / "weights"))


def load_model(path: str | Path | LoadedModel | None = None, device: str = "cpu") -> LoadedModel:
    """A checkpoint (run folder, checkpoint folder or its meta.json), or the bundled model when None."""
    if isinstance(path, LoadedModel):
        return path
    if path is None:
        bundled = bundled_model_dir()
        if not (bundled / "meta.json").exists():
            raise PneumoError("this pneumo has no bundled model yet; train one (`pneumo train`) and pass --model RUN_DIR")
        path = bundled
    return load_checkpoint(path, device=device)


def _expand(paths: Iterable[str | Path]) -> list[Path]:
    files: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            files += sorted(f for f in p.rglob("*") if f.suffix.lower() in IMAGE_SUFFIXES and not f.name.startswith("."))
        elif p.exists():
            files.append(p)
        else:
            raise PneumoError(f"{p} does not exist")
    if not files:
        raise PneumoError("no image files found in the given paths")
    return files


def predict(paths: Iterable[str | Path], model: str | Path | LoadedModel | None = None, batch_size: int = 32) -> list[Prediction]:
    """Classify image files (or folders of them).

    Example:
        >>> [p.label for p in predict(["xray.jpeg"], model="runs/seed")]
        ['PNEUMONIA']
    """
    loaded = load_model(model)
    files = _expand(paths)
    results: list[Prediction] = []
    classes = loaded.meta["classes"]
    for start in range(0, len(files), batch_size):
        chunk = files[start : start + batch_size]
        images = np.stack([load_image(f, loaded.image_size) for f in chunk])
        probs = loaded.class_probabilities(images)
        for f, row in zip(chunk, probs):
            p = float(1 - row[0])
            results.append(
                Prediction(
                    path=str(f),
                    probability=p,
                    label="PNEUMONIA" if p >= loaded.threshold else "NORMAL",
                    threshold=loaded.threshold,
                    class_probabilities={c: float(v) for c, v in zip(classes, row)},
                )
            )
    return results
