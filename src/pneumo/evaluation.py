"""Judge a model on a labelled set: metrics at its stored threshold (and at 0.5), with 95% CIs."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from pneumo.checkpoint import LoadedModel
from pneumo.data.cache import decode_dataset
from pneumo.data.layout import discover
from pneumo.metrics import binary_metrics, bootstrap_intervals, multiclass_metrics
from pneumo.plots import confusion_plot, roc_plot
from pneumo.prediction import load_model
from pneumo.robustness import shift_report, shifted_probabilities

__all__ = ["evaluate", "write_report"]


def evaluate(
    data: str | Path,
    model: str | Path | LoadedModel | None = None,
    split: str | None = None,
    n_boot: int = 1000,
    seed: int = 0,
    plots_dir: str | Path | None = None,
    cache_dir: str | Path | None = None,
    progress: bool = True,
    shifts: bool = False,
    strict: bool = False,
) -> dict[str, Any]:
    """Evaluate a model on a class-folder directory, a Kaggle-style root (with `split`) or a manifest.

    The report has top-level n, threshold, accuracy, precision, recall, specificity, f1,
    roc_auc, pr_auc, loss, confusion_matrix; `ci95` (patient-clustered bootstrap), `at_0.5`,
    and `predictions`, one {path, label, probability} per image; `skipped`, the files that
    could not be read (with `strict`, the first one is an error instead); with `shifts`, also
    `shifted`: the same metrics under simulated acquisition shifts (see robustness.py).

    Example:
        >>> report = evaluate("chest_xray/test", model="runs/seed")
        >>> report["accuracy"], report["ci95"]["accuracy"]
    """
    loaded = load_model(model)
    dataset = decode_dataset(discover(data).split(split), loaded.image_size, cache_dir, progress=progress, strict=strict)
    records, images, data_fingerprint = dataset.records, dataset.images, dataset.fingerprint
    probs = loaded.class_probabilities(images, progress=progress)
    y = np.array([r.target("binary") for r in records])
    p = 1 - probs[:, 0]
    threshold = loaded.threshold
    report: dict[str, Any] = binary_metrics(y, p, threshold)
    report["ci95"] = bootstrap_intervals(y, p, threshold, groups=[r.patient_id for r in records], n_boot=n_boot, seed=seed)
    report["at_0.5"] = binary_metrics(y, p, 0.5)
    if loaded.task == "pathogen" and all(r.label == "NORMAL" or r.pathogen for r in records):
        report["pathogen"] = multiclass_metrics([r.target("pathogen") for r in records], probs, loaded.meta["classes"])
    if shifts:
        report["shifted"] = shift_report(shifted_probabilities(loaded.pneumonia_probability, images, unshifted=p), y, threshold)
    report["model"] = {k: loaded.meta.get(k) for k in ("architecture", "task", "image_size", "threshold", "epoch", "data_fingerprint", "pneumo_version")}
    report["data"] = {"source": str(data), "split": split, "fingerprint": data_fingerprint}
    report["skipped"] = [{"path": path, "error": message} for path, message in dataset.skipped]
    report["predictions"] = [
        {"path": str(r.path), "label": r.label, "probability": float(prob)} for r, prob in zip(records, p)
    ]
    if plots_dir is not None:
        plots_dir = Path(plots_dir)
        roc_plot(y, p, plots_dir / "roc.png", threshold, title=f"ROC, n={len(y)}")
        confusion_plot(report["confusion_matrix"], ["NORMAL", "PNEUMONIA"], plots_dir / "confusion.png", title=f"threshold {threshold:.3g}")
    return report


def write_report(report: dict[str, Any], path: str | Path) -> Path:
    """Write an evaluation report as JSON (NaN written as null)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)

    def clean(v: Any) -> Any:
        if isinstance(v, float) and np.isnan(v):
            return None
        if isinstance(v, dict):
            return {k: clean(x) for k, x in v.items()}
        if isinstance(v, list):
            return [clean(x) for x in v]
        return v

    path.write_text(json.dumps(clean(report), indent=2))
    return path
