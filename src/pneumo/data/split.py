"""Carve a validation split out of the training images.

`patient` (default): no child appears on both sides, and class proportions are kept.
`image`: the notebook's seeded random split of images, which leaks patients into validation.
"""
from __future__ import annotations

import csv
from pathlib import Path
from typing import Sequence

import numpy as np
from sklearn.model_selection import StratifiedGroupKFold, train_test_split

from pneumo.data.layout import Record
from pneumo.errors import PneumoError

__all__ = ["split_records", "subsample", "shared_patients", "write_split"]


def split_records(
    records: Sequence[Record], val_fraction: float, seed: int, by: str = "patient", task: str = "binary"
) -> tuple[list[Record], list[Record]]:
    """Split records into (train, val).

    Example:
        >>> train, val = split_records(records, 0.2, seed=0)
        >>> shared_patients(train, val)
        set()
    """
    records = list(records)
    targets = np.array([r.target(task) for r in records])
    counts = np.bincount(targets)
    if (counts > 0).sum() < 2:
        raise PneumoError("the training data holds a single class; both NORMAL and PNEUMONIA images are needed")
    if len(records) < 4 or counts[counts > 0].min() < 2:
        raise PneumoError("too few images to carve a validation split: need at least 2 of every class")
    index = np.arange(len(records))
    if by == "image":
        train_idx, val_idx = train_test_split(index, test_size=val_fraction, random_state=seed, shuffle=True)
    elif by == "patient":
        groups = np.array([r.patient_id for r in records])
        n_splits = max(2, min(round(1 / val_fraction), len(set(groups))))
        folds = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)
        train_idx, val_idx = next(folds.split(index, targets, groups))
    else:
        raise PneumoError(f"unknown split method '{by}': use 'patient' or 'image'")
    return [records[i] for i in sorted(train_idx)], [records[i] for i in sorted(val_idx)]


def subsample(records: Sequence[Record], limit: int, seed: int, task: str = "binary") -> list[Record]:
    """At most `limit` records, class proportions kept (for quick runs and tests)."""
    records = list(records)
    if limit <= 0 or limit >= len(records):
        return records
    targets = [r.target(task) for r in records]
    keep, _ = train_test_split(np.arange(len(records)), train_size=limit, random_state=seed, stratify=targets)
    return [records[i] for i in sorted(keep)]


def shared_patients(a: Sequence[Record], b: Sequence[Record]) -> set[str]:
    """Patients with images on both sides: the leak a random image split makes."""
    return {r.patient_id for r in a} & {r.patient_id for r in b}


def write_split(path: Path, parts: dict[str, Sequence[Record]]) -> None:
    """The split actually used, one row per image, so a run can be audited and repeated."""
    with path.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["path", "label", "pathogen", "patient_id", "split"])
        for name, records in parts.items():
            for r in records:
                writer.writerow([str(r.path), r.label, r.pathogen or "", r.patient_id, name])
