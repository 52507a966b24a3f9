"""Re-calibrating a model to a new site on a few of its own labelled films.

A model's probabilities and threshold were set on the training hospital's films; another
site's films differ (exposure, framing, population, prevalence), so the same threshold lands
elsewhere. `calibrate_to_site` refits the temperature (likelihood on the site's films, with a
prior that keeps a few films from moving it far) and
the threshold (the middle of the plateau of best balanced accuracy) on at least 20 films of
each class, measures the new operating point with patient-clustered 95% intervals, and writes
a model folder that every command takes as `--model DIR`. The weights are not touched.

Example:
    >>> result = calibrate_to_site("site_films/", model=None, out="models/site")
    >>> result.threshold, result.report["ci95"]["specificity"]
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from pneumo.data.cache import decode_dataset
from pneumo.data.layout import discover
from pneumo.errors import PneumoError
from pneumo.evaluation.calibration import apply_temperature, expected_calibration_error, fit_temperature
from pneumo.evaluation.report import metrics_report, write_report
from pneumo.evaluation.threshold import shift_threshold
from pneumo.inference.base import Model
from pneumo.inference.predict import load_model
from pneumo.inference.torch_backend import TorchModel
from pneumo.evaluation.overlap import copy_training_films
from pneumo.models.folders import prepare_output_folder
from pneumo.models.checkpoint import copy_checkpoint, read_meta, write_meta
from pneumo.tasks import BINARY, CLASSES, pneumonia_probability
from pneumo.viz.figures import reliability_plot

__all__ = ["MIN_PER_CLASS", "WIDE_INTERVAL", "SiteCalibration", "calibrate_to_site"]

MIN_PER_CLASS = 20  # fewer films per class cannot place a threshold with any confidence
# prior spread of log T: forty films move the temperature by more than x1.6 only when they insist
TEMPERATURE_PRIOR_SD = 0.5
WIDE_INTERVAL = 0.2  # a 95% interval of sensitivity or specificity wider than this is warned about
POOR = 0.8  # a site sensitivity or specificity below this, even in-sample, says the model does not separate its films


@dataclass
class SiteCalibration:
    """What `calibrate_to_site` did: the new model folder, operating point and report, and warnings."""

    out: Path
    temperature: float
    threshold: float
    report: dict[str, Any]
    warnings: list[str]


def _warnings(report: dict[str, Any]) -> list[str]:
    """What the user must know about the new operating point: it is uncertain, or poor."""
    out = []
    for name, what in (("recall", "sensitivity"), ("specificity", "specificity")):
        lo, hi = report["ci95"][name]
        if not report[name] >= POOR:
            out.append(
                f"{what} on these films is only {report[name]:.2f} at the best threshold: the model does not separate this site's "
                "films well; check that they are frontal chest films of children, or do not use the model here"
            )
        elif not hi - lo <= WIDE_INTERVAL:
            out.append(f"the 95% interval of {what} is {lo:.2f}-{hi:.2f}, wider than {WIDE_INTERVAL}: the new operating point is uncertain; label more films")
    return out


def calibrate_to_site(
    data: str | Path,
    model: str | Path | Model | None,
    out: str | Path,
    split: str | None = None,
    min_per_class: int = MIN_PER_CLASS,
    n_boot: int = 1000,
    overwrite: bool = False,
    progress: bool = True,
) -> SiteCalibration:
    """Refit temperature and threshold on a site's labelled films and write the result as a model folder.

    Args:
        data: the site's films: NORMAL/ and PNEUMONIA/ folders, a Kaggle-style root (with
            `split`) or a CSV manifest; at least `min_per_class` readable films of each class.
        model: a run folder or checkpoint, or None for the bundled model (needs PyTorch: the
            folder written is a checkpoint; `pneumo export` makes its ONNX).
        out: the model folder to write (`--model out` then works everywhere).
    """
    loaded = load_model(model)
    if not isinstance(loaded, TorchModel) or loaded.folder is None:
        raise PneumoError("calibrate writes a PyTorch checkpoint and needs one to start from: give --model a run or checkpoint folder (pip install 'pneumo[train]' for the bundled one)")
    if Path(out).expanduser().resolve() == loaded.folder.resolve():
        raise PneumoError(f"--out {out} is the model being calibrated; write the calibrated model to another folder")
    records = discover(data).split(split)
    counts = {c: sum(r.label == c for r in records) for c in CLASSES}
    if min(counts.values()) < min_per_class:
        raise PneumoError(
            f"calibrating to a site needs at least {min_per_class} labelled films of each class; {data} has "
            f"{counts['NORMAL']} NORMAL and {counts['PNEUMONIA']} PNEUMONIA: add films of the class that is short"
        )
    out = prepare_output_folder(out, overwrite)  # an old output is replaced only if it is pneumo's, and says so
    dataset = decode_dataset(records, loaded.image_size, progress=progress)
    records = dataset.records
    y = np.array([r.target(BINARY) for r in records])
    before = loaded.class_probabilities(dataset.images)
    p_before = pneumonia_probability(before)
    # fitted on the two-class view: the site's labels are NORMAL / PNEUMONIA whatever the model's task
    relative = fit_temperature(np.stack([1 - p_before, p_before], axis=1), y, prior_sd=TEMPERATURE_PRIOR_SD)
    after = apply_temperature(before, relative)
    p_after = pneumonia_probability(after)
    threshold = shift_threshold({"none": p_after}, y)
    report = metrics_report(records, after, loaded.task, threshold, n_boot, seed=0)
    report["ece_before"] = expected_calibration_error(y, p_before)
    report["before"] = {"threshold": loaded.threshold, "temperature": loaded.meta.temperature, "at_old_threshold": metrics_report(records, before, loaded.task, loaded.threshold, 0, 0)}
    warnings = _warnings(report)
    site = {
        "data": str(data), "split": split, "fingerprint": dataset.fingerprint, "n": len(records),
        "n_normal": int((y == 0).sum()), "n_pneumonia": int((y == 1).sum()), "skipped": len(dataset.skipped),
        "previous_threshold": loaded.threshold, "previous_temperature": loaded.meta.temperature,
        "recall": report["recall"], "specificity": report["specificity"], "accuracy": report["accuracy"], "ece": report["ece"],
        "ci95": {k: report["ci95"][k] for k in ("recall", "specificity", "accuracy")}, "warnings": warnings,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    copy_checkpoint(loaded.folder, out)
    copy_training_films(loaded.folder, out)
    meta = read_meta(out).replace(threshold=threshold, threshold_method="site", temperature=loaded.meta.temperature * relative, site_calibration=site)
    write_meta(out, meta)
    write_report({**report, "site": site}, out / "site_calibration.json")
    reliability_plot(report["reliability"], report["ece"], out / "reliability.png", title=f"{Path(str(data)).name}: after calibration")
    return SiteCalibration(out, meta.temperature, threshold, report, warnings)
