"""Predictions as text: JSON (a list of objects) or CSV (one row per file), the same rows for
`pneumo predict --format`, `predict-archive` and anyone calling the library."""
from __future__ import annotations

import csv
import io
import json
from typing import Sequence

from pneumo.errors import PneumoError
from pneumo.inference.base import Prediction

__all__ = ["format_predictions"]


def format_predictions(results: Sequence[Prediction], fmt: str) -> str:
    """Predictions as "json" or "csv" (a column per class probability; the input checks'
    warnings joined by "; "; an abstention has an empty label, abstain true and its reason)."""
    if fmt == "json":
        return json.dumps([r.to_dict() for r in results], indent=2)
    if fmt != "csv":
        raise PneumoError(f"unknown format {fmt!r}; use json or csv")
    classes = list(results[0].class_probabilities) if results else []
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["path", "probability", "label", "abstain", "threshold", *(f"p_{c}" for c in classes), "warnings", "abstain_reason"])
    for r in results:
        probabilities = (f"{r.class_probabilities[c]:.6f}" for c in classes)
        row = [r.path, f"{r.probability:.6f}", r.label or "", "true" if r.abstain else "false", f"{r.threshold:.6g}", *probabilities]
        writer.writerow([*row, "; ".join(r.warnings), r.abstain_reason or ""])
    return buffer.getvalue()
