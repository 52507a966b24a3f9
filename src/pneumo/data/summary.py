"""What a dataset holds, and what is wrong with it, before anyone trains on it."""

from __future__ import annotations

import os
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from pneumo.data.cache import file_digests
from pneumo.data.io import check_image_file, read_image
from pneumo.data.layout import CLASSES, Record, discover
from pneumo.errors import PneumoError
from pneumo.utils.progress import progress_bar

__all__ = ["summarize"]


def _split_summary(records: list[Record]) -> dict[str, Any]:
    by_class = Counter(r.label for r in records)
    pathogens = Counter(r.pathogen or "unknown" for r in records if r.label == "PNEUMONIA")
    per_patient = Counter(r.patient_id for r in records)
    patients_by_class = {c: len({r.patient_id for r in records if r.label == c}) for c in CLASSES}
    n = len(records)
    return {
        "images": n,
        "classes": {c: by_class.get(c, 0) for c in CLASSES},
        "pathogens": dict(sorted(pathogens.items())),
        "patients": len(per_patient),
        "patients_by_class": patients_by_class,
        "images_per_patient": {"mean": n / max(1, len(per_patient)), "max": max(per_patient.values(), default=0)},
        "pneumonia_to_normal": by_class.get("PNEUMONIA", 0) / max(1, by_class.get("NORMAL", 0)),
        # the notebook's weights, w_c = N / (2 N_c)
        "class_weights": {c: (n / (2 * by_class[c]) if by_class.get(c) else None) for c in CLASSES},
    }


def _unreadable(path: Path) -> str | None:
    try:
        read_image(path, size_hint=64)
        return None
    except PneumoError as exc:
        return str(exc)


def _unreachable(path: Path) -> str | None:
    """Why a listed file cannot even be opened (a dangling link, a link loop, no permission, a pipe
    or a device named like an image), or None; checked without opening what would block."""
    try:
        check_image_file(path)
        return None
    except PneumoError as exc:
        return str(exc)


def _class_warnings(name: str, split: dict[str, Any]) -> list[str]:
    """A split without one of the classes cannot train a classifier, nor measure both error rates."""
    return [
        f"split {name} has no {c} images: training on it will stop, and evaluating on it cannot measure "
        f"{'specificity' if c == 'NORMAL' else 'recall'}"
        for c, n in split["classes"].items()
        if n == 0
    ]


def summarize(source: str | Path, check_images: bool = True, progress: bool = True) -> dict[str, Any]:
    """Counts per split, class and pathogen; patients; class weights; and warnings.

    Warnings cover splits without one of the classes, patients present in more than one split,
    files with identical bytes, files that cannot be opened and (with check_images) files that
    do not decode.

    Example:
        >>> summarize("../shared/data")["splits"]["train"]["classes"]
        {'NORMAL': 1341, 'PNEUMONIA': 3875}
    """
    dataset = discover(source)
    summary: dict[str, Any] = {
        "root": str(dataset.root),
        "layout": dataset.layout,
        "splits": {name: _split_summary(records) for name, records in dataset.splits.items()},
    }
    warnings = [w for name, split in summary["splits"].items() for w in _class_warnings(name, split)]
    names = list(dataset.splits)
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            both = {r.patient_id for r in dataset.splits[a]} & {r.patient_id for r in dataset.splits[b]}
            if both:
                warnings.append(f"{len(both)} patients have images in both {a} and {b} (e.g. {sorted(both)[0]})")
    if dataset.left_out:
        warnings.append(
            f"{len(dataset.left_out)} files in the class folders are not images and were left out (e.g. {dataset.left_out[0].name})"
        )
    summary["left_out"] = [str(p) for p in dataset.left_out]
    every = [r for recs in dataset.splits.values() for r in recs]
    reasons = [_unreachable(r.path) for r in every]
    errors = [e for e in reasons if e]
    records = [r for r, reason in zip(every, reasons) if reason is None]
    groups: dict[str, list[Path]] = defaultdict(list)
    for r, digest in zip(records, file_digests([r.path for r in records])):
        groups[digest].append(r.path)
    duplicates = [paths for paths in groups.values() if len(paths) > 1]
    if duplicates:
        example = ", ".join(p.name for p in duplicates[0][:2])
        warnings.append(f"{sum(len(d) - 1 for d in duplicates)} files are byte-identical copies of others (e.g. {example})")
    summary["duplicates"] = [[str(p) for p in d] for d in duplicates]
    if check_images:
        with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
            errors += [
                e for e in progress_bar(pool.map(_unreadable, [r.path for r in records]), len(records), "checking images", progress) if e
            ]
    if check_images or errors:  # without the decode check, only files that cannot be opened are known
        summary["unreadable"] = errors
    if errors:
        warnings.append(f"{len(errors)} files cannot be {'decoded' if check_images else 'opened'} (e.g. {errors[0]})")
    summary["warnings"] = warnings
    return summary
