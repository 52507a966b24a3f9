"""Which of the films being evaluated a model trained or validated on.

Metrics on a model's own training films are optimistic: it has fitted those very films. A
model folder keeps short content digests of its training and validation films
(`training_films.json`), and `evaluate` counts the overlap by content, whatever the paths
or file names, and warns.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pneumo.data.cache import cache_dir, file_digests
from pneumo.data.layout import Record
from pneumo.errors import PneumoError
from pneumo.models.checkpoint import resolve_checkpoint
from pneumo.models.folders import TRAINING_FILMS
from pneumo.utils.atomic import atomic_write

__all__ = [
    "TRAINING_FILMS",
    "copy_training_films",
    "model_folder",
    "overlap_warning",
    "own_films",
    "save_training_films",
    "training_overlap",
]

DIGEST_CHARS = 16  # 64 bits of SHA-256 per film: no accidental collisions over any dataset, 100 kB for 5216 films


def _digests(records: Sequence[Record], cache_folder: str | Path | None) -> list[str]:
    return [d[:DIGEST_CHARS] for d in file_digests([r.path for r in records], index_folder=cache_dir(cache_folder))]


def save_training_films(folder: str | Path, train: Sequence[Record], val: Sequence[Record], cache_folder: str | Path | None = None) -> Path:
    """Record which films (by content) a model was trained and validated on, beside its weights.
    A film in both (an ensemble's member trained on another's validation film) counts as training."""
    trained = set(_digests(train, cache_folder))
    films = {"digest": f"sha256[:{DIGEST_CHARS}]", "train": sorted(trained), "val": sorted(set(_digests(val, cache_folder)) - trained)}
    return atomic_write(Path(folder) / TRAINING_FILMS, json.dumps(films, separators=(",", ":")))


def copy_training_films(source: Path, folder: Path) -> None:
    """Carry the record to a model folder derived from another (`pneumo calibrate`)."""
    if (source / TRAINING_FILMS).is_file():
        atomic_write(folder / TRAINING_FILMS, (source / TRAINING_FILMS).read_bytes())


def _read(folder: Path) -> dict[str, set[str]] | None:
    try:
        raw = json.loads((folder / TRAINING_FILMS).read_text(encoding="utf-8"))
        return {"train": set(map(str, raw["train"])), "val": set(map(str, raw["val"]))}
    except (OSError, ValueError, KeyError, TypeError):
        return None  # absent (older models) or unreadable: only a warning depends on it


def model_folder(model: object) -> Path | None:
    """The folder a model argument loads from (None for the bundled model's folder), if there is one."""
    from pneumo.inference.predict import bundled_model_dir

    if model is None:
        return bundled_model_dir()
    if not isinstance(model, (str, Path)):
        return None
    path = Path(model).expanduser()
    if path.suffix.lower() in (".onnx", ".json") and path.is_file():
        return path.parent
    try:
        return resolve_checkpoint(path)
    except PneumoError:
        return None


def own_films(folder: Path | None, records: Sequence[Record], cache_folder: str | Path | None = None) -> list[bool] | None:
    """For each record, whether the model in `folder` trained or validated on its film (by content); None when unknown."""
    films = _read(folder) if folder is not None else None
    if films is None:
        return None
    mine = films["train"] | films["val"]
    return [d in mine for d in _digests(records, cache_folder)]


def training_overlap(folder: Path | None, records: Sequence[Record], cache_folder: str | Path | None = None) -> dict[str, Any] | None:
    """How many of `records` the model in `folder` trained on, and validated on; None when unknown."""
    films = _read(folder) if folder is not None else None
    if films is None or not records:
        return None
    digests = _digests(records, cache_folder)
    return {"n": len(records), "train": sum(d in films["train"] for d in digests), "val": sum(d in films["val"] for d in digests)}


def overlap_warning(overlap: dict[str, Any] | None, run_hint: str | None = None) -> str | None:
    """One line for a report that mixes in training films, saying how to evaluate honestly."""
    if not overlap or not overlap["train"]:
        return None
    n, k = overlap["n"], overlap["train"]
    how = (
        f"evaluate on its validation films instead: pneumo evaluate {run_hint}/split.csv --split val --model {run_hint}"
        if run_hint
        else "evaluate on films it never saw (its validation films, or another set)"
    )
    return f"{k} of {n} films ({k / n:.0%}) are films this model was trained on, so these metrics are optimistic; {how}"
