"""The metrics block every report shares (evaluation of a model, a run's validation report):
metrics at the threshold and at 0.5, patient-clustered bootstrap intervals, and the
pathogen task's three-class metrics where the labels allow."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from pneumo.data.layout import Record
from pneumo.evaluation.calibration import expected_calibration_error, reliability_bins
from pneumo.evaluation.metrics import binary_metrics, bootstrap_intervals, finite_probabilities, multiclass_metrics
from pneumo.tasks import BINARY, Task, pneumonia_probability
from pneumo.utils.atomic import atomic_write

__all__ = ["metrics_report", "write_report"]


def metrics_report(records: Sequence[Record], probs: np.ndarray, task: Task, threshold: float, n_boot: int, seed: int) -> dict[str, Any]:
    """Metrics of P(pneumonia) against the records' labels at `threshold`, with 95% intervals
    (whole patients resampled) and at 0.5, the calibration error (`ece`, `reliability` per
    bin); `pathogen` too for a pathogen model when every
    pneumonia record names its pathogen.

    Args:
        records: the labelled images, in the order of `probs`.
        probs: class probabilities [N, n_classes] (normal first).

    Raises:
        PneumoError: a probability is NaN or infinite; the message names the record's file.
    """
    probs = finite_probabilities(probs, [r.path for r in records])
    y = np.array([r.target(BINARY) for r in records])
    p = pneumonia_probability(probs)
    report: dict[str, Any] = binary_metrics(y, p, threshold)
    report["ci95"] = bootstrap_intervals(y, p, threshold, groups=[r.patient_id for r in records], n_boot=n_boot, seed=seed)
    report["at_0.5"] = binary_metrics(y, p, 0.5)
    report["ece"] = expected_calibration_error(y, p)
    report["reliability"] = reliability_bins(y, p)
    if task is not BINARY and all(r.label == "NORMAL" or r.pathogen for r in records):
        report["pathogen"] = multiclass_metrics([r.target(task) for r in records], probs, list(task.classes))
    return report


def write_report(report: dict[str, Any], path: str | Path) -> Path:
    """Write a report as strict JSON (NaN and infinities written as null, numpy numbers as plain
    ones, tuples as lists), atomically."""

    def clean(v: Any) -> Any:
        if isinstance(v, np.generic):
            v = v.item()
        if isinstance(v, float) and not np.isfinite(v):
            return None
        if isinstance(v, dict):
            return {k: clean(x) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return [clean(x) for x in v]
        return v

    return atomic_write(path, json.dumps(clean(report), indent=2, allow_nan=False))
