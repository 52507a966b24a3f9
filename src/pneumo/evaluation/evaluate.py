"""Judge a model on a labelled set: metrics at its stored threshold (and at 0.5), with 95% CIs."""

from __future__ import annotations

import warnings
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pneumo.data.cache import decode_dataset
from pneumo.data.layout import DATA_ACCEPTED, Record, discover
from pneumo.errors import check_flag, check_path, check_text, check_whole
from pneumo.evaluation.metrics import check_n_boot
from pneumo.evaluation.overlap import model_folder, overlap_warning, training_overlap
from pneumo.evaluation.report import metrics_report
from pneumo.evaluation.robustness import shift_report, shifted_probabilities
from pneumo.inference.base import Model
from pneumo.inference.checks import abstain_reason, check_inputs, warning_kind
from pneumo.inference.loading import check_model, load_model
from pneumo.tasks import BINARY, pneumonia_probability
from pneumo.viz.figures import confusion_plot, reliability_plot, roc_plot

__all__ = ["Abstention", "Evaluation", "FilmResult", "evaluate"]


@dataclass(frozen=True)
class FilmResult:
    """One film of an evaluation. `true_label` is what the data says; `predicted` the verdict at the
    threshold, None where the model abstains (as `Prediction.label` is): one word, one meaning."""

    path: str
    true_label: str
    predicted: str | None
    probability: float  # P(pneumonia)
    abstain: bool
    warnings: tuple[str, ...]  # the input checks' (`InputWarning`s, their kind kept); the first is why it abstains

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "true_label": self.true_label,
            "predicted": self.predicted,
            "probability": self.probability,
            "abstain": self.abstain,
            "warnings": list(self.warnings),
        }


@dataclass(frozen=True)
class Abstention:
    """The films the model gives no verdict (`inference.checks.abstain_reason`, as `predict` does):
    how many, their share, how many for each kind of first warning, and the metrics on the films it
    judges (`metrics_report`'s form; None when it judges none)."""

    n: int
    share: float
    reasons: dict[str, int]  # most common first
    judged: dict[str, Any] | None

    def to_dict(self) -> dict[str, Any]:
        return {"n": self.n, "share": self.share, "reasons": dict(self.reasons), "judged": self.judged}


# the report's JSON keys that are not the attribute's name
_KEYS = {"at_half": "at_0.5"}
_ATTRIBUTES = {key: name for name, key in _KEYS.items()}
# the fields `metrics_report` fills, in its order (`pathogen` aside: not every report has it)
_METRIC_FIELDS = (
    "n", "positives", "threshold", "accuracy", "precision", "recall", "specificity",
    "f1", "roc_auc", "pr_auc", "loss", "confusion_matrix", "ci95", "at_half", "ece", "reliability",
)  # fmt: skip


@dataclass(frozen=True)
class Evaluation:
    """What `evaluate` found. The attributes are the report's keys (`at_half` is its `at_0.5`);
    `to_dict()` is the report as `pneumo evaluate --json` writes it, which scripts and benchmarks read.

    The headline metrics are at the model's `threshold` over every film, the abstained ones too
    (`abstention.judged` has them on the judged films only); `ci95` holds their patient-clustered
    bootstrap intervals ([low, high] per metric), `at_half` the same metrics at 0.5.
    """

    n: int
    positives: int
    threshold: float
    accuracy: float
    precision: float
    recall: float
    specificity: float
    f1: float
    roc_auc: float  # NaN when one class is absent
    pr_auc: float
    loss: float
    confusion_matrix: list[list[int]]  # [[TN, FP], [FN, TP]]
    ci95: dict[str, list[float]]
    at_half: dict[str, Any]
    ece: float  # expected calibration error, 10 bins
    reliability: list[dict[str, float]]  # per bin
    pathogen: dict[str, Any] | None  # three-class metrics, for a pathogen model on films that name their pathogen
    abstention: Abstention
    shifted: dict[str, dict[str, float]] | None  # per simulated acquisition shift (`shifts=True`), else None
    model: dict[str, Any]  # what was evaluated: architecture, task, threshold, epoch...
    data: dict[str, Any]  # on what: source, split, fingerprint
    training_overlap: dict[str, Any] | None  # films the model trained and validated on, by content; None when unknown
    warnings: list[str]  # said when its training films are among them
    skipped: list[tuple[str, str]]  # (path, why) of the files that could not be read
    predictions: list[FilmResult]

    def to_dict(self) -> dict[str, Any]:
        """The report as plain data, in the keys and order `--json` has always written."""
        out: dict[str, Any] = {_KEYS.get(name, name): getattr(self, name) for name in _METRIC_FIELDS}
        if self.pathogen is not None:
            out["pathogen"] = self.pathogen
        out["abstention"] = self.abstention.to_dict()
        if self.shifted is not None:
            out["shifted"] = self.shifted
        out |= {"model": self.model, "data": self.data, "training_overlap": self.training_overlap, "warnings": list(self.warnings)}
        out["skipped"] = [{"path": path, "error": message} for path, message in self.skipped]
        out["predictions"] = [film.to_dict() for film in self.predictions]
        return out

    def __getitem__(self, key: str) -> Any:
        """Deprecated, to go in the release after 0.1: `report["accuracy"]` as when `evaluate` returned
        a dict, with a DeprecationWarning; read `report.accuracy`, or `report.to_dict()[key]`."""
        name = _ATTRIBUTES.get(key, key)
        hint = f"report.{name}" if name.isidentifier() and hasattr(self, name) else f"report.to_dict()[{key!r}]"
        warnings.warn(
            f"evaluate() returns an Evaluation: report[{key!r}] is deprecated and goes in the next release; use {hint}",
            DeprecationWarning,
            stacklevel=2,
        )
        return self.to_dict()[key]

    __iter__ = None  # not a mapping: `in` and `list()` fail plainly rather than through __getitem__(0)


def _abstention(records: list[Record], probs: np.ndarray, reasons: list[str | None], model: Model, n_boot: int, seed: int) -> Abstention:
    """How many films get no verdict, why (the kind of `abstain_reason`), and the metrics on the rest."""
    held = np.array([reason is not None for reason in reasons], dtype=bool)
    kinds = Counter(warning_kind(reason) for reason in reasons if reason is not None)
    judged = [r for r, h in zip(records, held) if not h]
    return Abstention(
        n=int(held.sum()),
        share=float(held.mean()) if len(held) else float("nan"),
        reasons=dict(kinds.most_common()),
        judged=metrics_report(judged, probs[~held], model.task, model.threshold, n_boot, seed) if judged else None,
    )


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
) -> Evaluation:
    """Evaluate a model on a class-folder directory, a Kaggle-style root (with `split`) or a manifest.

    Every film goes through the input checks as in `predict`; `abstention` counts the films the
    model would give no verdict, why, and the metrics on the films it judges. The `Evaluation` has
    the metrics at the model's threshold (n, accuracy, precision, recall, specificity, f1, roc_auc,
    pr_auc, loss, confusion_matrix, ece and reliability), their 95% intervals (`ci95`, whole
    patients resampled), the same at 0.5 (`at_half`); `predictions`, one `FilmResult` per film;
    `skipped`, the files that could not be read (with `strict`, the first one is an error instead);
    with `shifts`, `shifted`: the metrics under simulated acquisition shifts (see robustness.py);
    `training_overlap`, how many films the model trained and validated on (by content), and
    `warnings`, which says when its training films are among them. `to_dict()` is the JSON report.

    Example:
        >>> report = evaluate("chest_xray/test", model="runs/seed")
        >>> report.accuracy, report.ci95["accuracy"]
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
    warned = check_inputs(dataset.infos, scores, loaded.feature_check)
    reasons = [abstain_reason(w) for w in warned]
    y, p = [r.target(BINARY) for r in records], pneumonia_probability(probs)
    threshold = loaded.threshold
    metrics = metrics_report(records, probs, loaded.task, threshold, n_boot, seed)
    meta = loaded.meta
    folder = model_folder(model)
    overlap = training_overlap(folder, records, cache_dir)
    run = folder.parent if folder is not None and (folder.parent / "split.csv").is_file() else None
    warning = overlap_warning(overlap, str(run) if run is not None else None)
    report = Evaluation(
        **{name: metrics[_KEYS.get(name, name)] for name in _METRIC_FIELDS},
        pathogen=metrics.get("pathogen"),
        abstention=_abstention(records, probs, reasons, loaded, n_boot, seed),
        shifted=shift_report(shifted_probabilities(loaded.pneumonia_probability, images, unshifted=p), y, threshold) if shifts else None,
        model={
            "architecture": meta.architecture,
            "task": meta.task,
            "image_size": meta.image_size,
            "threshold": meta.threshold,
            "epoch": meta.epoch,
            "data_fingerprint": meta.data_fingerprint,
            "pneumo_version": meta.pneumo_version,
        },
        data={"source": str(data), "split": split, "fingerprint": dataset.fingerprint},
        training_overlap=overlap,
        warnings=[warning] if warning else [],
        skipped=list(dataset.skipped),
        predictions=[
            FilmResult(
                path=str(r.path),
                true_label=r.label,
                predicted=None if reason is not None else loaded.label(float(prob), str(r.path)),
                probability=float(prob),
                abstain=reason is not None,
                warnings=tuple(w),
            )
            for r, prob, w, reason in zip(records, p, warned, reasons)
        ],
    )
    if plots_dir is not None:
        plots_dir = Path(plots_dir)
        roc_plot(y, p, plots_dir / "roc.png", threshold, title=f"ROC, n={len(records)}")
        confusion_plot(report.confusion_matrix, ["NORMAL", "PNEUMONIA"], plots_dir / "confusion.png", title=f"threshold {threshold:.3g}")
        reliability_plot(report.reliability, report.ece, plots_dir / "reliability.png", title=f"Calibration, n={len(records)}")
    return report
