"""Judge a model on a labelled set: metrics at its stored threshold (and at 0.5), with 95% CIs."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from pneumo.data.cache import decode_dataset
from pneumo.data.layout import DATA_ACCEPTED, discover
from pneumo.errors import check_flag, check_path, check_text, check_whole
from pneumo.evaluation.metrics import check_n_boot
from pneumo.evaluation.overlap import model_folder, overlap_warning, training_overlap
from pneumo.evaluation.report import metrics_report
from pneumo.evaluation.robustness import shift_report, shifted_probabilities
from pneumo.inference.base import Model
from pneumo.inference.checks import check_inputs, warning_kind
from pneumo.inference.loading import check_model, load_model
from pneumo.tasks import BINARY, pneumonia_probability
from pneumo.viz.figures import confusion_plot, reliability_plot, roc_plot

__all__ = ["evaluate"]


def _abstention(records: list, probs: np.ndarray, warnings: list[list[str]], model: Model, n_boot: int, seed: int) -> dict[str, Any]:
    """How many films get no verdict, why (the first warning's kind), and the metrics on the rest."""
    held = np.array([bool(w) for w in warnings])
    reasons = Counter(warning_kind(w[0]) for w in warnings if w)
    judged = [r for r, h in zip(records, held) if not h]
    out: dict[str, Any] = {
        "n": int(held.sum()),
        "share": float(held.mean()) if len(held) else float("nan"),
        "reasons": dict(reasons.most_common()),
    }
    out["judged"] = metrics_report(judged, probs[~held], model.task, model.threshold, n_boot, seed) if judged else None
    return out


def evaluate(
    data: str | Path,
    *,
    model: str | Path | Model | None = None,
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

    Every film goes through the input checks as in `predict`; `abstention` counts the films the
    model would give no verdict, why, and the metrics on the films it judges. The report has top-level n, threshold, accuracy, precision, recall, specificity, f1,
    roc_auc, pr_auc, loss, confusion_matrix, ece (expected calibration error, 10 bins) and
    reliability (per bin); `ci95` (patient-clustered bootstrap), `at_0.5`,
    and `predictions`, one {path, label, probability} per image; `skipped`, the files that
    could not be read (with `strict`, the first one is an error instead); with `shifts`, also
    `shifted`: the same metrics under simulated acquisition shifts (see robustness.py);
    `training_overlap`, how many films the model trained and validated on (by content), and
    `warnings`, which says when its training films are among them.

    Example:
        >>> report = evaluate("chest_xray/test", model="runs/seed")
        >>> report["accuracy"], report["ci95"]["accuracy"]
    """
    check_path("data", data, what=DATA_ACCEPTED)
    check_model("model", model)
    check_text("split", split, optional=True)
    n_boot, seed = check_n_boot(n_boot), check_whole("seed", seed, minimum=0)
    check_path("plots_dir", plots_dir, what="a folder for the plots", optional=True)
    if cache_dir != "":  # "" is the default cache, as in a config
        check_path("cache_dir", cache_dir, what="a folder for the decoded-image cache", optional=True)
    progress, shifts, strict = check_flag("progress", progress), check_flag("shifts", shifts), check_flag("strict", strict)
    loaded = load_model(model)
    dataset = decode_dataset(discover(data).split(split), loaded.image_size, cache_dir, progress=progress, strict=strict)
    records, images = dataset.records, dataset.images
    probs, scores = loaded.probabilities_and_scores(images, progress=progress)
    warnings = check_inputs(dataset.infos, scores, loaded.feature_check)
    y, p = [r.target(BINARY) for r in records], pneumonia_probability(probs)
    threshold = loaded.threshold
    report = metrics_report(records, probs, loaded.task, threshold, n_boot, seed)
    report["abstention"] = _abstention(records, probs, warnings, loaded, n_boot, seed)
    if shifts:
        report["shifted"] = shift_report(shifted_probabilities(loaded.pneumonia_probability, images, unshifted=p), y, threshold)
    meta = loaded.meta
    report["model"] = {
        "architecture": meta.architecture,
        "task": meta.task,
        "image_size": meta.image_size,
        "threshold": meta.threshold,
        "epoch": meta.epoch,
        "data_fingerprint": meta.data_fingerprint,
        "pneumo_version": meta.pneumo_version,
    }
    report["data"] = {"source": str(data), "split": split, "fingerprint": dataset.fingerprint}
    folder = model_folder(model)
    report["training_overlap"] = training_overlap(folder, records, cache_dir)
    run = folder.parent if folder is not None and (folder.parent / "split.csv").is_file() else None
    warning = overlap_warning(report["training_overlap"], str(run) if run is not None else None)
    report["warnings"] = [warning] if warning else []
    report["skipped"] = [{"path": path, "error": message} for path, message in dataset.skipped]
    # `true_label` is what the data says; `predicted` the verdict at the threshold (None when the model abstains),
    # as `Prediction.label` is: one word, one meaning
    report["predictions"] = [
        {
            "path": str(r.path),
            "true_label": r.label,
            "predicted": None if w else loaded.label(float(prob), str(r.path)),
            "probability": float(prob),
            "abstain": bool(w),
            "warnings": w,
        }
        for r, prob, w in zip(records, p, warnings)
    ]
    if plots_dir is not None:
        plots_dir = Path(plots_dir)
        roc_plot(y, p, plots_dir / "roc.png", threshold, title=f"ROC, n={len(records)}")
        confusion_plot(report["confusion_matrix"], ["NORMAL", "PNEUMONIA"], plots_dir / "confusion.png", title=f"threshold {threshold:.3g}")
        reliability_plot(report["reliability"], report["ece"], plots_dir / "reliability.png", title=f"Calibration, n={len(records)}")
    return report
