"""What a run reports: each epoch's history row, and at the end the chosen model with its
threshold, the validation report, the feature statistics for the input checks and the plots."""

from __future__ import annotations

import logging
import platform
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file
from sklearn.metrics import log_loss

from pneumo.config import AugmentConfig, Config
from pneumo.data.augment import augment_batch
from pneumo.data.layout import Record
from pneumo.data.split import shared_patients
from pneumo.evaluation.calibration import (
    apply_temperature,
    choose_temperature,
    expected_calibration_error,
    fit_calibration_prior,
)
from pneumo.evaluation.metrics import binary_metrics, wilson_interval
from pneumo.evaluation.report import metrics_report, write_report
from pneumo.evaluation.robustness import FAULTS, SHIFTS, apply_fault, apply_shift, fault_copies, shift_report, shifted_probabilities
from pneumo.evaluation.threshold import choose_threshold
from pneumo.explain.gradcam import cam_evidence, frame_share
from pneumo.inference.features import feature_width, save_feature_check
from pneumo.inference.torch_backend import feature_rows
from pneumo.inference.fitting import CheckFit, fit_feature_check
from pneumo.inference.torch_backend import TorchModel
from pneumo.evaluation.overlap import save_training_films
from pneumo.models.checkpoint import save_checkpoint
from pneumo.models.meta import WEIGHTS, CheckpointMeta
from pneumo.tasks import BINARY, Task, pneumonia_probability
from pneumo.training import distributed as dist
from pneumo.training.data import OutlierFilms, TrainingData, outlier_films
from pneumo.training.parts import RunParts
from pneumo.training.run_dir import REPORT
from pneumo.training.state import RunSoFar
from pneumo.viz.figures import (
    confusion_plot,
    history_panels,
    reliability_plot,
    roc_plot,
)

__all__ = [
    "FEATURE_STATS_MIN_IMAGES",
    "OperatingPoint",
    "ValidationPass",
    "epoch_metrics",
    "finish_run",
    "input_check_line",
    "operating_point",
    "validation_report",
    "validation_row",
    "write_figures",
    "write_model",
]

logger = logging.getLogger(__name__)

FEATURE_STATS_MIN_IMAGES = 100  # fewer training images give no usable feature distribution
INPUT_CHECK_FILMS = 600  # training films the input check is fitted on: at most this, or twice its feature width (see _check_sample)


def epoch_metrics(prefix: str, targets: np.ndarray, probs: np.ndarray, task: Task) -> dict[str, float]:
    """History columns: accuracy, precision, recall, ROC AUC of P(pneumonia) at 0.5 (and 3-class accuracy)."""
    m = binary_metrics(targets > 0, pneumonia_probability(probs), 0.5)
    row = {f"{prefix}_{k}": m[k] for k in ("accuracy", "precision", "recall", "roc_auc")}
    if task is not BINARY:
        row[f"{prefix}_accuracy_3class"] = float((probs.argmax(1) == targets).mean())
    return row


def validation_row(val_probs: np.ndarray, y_val: np.ndarray, task: Task) -> dict[str, float]:
    """The validation half of a history row: loss and `epoch_metrics`."""
    row = {"val_loss": float(log_loss(y_val, np.clip(val_probs, 1e-7, 1), labels=list(range(len(task.classes)))))}
    return row | epoch_metrics("val", y_val, val_probs, task)


def validation_report(
    val: list[Record], probs: np.ndarray, threshold: float, task: Task, train: list[Record], n_boot: int, seed: int
) -> dict[str, Any]:
    """Metrics of the chosen model on validation, with patient-clustered 95% CIs and the leak check."""
    report = metrics_report(val, probs, task, threshold, n_boot, seed)
    y, p = np.array([r.target(BINARY) for r in val]), pneumonia_probability(probs)
    leaked = shared_patients(train, val)
    seen = np.array([r.patient_id in leaked for r in val])
    report["leak"] = {
        "patients_in_both": len(leaked),
        "val_images_of_patients_seen_in_train": int(seen.sum()),
        "seen": binary_metrics(y[seen], p[seen], threshold) if seen.any() else None,
        "unseen": binary_metrics(y[~seen], p[~seen], threshold) if (~seen).any() else None,
    }
    return report


def _calibration_summary(
    method: str, temperature: float, raw: dict[str, np.ndarray], calibrated: dict[str, np.ndarray], y: np.ndarray
) -> dict[str, Any]:
    """ECE before and after the temperature, on validation and pooled over its shifted copies."""

    def ece(probs: dict[str, np.ndarray], names: list[str]) -> float:
        return expected_calibration_error(np.tile(y, len(names)), np.concatenate([pneumonia_probability(probs[n]) for n in names]))

    every = list(raw)
    shifted = len(every) > 1  # without shifted copies there is nothing pooled to report
    return {
        "method": method,
        "temperature": temperature,
        "ece_before": ece(raw, ["none"]),
        "ece_after": ece(calibrated, ["none"]),
        "ece_shifted_before": ece(raw, every) if shifted else None,
        "ece_shifted_after": ece(calibrated, every) if shifted else None,
    }


def _cam_frame_share(net: torch.nn.Module, meta: CheckpointMeta, images: torch.Tensor, n: int = 256) -> float:
    """Mean share of Grad-CAM evidence in the outer frame of up to `n` validation images (see
    `pneumo.explain.gradcam.frame_share`): the development signal's shortcut score."""
    shares = frame_share(cam_evidence(TorchModel(net, meta), images[:n].cpu().numpy()))
    return float(np.mean(shares[np.isfinite(shares)])) if np.isfinite(shares).any() else float("nan")  # NaN: no evidence anywhere


def _machine(device: torch.device) -> str:
    gpu = f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else ""
    processes = f" x {dist.world_size()} processes" if dist.launched() else ""
    return f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, {device}{gpu}{processes}"


@dataclass
class ValidationPass:
    """One pass of an epoch's weights over validation: class probabilities and feature rows."""

    epoch: int
    probabilities: np.ndarray  # [N, n_classes], temperature 1
    rows: np.ndarray  # [N, D] FeatureTap rows


@dataclass
class OperatingPoint:
    """A model's calibration and threshold as chosen on validation, and what it gives there."""

    meta: CheckpointMeta  # with temperature, threshold and validation metrics set
    report: dict[str, Any]  # the validation report
    probability: np.ndarray  # calibrated P(pneumonia) of each validation image
    val_rows: np.ndarray | None = None  # the validation images' feature rows (FeatureTap), for the input check
    shifted_rows: dict[str, np.ndarray] | None = None  # the same under each simulated shift, where they were made


def operating_point(
    model: torch.nn.Module,
    meta: CheckpointMeta,
    data: TrainingData,
    calibration: str,
    threshold_method: Any,
    n_boot: int,
    seed: int,
    batch_size: int = 256,
    progress: bool = False,
    done: ValidationPass | None = None,
) -> OperatingPoint:
    """Calibrate a network on validation and its shifted copies, choose its threshold, and measure it there.
    `done`: a pass these weights just made over validation (the last epoch's), so it is not made again."""
    task = meta.task_spec
    uncalibrated = TorchModel(model, meta.replace(temperature=1.0, logit_offset=0.0))
    shifted_rows: dict[str, np.ndarray] = {}

    def predict(images: np.ndarray) -> np.ndarray:  # a shifted copy: its probabilities, and its feature rows for the input check
        probs, rows = feature_rows(uncalibrated, images, batch_size)
        shifted_rows[list(SHIFTS)[len(shifted_rows)]] = rows.astype(np.float32)
        return probs

    # the unshifted pass also taps the feature rows the input check is fitted on (one pass, not two)
    if done is not None:
        unshifted, val_rows = done.probabilities, done.rows
    else:
        unshifted, val_rows = feature_rows(uncalibrated, data.x_val, batch_size, progress)

    y_val = (data.y_val > 0).astype(int)
    # the shifted copies (14 more passes over validation, most of the end of a run) only where the
    # recipe chooses by them; `pneumo evaluate RUN/split.csv --split val --model RUN --shifts` gives them for any run
    uses_shifts = calibration == "shift" or threshold_method == "shift"
    x_val = data.x_val.cpu().numpy()
    raw = (
        shifted_probabilities(predict, x_val, progress=progress, unshifted=unshifted) if uses_shifts else {"none": unshifted}
    )  # class probabilities, per shift
    temperature = choose_temperature(calibration, raw, data.y_val)
    calibrated = {name: apply_temperature(probs, temperature) for name, probs in raw.items()}
    shifted = {name: pneumonia_probability(probs) for name, probs in calibrated.items()}
    threshold = choose_threshold(threshold_method, y_val, shifted)
    report = validation_report(data.val, calibrated["none"], threshold, task, data.train, n_boot, seed)
    report["shifted"] = shift_report(shifted, y_val, threshold) if uses_shifts else None
    report["calibration"] = _calibration_summary(calibration, temperature, raw, calibrated, y_val)
    report["cam_frame_share"] = _cam_frame_share(model, meta, data.x_val)
    report["threshold_method"] = str(threshold_method)
    prior = fit_calibration_prior(shifted, y_val, threshold, temperature)  # what `pneumo calibrate` starts a site from
    report["calibration_prior"] = prior.to_dict()
    chosen = meta.replace(
        threshold=threshold,
        temperature=temperature,
        logit_offset=0.0,
        calibration_prior=prior.to_dict(),
        threshold_method=str(threshold_method),
        val_metrics={k: report[k] for k in ("accuracy", "precision", "recall", "specificity", "f1", "roc_auc", "pr_auc", "loss")},
        val_ci95=report["ci95"],
        created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
    )
    return OperatingPoint(chosen, report, shifted["none"], val_rows, shifted_rows or None)


def input_check_report(fit: CheckFit, outliers: OutlierFilms | None) -> dict[str, Any]:
    """What the input check is and what it was measured to do, for the validation report."""
    out: dict[str, Any] = {
        "probe": fit.check.has_probe,
        "distance_limit": fit.check.distance_limit,
        "notes": fit.notes,
        "copy_flagged": fit.copy_flagged,
        "fault_flagged": fit.fault_flagged,
    }
    if fit.check.has_probe and outliers is not None:
        out |= {
            "probe_limit": fit.check.probe_limit,
            "outliers": str(outliers.folder),
            "val_false_alarms": fit.val_flagged,
            "n_val": fit.n_val,
            "val_false_alarm_rate": fit.val_flagged / fit.n_val,
            "val_false_alarm_ci95": wilson_interval(fit.val_flagged, fit.n_val),
            "outliers_caught": fit.outliers_caught,
            "n_outliers": fit.n_outliers,
            "n_outlier_sources": fit.n_sources,
            "outlier_catch_rate": fit.outliers_caught / fit.n_outliers,
            "outlier_catch_ci95": wilson_interval(fit.outliers_caught, fit.n_outliers),
            "how": "false alarms: validation children, the probe's limit fitted on the other half; caught: outlier films scored by a probe fitted without their source (5 folds)",
        }
    return out


def input_check_line(check: dict[str, Any] | None) -> str:
    """One line on what the input check was measured to do, for the log."""
    if not check:
        return "input check: none (too few training images)"
    if "val_false_alarm_rate" not in check:
        return "input check: the feature distance only (" + "; ".join(check["notes"]) + ")"
    lo, hi = check["val_false_alarm_ci95"]
    return (
        f"input check: {check['val_false_alarm_rate']:.1%} of validation children flagged (95% CI {lo:.1%}-{hi:.1%}), "
        f"{check['outlier_catch_rate']:.0%} of {check['n_outliers']} outlier films from unseen sources caught"
    )


def write_model(
    folder: Path,
    model: torch.nn.Module,
    point: OperatingPoint,
    data: TrainingData,
    outliers: OutlierFilms | None = None,
    batch_size: int = 256,
    progress: bool = False,
    augment: AugmentConfig | None = None,
) -> dict[str, Any] | None:
    """Save the chosen model at its operating point with its input check, fitted on (a sample of) its
    training films, their augmented (`augment`, the recipe's) and shifted copies and, given outlier films,
    its validation films; returns what the check was measured to do."""
    meta = point.meta
    save_checkpoint(folder, model, meta)
    save_training_films(folder, data.train, data.val)
    if data.n_train < FEATURE_STATS_MIN_IMAGES:
        return None
    sample = _check_sample(data.x_train, feature_width(model))
    fit = fit_feature_check(
        TorchModel(model, meta),
        sample,
        data.x_val,
        outliers.images if outliers is not None else None,
        outliers.sources if outliers is not None else None,
        batch_size=batch_size,
        progress=progress,
        val_rows=point.val_rows,
        train_views=inlier_views(sample, augment),
        shifted_val_rows=point.shifted_rows,
        train_faults=fault_copies(_numpy(sample)) if outliers is not None else None,
        val_faults={name: apply_fault(_numpy(data.x_val), name) for name in FAULTS} if outliers is not None else None,
    )
    save_feature_check(fit.check, folder)
    return input_check_report(fit, outliers)


def _numpy(images: torch.Tensor | np.ndarray) -> np.ndarray:
    return np.asarray(images.cpu() if isinstance(images, torch.Tensor) else images)


def inlier_views(images: torch.Tensor | np.ndarray, augment: AugmentConfig | None, seed: int = 0) -> np.ndarray:
    """Copies of training films the input check's probe counts as training-like: each film once under the
    recipe's augmentation (where it has one) and once under one of the simulated acquisition and framing
    shifts (`pneumo.evaluation.robustness`, drawn per film), so that a film taken or framed a little
    differently is not mistaken for another site's."""
    x = torch.as_tensor(_numpy(images))
    views = []
    if augment is not None and augment.enabled:
        generator = torch.Generator().manual_seed(seed)
        for start in range(0, len(x), 256):
            batch = augment_batch(x[start : start + 256].unsqueeze(1).float().div(255), augment, generator)
            views.append(batch.mul(255).round().to(torch.uint8)[:, 0].numpy())
    which = np.random.default_rng(seed).integers(0, len(SHIFTS), len(x))
    shifted = np.empty(tuple(x.shape), dtype=np.uint8)
    for k, name in enumerate(SHIFTS):
        if (which == k).any():
            shifted[which == k] = apply_shift(x[which == k].numpy(), name, seed=k)
    views.append(shifted)
    return np.concatenate(views)


def _check_sample(images: torch.Tensor, width: int) -> torch.Tensor:
    """At most max(INPUT_CHECK_FILMS, 2 x `width`) training films, drawn with a fixed seed: the
    feature pass over them is most of the end of a run, and a few hundred describe the training
    distribution about as well as all of them, where the distance's covariance has a few features
    (64 for the notebook's network; a ResNet-18's 512 get 1,024 films). Fitted on 400 / 600 / 1,000 /
    all 4,172 films of a 1-epoch seed-recipe model, two draws each: 11, 7 / 9, 8 / 7, 10 / 10 of
    1,044 validation children flagged, and 115, 116 / 114, 117 / 118, 116 / 114 of 124 adult films
    from unseen sources caught (an earlier model: 600 / 1,000 / 2,000 / all gave 9 / 8 / 6 / 9 and
    117 / 119 / 119 / 120)."""
    n = max(INPUT_CHECK_FILMS, 2 * width)
    if len(images) <= n:
        return images
    keep = np.sort(np.random.default_rng(0).permutation(len(images))[:n])
    return images[torch.as_tensor(keep, device=images.device)]


def write_figures(folder: Path, point: OperatingPoint, data: TrainingData, title: str) -> None:
    """roc.png, confusion.png and reliability.png of a model on validation."""
    report, meta = point.report, point.meta
    roc_plot((data.y_val > 0).astype(int), point.probability, folder / "roc.png", meta.threshold, title=f"Validation ROC ({title})")
    confusion_plot(
        report["confusion_matrix"], ["NORMAL", "PNEUMONIA"], folder / "confusion.png", title=f"Validation, threshold {meta.threshold:.3g}"
    )
    reliability_plot(
        report["reliability"], report["ece"], folder / "reliability.png", title=f"Validation, temperature {meta.temperature:.3g}"
    )


def finish_run(
    config: Config,
    run_dir: Path,
    parts: RunParts,
    data: TrainingData,
    so_far: RunSoFar,
    meta: CheckpointMeta,
    started: float,
    n_boot: int,
    progress: bool = False,
    last_pass: ValidationPass | None = None,
) -> dict[str, Any]:
    """The run's model (best or last epoch) with a temperature and threshold chosen on validation,
    saved to `model/` with its feature statistics; the validation report, plots, and val_report.json last.
    `last_pass`: the last epoch's validation pass, reused when that epoch is the chosen one."""
    model = parts.eval_model
    chosen_epoch = so_far.best_epoch if config.select == "best" and so_far.best_epoch else config.epochs
    if chosen_epoch != config.epochs:
        model.load_state_dict(load_file(str(run_dir / "checkpoints" / "best" / WEIGHTS)))
    done = last_pass if last_pass is not None and last_pass.epoch == chosen_epoch else None
    point = operating_point(
        model,
        meta.replace(epoch=chosen_epoch),
        data,
        config.calibration,
        parts.distillation.threshold if config.threshold == "teacher" and parts.distillation is not None else config.threshold,
        n_boot,
        config.seed,
        config.eval_batch_size,
        progress,
        done,
    )
    report = point.report
    report |= {"epoch": chosen_epoch, "seconds_total": time.perf_counter() - started}
    report["seconds_per_epoch"] = float(np.mean([r["seconds"] for r in so_far.history]))
    report["machine"] = _machine(data.x_val.device)
    report["distillation"] = parts.distillation.summary() if parts.distillation is not None else None
    outliers = outlier_films(config, progress)
    report["input_check"] = write_model(run_dir / "model", model, point, data, outliers, config.eval_batch_size, progress, config.augment)
    logger.info(input_check_line(report["input_check"]))
    history_panels(so_far.history, run_dir / "history.png", chosen=chosen_epoch)
    write_figures(run_dir, point, data, f"{config.split} split")
    write_report(report, run_dir / REPORT)  # last: its presence says the run finished
    return report
