"""Carve a validation split out of the training images.

`patient` (default): no child appears on both sides, and class proportions are kept.
`image`: the notebook's seeded random split of images, which leaks patients into validation.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import numpy as np
from sklearn.model_selection import train_test_split

from pneumo.data.layout import Record
from pneumo.errors import PneumoError
from pneumo.utils.csvfile import format_csv
from pneumo.utils.atomic import atomic_write

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
        val_idx = _grouped_stratified_val(records, targets, val_fraction, seed)
        train_idx = np.setdiff1d(index, val_idx)
    else:
        raise PneumoError(f"unknown split method '{by}': use 'patient' or 'image'")
    if len(val_idx) == 0 or len(train_idx) == 0:
        raise PneumoError(
            f"cannot carve a {by}-grouped validation split from {len(records)} images of "
            f"{len({r.patient_id for r in records})} patient(s); give more patients or use split=image"
        )
    return [records[i] for i in sorted(train_idx)], [records[i] for i in sorted(val_idx)]


def _grouped_stratified_val(records: list[Record], targets: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """Indices of a validation set made of whole patients, about `fraction` of every class.

    Patients are grouped by the set of classes of their images (a child with bacterial and
    viral films is its own stratum), shuffled with the seed, and taken in turn until each
    stratum's validation share is as close to `fraction` as whole patients allow.
    """
    by_patient: dict[str, list[int]] = {}
    for i, r in enumerate(records):
        by_patient.setdefault(r.patient_id, []).append(i)
    strata: dict[tuple[int, ...], list[str]] = {}
    for patient, idx in by_patient.items():
        strata.setdefault(tuple(sorted(set(targets[idx].tolist()))), []).append(patient)
    rng = np.random.default_rng(seed)
    val: list[int] = []
    for key in sorted(strata):
        patients = sorted(strata[key])
        rng.shuffle(patients)
        goal = fraction * sum(len(by_patient[p]) for p in patients)
        taken = 0
        for patient in patients:
            size = len(by_patient[patient])
            if abs(taken + size - goal) > abs(taken - goal):
                continue  # this child would overshoot; a smaller one later may fit
            val += by_patient[patient]
            taken += size
    return np.array(sorted(val), dtype=int)


def subsample(records: Sequence[Record], limit: int, seed: int, task: str = "binary") -> list[Record]:
    """At most `limit` records, class proportions kept (for quick runs and tests)."""
    records = list(records)
    if limit <= 0 or limit >= len(records):
        return records
    targets = [r.target(task) for r in records]
    if limit < 4 * len(set(targets)):
        raise PneumoError(f"limit={limit} is too small: keep at least {4 * len(set(targets))} images (4 per class) or set limit=0 for all")
    keep, _ = train_test_split(np.arange(len(records)), train_size=limit, random_state=seed, stratify=targets)
    return [records[i] for i in sorted(keep)]


def shared_patients(a: Sequence[Record], b: Sequence[Record]) -> set[str]:
    """Patients with images on both sides: the leak a random image split makes."""
    return {r.patient_id for r in a} & {r.patient_id for r in b}


def write_split(path: Path, parts: dict[str, Sequence[Record]]) -> None:
    """The split actually used, one row per image, so a run can be audited and repeated.

    Relative paths are rewritten relative to the CSV's own folder, as a manifest's are read,
    so the file works as a manifest from anywhere (`pneumo evaluate RUN/split.csv --split val`).
    """
    folder = os.path.abspath(path.parent)

    def as_listed(file: Path) -> str:
        return str(file) if file.is_absolute() else os.path.relpath(os.path.abspath(file), folder)

    # a manifest, not a report: cells are quoted (a CR or LF in a name stays in its cell) but not
    # escaped for spreadsheets, so a path reads back exactly as any manifest's does
    rows = ([as_listed(r.path), r.label, r.pathogen or "", r.patient_id, name] for name, records in parts.items() for r in records)
    atomic_write(path, format_csv(["path", "label", "pathogen", "patient_id", "split"], rows))
