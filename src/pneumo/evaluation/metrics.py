"""Classification metrics with patient-clustered bootstrap intervals (scikit-learn underneath).

A NaN or infinite probability is an error (`pneumo.inference.base.non_finite_error`), never a
score: `NaN >= threshold` is False, so it would count as a NORMAL verdict and quietly move every
metric. `finite_probabilities` names the film where the caller knows it.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy.stats import rankdata
from sklearn.metrics import (
    average_precision_score,
    confusion_matrix,
    log_loss,
    roc_auc_score,
)

from pneumo.errors import check_whole
from pneumo.inference.base import non_finite_error

__all__ = [
    "MAX_BOOT",
    "SUMMARY_METRICS",
    "binary_metrics",
    "bootstrap_intervals",
    "check_n_boot",
    "finite_probabilities",
    "multiclass_metrics",
    "summary_metrics",
]

MAX_BOOT = 1_000_000  # resamples; far past any use (each is a Python-level pass), short of a run that never ends

SUMMARY_METRICS = ("accuracy", "precision", "recall", "specificity", "f1", "roc_auc", "pr_auc")


def _ratio(a: float, b: float) -> float:
    return float(a / b) if b else float("nan")


def finite_probabilities(prob: Sequence[float] | np.ndarray, names: Sequence[object] | None = None) -> np.ndarray:
    """`prob` as a float array ([N] or [N, n_classes]), or the PneumoError of `non_finite_error`
    for the first film holding NaN or inf: named from `names` (paths) when given, else by position.

    Example:
        >>> finite_probabilities([0.2, float("nan")], ["a.jpeg", "b.jpeg"])  # PneumoError naming b.jpeg
    """
    p = np.asarray(prob, dtype=float)
    bad = ~np.isfinite(p)
    if bad.any():
        i = int(np.argwhere(bad)[0][0])
        where = str(names[i]) if names is not None and i < len(names) else f"film {i + 1} of {len(p)}"
        raise non_finite_error(where, p[i].tolist())
    return p


def binary_metrics(y_true: Sequence[int], prob: Sequence[float], threshold: float = 0.5) -> dict:
    """Metrics of P(positive) against 0/1 labels, the label being `prob >= threshold`.

    ROC and PR AUC are NaN when only one class is present. A NaN or infinite probability is a
    PneumoError naming its position (`finite_probabilities`).
    """
    y = np.asarray(y_true, dtype=int)
    p = finite_probabilities(prob)
    pred = (p >= threshold).astype(int)
    tn, fp, fn, tp = confusion_matrix(y, pred, labels=[0, 1]).ravel()
    precision, recall = _ratio(tp, tp + fp), _ratio(tp, tp + fn)
    both = len(np.unique(y)) == 2
    return {
        "n": len(y),
        "positives": int(y.sum()),
        "threshold": float(threshold),
        "accuracy": _ratio(tp + tn, len(y)),
        "precision": precision,
        "recall": recall,
        "specificity": _ratio(tn, tn + fp),
        "f1": _ratio(2 * precision * recall, precision + recall) if tp else 0.0,
        "roc_auc": float(roc_auc_score(y, p)) if both else float("nan"),
        "pr_auc": float(average_precision_score(y, p)) if both else float("nan"),
        "loss": float(log_loss(y, np.clip(p, 1e-7, 1 - 1e-7), labels=[0, 1])) if len(y) else float("nan"),
        "confusion_matrix": [[int(tn), int(fp)], [int(fn), int(tp)]],
    }


def summary_metrics(y: np.ndarray, p: np.ndarray, threshold: float) -> dict[str, float]:
    """SUMMARY_METRICS with plain numpy: the values of `binary_metrics`, much faster, for the bootstrap.

    ROC AUC is the Mann-Whitney statistic with tied scores counted half; PR AUC is average
    precision over the distinct scores, as scikit-learn computes it.
    """
    p = finite_probabilities(p)
    pos = y == 1
    n_pos, n = int(pos.sum()), len(y)
    pred = p >= threshold
    tp, fp = int((pred & pos).sum()), int((pred & ~pos).sum())
    tn, fn = n - n_pos - fp, n_pos - tp
    precision, recall = _ratio(tp, tp + fp), _ratio(tp, tp + fn)
    out = {
        "accuracy": _ratio(tp + tn, n),
        "precision": precision,
        "recall": recall,
        "specificity": _ratio(tn, tn + fp),
        "f1": _ratio(2 * precision * recall, precision + recall) if tp else 0.0,
        "roc_auc": float("nan"),
        "pr_auc": float("nan"),
    }
    if 0 < n_pos < n:
        out["roc_auc"] = float((rankdata(p)[pos].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * (n - n_pos)))
        order = np.argsort(-p, kind="stable")
        sorted_p, hits = p[order], pos[order]
        last_of_tie = np.r_[np.flatnonzero(np.diff(sorted_p)), n - 1]  # cut only between distinct scores
        tps = np.cumsum(hits)[last_of_tie]
        precisions = tps / (last_of_tie + 1)
        out["pr_auc"] = float(np.sum(np.diff(np.r_[0, tps]) / n_pos * precisions))
    return out


def check_n_boot(value: object, name: str = "n_boot") -> int:
    """The bootstrap resamples a caller asked for, refused at its entry unless a whole number in [0, MAX_BOOT]."""
    return check_whole(name, value, minimum=0, maximum=MAX_BOOT)


def bootstrap_intervals(
    y_true: Sequence[int],
    prob: Sequence[float],
    threshold: float,
    groups: Sequence[str] | None = None,
    n_boot: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> dict[str, list[float]]:
    """Percentile bootstrap intervals for the summary metrics.

    With `groups` (patient ids), whole patients are resampled, so several images of one
    child do not count as independent evidence.
    """
    y, p = np.asarray(y_true, dtype=int), finite_probabilities(prob)
    rng = np.random.default_rng(seed)
    if groups is None:
        clusters = [np.array([i]) for i in range(len(y))]
    else:
        _, inverse = np.unique(np.asarray(groups), return_inverse=True)
        order = np.argsort(inverse, kind="stable")
        clusters = np.split(order, np.cumsum(np.bincount(inverse))[:-1])
    samples: dict[str, list[float]] = {k: [] for k in SUMMARY_METRICS}
    for _ in range(n_boot):
        pick = np.concatenate([clusters[i] for i in rng.integers(0, len(clusters), len(clusters))])
        m = summary_metrics(y[pick], p[pick], threshold)
        for k in SUMMARY_METRICS:
            samples[k].append(m[k])
    alpha = (1 - level) / 2
    out = {}
    for k, values in samples.items():
        v = np.asarray(values)
        v = v[~np.isnan(v)]
        out[k] = [float(np.quantile(v, alpha)), float(np.quantile(v, 1 - alpha))] if len(v) else [float("nan")] * 2
    return out


def multiclass_metrics(y_true: Sequence[int], probs: np.ndarray, classes: Sequence[str]) -> dict:
    """Accuracy, per-class precision/recall/F1 and one-vs-rest ROC AUC, macro averages."""
    y = np.asarray(y_true, dtype=int)
    probs = finite_probabilities(probs)  # argmax would pick a NaN's column
    pred = probs.argmax(axis=1)
    cm = confusion_matrix(y, pred, labels=list(range(len(classes))))
    per_class = {}
    for i, name in enumerate(classes):
        tp = cm[i, i]
        precision, recall = _ratio(tp, cm[:, i].sum()), _ratio(tp, cm[i, :].sum())
        present = 0 < (y == i).sum() < len(y)
        per_class[name] = {
            "precision": precision,
            "recall": recall,
            "f1": _ratio(2 * precision * recall, precision + recall) if tp else 0.0,
            "roc_auc": float(roc_auc_score(y == i, probs[:, i])) if present else float("nan"),
            "support": int((y == i).sum()),
        }
    macro = {k: float(np.nanmean([c[k] for c in per_class.values()])) for k in ("precision", "recall", "f1", "roc_auc")}
    report = {"accuracy": _ratio(np.trace(cm), cm.sum()), "macro": macro, "per_class": per_class, "confusion_matrix": cm.tolist()}
    sick = y > 0
    if len(classes) == 3 and sick.any():
        # among pneumonia films, bacterial or viral by the larger of the two (Kermany et al. report 0.907)
        report["bacteria_vs_virus_accuracy"] = float((np.asarray(probs)[sick, 1:].argmax(axis=1) + 1 == y[sick]).mean())
    return report


def wilson_interval(successes: int, n: int, z: float = 1.959964) -> tuple[float, float]:
    """Wilson score interval of a proportion (95% by default): sound at 0 or n successes, where the normal one is not."""
    if n <= 0:
        return (float("nan"), float("nan"))
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return (float(max(0.0, centre - half)), float(min(1.0, centre + half)))
