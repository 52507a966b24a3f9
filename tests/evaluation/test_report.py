"""The metrics block every report shares, and the one way a report is written to disk.

The records are real ones (file names, patients and pathogens of the small real folder); the
probabilities are made up, so each test knows what the report must say about them.
"""

from __future__ import annotations

import dataclasses
import errno
import json
import math
import os
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from pneumo.data.layout import Record, discover
from pneumo.errors import PneumoError
from pneumo.evaluation.metrics import binary_metrics
from pneumo.evaluation.report import metrics_report, write_report
from pneumo.tasks import BINARY, PATHOGEN


@pytest.fixture(scope="module")
def records(small_folder: Path) -> list[Record]:
    """The 120 real records of the small folder (60 NORMAL, 60 PNEUMONIA, with bacteria/virus from their names)."""
    return sorted(discover(small_folder).split(None), key=lambda r: str(r.path))


def _binary_probs(records: list[Record], seed: int = 0) -> np.ndarray:
    """[N, 2] probabilities that separate the classes well but not perfectly."""
    y = np.array([r.target(BINARY) for r in records])
    rng = np.random.default_rng(seed)
    p = np.clip(0.3 + 0.4 * y + rng.normal(0, 0.2, len(y)), 0.01, 0.99)
    return np.c_[1 - p, p]


def _pathogen_probs(records: list[Record], seed: int = 0) -> np.ndarray:
    """[N, 3] probabilities leaning towards each record's own class."""
    y = np.array([r.target(PATHOGEN) for r in records])
    rng = np.random.default_rng(seed)
    logits = rng.normal(0, 1, (len(y), 3))
    logits[np.arange(len(y)), y] += 2.0
    e = np.exp(logits)
    return e / e.sum(1, keepdims=True)


# --- metrics_report ------------------------------------------------------------------------------


def test_the_metrics_are_those_of_p_pneumonia_at_the_threshold_and_at_half(records: list[Record]) -> None:
    probs = _binary_probs(records)
    y, p = [r.target(BINARY) for r in records], probs[:, 1]
    report = metrics_report(records, probs, BINARY, threshold=0.62, n_boot=30, seed=0)
    at_threshold, at_half = binary_metrics(y, p, 0.62), binary_metrics(y, p, 0.5)
    assert {k: report[k] for k in at_threshold} == at_threshold
    assert report["at_0.5"] == at_half and report["threshold"] == 0.62
    assert report["recall"] < report["at_0.5"]["recall"]  # a higher threshold calls fewer films pneumonia
    assert "pathogen" not in report  # a binary model has no three-class block


def test_intervals_resample_whole_patients_and_repeat_with_the_seed(records: list[Record]) -> None:
    probs = _binary_probs(records)
    a = metrics_report(records, probs, BINARY, 0.5, n_boot=40, seed=3)
    assert a["ci95"] == metrics_report(records, probs, BINARY, 0.5, n_boot=40, seed=3)["ci95"]
    assert a["ci95"] != metrics_report(records, probs, BINARY, 0.5, n_boot=40, seed=4)["ci95"]
    for key in ("accuracy", "recall", "specificity", "roc_auc"):
        lo, hi = a["ci95"][key]
        assert lo <= a[key] <= hi, key
    # the small folder has one film per patient; ten films per patient are ten times fewer independent
    # samples, and the intervals widen: the patient ids are what is resampled
    assert len({r.patient_id for r in records}) == len(records)
    grouped = [dataclasses.replace(r, patient_id=f"patient{i // 10}") for i, r in enumerate(records)]
    b = metrics_report(grouped, probs, BINARY, 0.5, n_boot=40, seed=3)
    for key in ("accuracy", "specificity"):
        assert np.diff(b["ci95"][key])[0] > np.diff(a["ci95"][key])[0], key
    assert {k: b[k] for k in ("accuracy", "roc_auc")} == {k: a[k] for k in ("accuracy", "roc_auc")}  # the estimates do not move


def test_calibration_is_measured_on_p_pneumonia(records: list[Record]) -> None:
    probs = _binary_probs(records)
    report = metrics_report(records, probs, BINARY, 0.5, n_boot=10, seed=0)
    assert 0 <= report["ece"] <= 1
    bins = report["reliability"]
    assert len(bins) == 10 and sum(b["n"] for b in bins) == len(records)
    # probabilities that are all 0.5 on a half-pneumonia set are perfectly calibrated
    flat = np.full((len(records), 2), 0.5)
    assert metrics_report(records, flat, BINARY, 0.5, n_boot=10, seed=0)["ece"] == pytest.approx(0.0, abs=1e-12)


def test_a_pathogen_model_gets_its_three_class_block(records: list[Record]) -> None:
    assert all(r.label == "NORMAL" or r.pathogen for r in records)
    probs = _pathogen_probs(records)
    report = metrics_report(records, probs, PATHOGEN, 0.5, n_boot=10, seed=0)
    block = report["pathogen"]
    assert set(block["per_class"]) == {"normal", "bacteria", "virus"}
    assert sum(c["support"] for c in block["per_class"].values()) == len(records)
    assert block["accuracy"] > 1 / 3  # the made-up probabilities lean to the right class
    # the binary metrics use P(pneumonia) = 1 - P(normal), not the largest class
    binary = binary_metrics([r.target(BINARY) for r in records], 1 - probs[:, 0], 0.5)
    assert report["roc_auc"] == binary["roc_auc"] and report["confusion_matrix"] == binary["confusion_matrix"]


def test_the_three_class_block_is_left_out_when_a_pneumonia_film_has_no_pathogen(records: list[Record]) -> None:
    probs = _pathogen_probs(records)
    i = next(i for i, r in enumerate(records) if r.label == "PNEUMONIA")
    unknown = [*records[:i], dataclasses.replace(records[i], pathogen=None), *records[i + 1 :]]
    report = metrics_report(unknown, probs, PATHOGEN, 0.5, n_boot=10, seed=0)
    assert "pathogen" not in report and report["n"] == len(records)


def test_a_non_finite_probability_names_the_real_file(records: list[Record]) -> None:
    probs = _binary_probs(records)
    probs[7] = [0.5, np.inf]
    with pytest.raises(PneumoError, match=rf"non-finite probability for {re.escape(str(records[7].path))} \(\[0\.5, inf\]\)"):
        metrics_report(records, probs, BINARY, 0.5, n_boot=10, seed=0)


# --- write_report --------------------------------------------------------------------------------


def test_a_report_of_one_class_is_written_with_null_where_a_metric_has_no_value(records: list[Record], tmp_path: Path) -> None:
    """Only NORMAL films: ROC AUC and its interval do not exist, and JSON has no NaN: they are null."""
    normal = [r for r in records if r.label == "NORMAL"]
    report = metrics_report(normal, _binary_probs(normal), BINARY, 0.5, n_boot=20, seed=0)
    assert math.isnan(report["roc_auc"])
    path = write_report(report, tmp_path / "report.json")
    text = path.read_text()
    written = json.loads(text, parse_constant=lambda c: pytest.fail(f"{c} in the JSON"))
    assert written["roc_auc"] is None and written["ci95"]["roc_auc"] == [None, None]
    assert written["accuracy"] == report["accuracy"] and written["confusion_matrix"] == report["confusion_matrix"]
    empty = [b for b in written["reliability"] if b["n"] == 0]
    assert empty and all(b["mean_probability"] is None and b["observed"] is None for b in empty)


def test_nan_becomes_null_at_any_depth_and_nothing_else_changes(tmp_path: Path) -> None:
    report: dict[str, Any] = {
        "a": float("nan"),
        "b": [1.5, float("nan"), {"c": np.float64("nan"), "d": "text"}],
        "e": {"f": {"g": float("nan")}},
        "n": 3,
        "ok": True,
        "none": None,
        "x": 0.1,
    }
    path = write_report(report, str(tmp_path / "r.json"))
    assert isinstance(path, Path) and path == tmp_path / "r.json"
    assert json.loads(path.read_text()) == {
        "a": None,
        "b": [1.5, None, {"c": None, "d": "text"}],
        "e": {"f": {"g": None}},
        "n": 3,
        "ok": True,
        "none": None,
        "x": 0.1,
    }
    assert math.isnan(report["a"]) and math.isnan(report["e"]["f"]["g"])  # the caller's report is not changed


def test_a_report_is_strict_json_whatever_numbers_it_holds(tmp_path: Path) -> None:
    """NaN in a tuple (wilson_interval returns one), infinities and numpy scalars: all plain JSON."""
    report = {"ci95": (float("nan"), 0.5), "inf": float("inf"), "n": np.int64(3), "p": np.float32(0.25), "bad": np.float64("-inf")}
    path = write_report(report, tmp_path / "r.json")
    assert json.loads(path.read_text(), parse_constant=lambda c: pytest.fail(f"{c} in the JSON")) == {
        "ci95": [None, 0.5],
        "inf": None,
        "n": 3,
        "p": 0.25,
        "bad": None,
    }


def test_a_report_replaces_the_previous_one_whole_and_leaves_no_temporary_file(tmp_path: Path) -> None:
    path = tmp_path / "r.json"
    write_report({"n": 1, "long": "x" * 1000}, path)
    write_report({"n": 2}, path)
    assert json.loads(path.read_text()) == {"n": 2}
    assert os.listdir(tmp_path) == ["r.json"]


def test_a_failed_write_keeps_the_previous_report(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write_report({"n": 1}, tmp_path / "r.json")

    def disk_full(*_: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr("os.replace", disk_full)
    with pytest.raises(PneumoError, match=r"r\.json.*No space left on device"):
        write_report({"n": 2}, path)
    monkeypatch.undo()
    assert json.loads(path.read_text()) == {"n": 1} and os.listdir(tmp_path) == ["r.json"]


def test_a_value_json_cannot_hold_fails_before_anything_is_written(tmp_path: Path) -> None:
    path = write_report({"n": 1}, tmp_path / "r.json")
    with pytest.raises(TypeError):
        write_report({"n": {1, 2}}, path)  # a set has no JSON form
    assert json.loads(path.read_text()) == {"n": 1} and os.listdir(tmp_path) == ["r.json"]
