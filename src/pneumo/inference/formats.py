"""Predictions as text: JSON (a list of objects) or CSV (one row per file), the same rows for
`pneumo predict --format`, `predict-archive` and anyone calling the library.

CSV goes through `pneumo.utils.csvfile`: any file name stays inside its row, and the text
columns (`TEXT_COLUMNS`) are neutralised against spreadsheet formulas (a `'` in front of a cell
starting with `= + - @`, a tab, CR, LF or `'`); `pneumo.utils.csvfile.parse_csv(text, TEXT_COLUMNS)`
reads the rows back with the names as they were. Numbers are written as they are.
"""

from __future__ import annotations

import json
from typing import Sequence

from pneumo.errors import PneumoError
from pneumo.inference.base import Prediction
from pneumo.utils.csvfile import format_csv

__all__ = ["TEXT_COLUMNS", "format_predictions", "prediction_rows"]

TEXT_COLUMNS = frozenset({"path", "label", "abstain", "warnings", "abstain_reason"})  # the others hold numbers


def prediction_rows(results: Sequence[Prediction]) -> tuple[list[str], list[list[str]]]:
    """The CSV columns and each prediction's cells as plain strings (nothing neutralised): a column
    per class probability; the input checks' warnings joined by "; "; an abstention has an empty
    label, abstain true and its reason."""
    classes = list(results[0].class_probabilities) if results else []
    columns = ["path", "probability", "label", "abstain", "threshold", *(f"p_{c}" for c in classes), "warnings", "abstain_reason"]
    rows = []
    for r in results:
        probabilities = (f"{r.class_probabilities[c]:.6f}" for c in classes)
        row = [r.path, f"{r.probability:.6f}", r.label or "", "true" if r.abstain else "false", f"{r.threshold:.6g}", *probabilities]
        rows.append([*row, "; ".join(r.warnings), r.abstain_reason or ""])
    return columns, rows


def format_predictions(results: Sequence[Prediction], fmt: str) -> str:
    """Predictions as "json" or "csv" (see `prediction_rows` for the columns)."""
    if fmt == "json":
        return json.dumps([r.to_dict() for r in results], indent=2)
    if fmt != "csv":
        raise PneumoError(f"unknown format {fmt!r}; use json or csv")
    columns, rows = prediction_rows(results)
    return format_csv(columns, rows, TEXT_COLUMNS)
