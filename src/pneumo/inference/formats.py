"""Predictions as text: JSON (a list of objects) or CSV (one row per file), the same rows for
`pneumo predict --format`, `predict-archive` and anyone calling the library.

CSV goes through `pneumo.utils.csvfile`: any file name stays inside its row, and the text
columns (`TEXT_COLUMNS`) are neutralised against spreadsheet formulas (a `'` in front of a cell
starting with `= + - @`, a tab, CR, LF or `'`); `pneumo.utils.csvfile.parse_csv(text, TEXT_COLUMNS)`
reads the rows back with the names as they were. Numbers are written as they are.
"""

from __future__ import annotations

import json
from dataclasses import fields
from typing import Any, Sequence

from pneumo.errors import PneumoError
from pneumo.inference.base import Prediction
from pneumo.utils.csvfile import format_csv

__all__ = ["FIRST_COLUMNS", "TEXT_COLUMNS", "format_predictions", "prediction_rows"]

TEXT_COLUMNS = frozenset({"path", "label", "abstain", "warnings", "abstain_reason"})  # the others hold numbers
FIRST_COLUMNS = ("path", "probability", "label", "abstain", "threshold")  # how a CSV starts; the other fields follow in order
_ORDER = [*FIRST_COLUMNS, *(f.name for f in fields(Prediction) if f.name not in FIRST_COLUMNS)]  # `Prediction.to_dict`'s keys


def _cells(name: str, value: Any, classes: list[str]) -> list[str]:
    """One field of `Prediction.to_dict` as CSV text: a cell per class for the class probabilities."""
    if name == "class_probabilities":
        return [f"{value[c]:.6f}" for c in classes]
    if name == "probability":
        return [f"{value:.6f}"]
    if name == "threshold":
        return [f"{value:.6g}"]
    if name == "abstain":
        return ["true" if value else "false"]
    if name == "warnings":
        return ["; ".join(value)]
    return ["" if value is None else str(value)]


def prediction_rows(results: Sequence[Prediction]) -> tuple[list[str], list[list[str]]]:
    """The CSV columns and each prediction's cells as plain strings (nothing neutralised), written
    from `Prediction.to_dict`: a column per class probability (`p_<class>`); the input checks'
    warnings joined by "; "; an abstention has an empty label, abstain true and its reason."""
    classes = list(results[0].class_probabilities) if results else []
    columns = [column for name in _ORDER for column in ([f"p_{c}" for c in classes] if name == "class_probabilities" else [name])]
    rows = []
    for r in results:
        serialised = r.to_dict()
        rows.append([cell for name in _ORDER for cell in _cells(name, serialised[name], classes)])
    return columns, rows


def format_predictions(results: Sequence[Prediction], fmt: str) -> str:
    """Predictions as "json" or "csv" (see `prediction_rows` for the columns)."""
    if fmt == "json":
        return json.dumps([r.to_dict() for r in results], indent=2)
    if fmt != "csv":
        raise PneumoError(f"unknown format {fmt!r}; use json or csv")
    columns, rows = prediction_rows(results)
    return format_csv(columns, rows, TEXT_COLUMNS)
