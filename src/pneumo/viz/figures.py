"""Every picture pneumo draws: batch grid, training history, ROC, confusion matrix, Grad-CAM overlay.

Figures are `matplotlib.figure.Figure` objects drawn straight to PNG files, never through
pyplot: importing this module leaves a notebook's matplotlib backend and open figures alone.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import matplotlib
import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
from sklearn.metrics import roc_curve

from pneumo.utils.atomic import atomic_write

__all__ = ["batch_grid", "history_panels", "roc_plot", "confusion_plot", "reliability_plot", "cam_figure", "heatmap_rgba", "cam_overlay"]

CAM_OPACITY = 0.45  # of the heatmap over the image, in every overlay pneumo draws


def _subplots(rows: int = 1, columns: int = 1, figsize: tuple[float, float] = (6.4, 4.8), squeeze: bool = True) -> tuple[Figure, Any]:
    """A figure of its own (no pyplot state) and its axes, as `plt.subplots` gives them."""
    fig = Figure(figsize=figsize)
    return fig, fig.subplots(rows, columns, squeeze=squeeze)


def _save(fig: Figure, path: str | Path) -> Path:
    """Write the figure as PNG, atomically."""
    return atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight"))


def batch_grid(images: Sequence[np.ndarray], titles: Sequence[str], path: str | Path, columns: int = 4) -> Path:
    """The notebook's grid of a batch: images in gray with their class as the title."""
    rows = -(-len(images) // columns)
    fig, axes = _subplots(rows, columns, figsize=(2.5 * columns, 2.6 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, image, title in zip(axes.flat, images, titles):
        ax.imshow(image, cmap="gray", vmin=0, vmax=255)
        ax.set_title(title, fontsize=10)
    return _save(fig, path)


def history_panels(history: Sequence[dict], path: str | Path, chosen: int | None = None) -> Path:
    """The notebook's four panels (precision, recall, accuracy, loss), train vs validation per
    epoch; `chosen`, the epoch the run's model comes from, is marked (it need not be the last)."""
    epochs = [row["epoch"] for row in history]
    fig, axes = _subplots(1, 4, figsize=(20, 3.6))
    for ax, metric in zip(axes, ("precision", "recall", "accuracy", "loss")):
        ax.plot(epochs, [row[f"train_{metric}"] for row in history], marker=".", label="train")
        ax.plot(epochs, [row[f"val_{metric}"] for row in history], marker=".", label="val")
        if chosen is not None:
            ax.axvline(chosen, color="C3", lw=1.5, ls="--", label=f"model (epoch {chosen})")
        ax.set_title(f"Model {metric}")
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel(metric)
        ax.grid(alpha=0.3)
        ax.legend()
    return _save(fig, path)


def roc_plot(y_true: Sequence[int], prob: Sequence[float], path: str | Path, threshold: float | None = None, title: str = "ROC") -> Path:
    """ROC curve with its AUC, and the operating point at the decision threshold."""
    from sklearn.metrics import roc_auc_score

    y, p = np.asarray(y_true), np.asarray(prob)
    fig, ax = _subplots(figsize=(4.5, 4.5))
    ax.plot([0, 1], [0, 1], color="0.7", lw=1, ls="--")
    if len(np.unique(y)) == 2:
        fpr, tpr, _ = roc_curve(y, p)
        ax.plot(fpr, tpr, lw=2, label=f"AUC {roc_auc_score(y, p):.3f}")
        if threshold is not None:
            pred = p >= threshold
            sens = pred[y == 1].mean()
            spec = 1 - pred[y == 0].mean()
            ax.plot(1 - spec, sens, "o", color="C3", label=f"threshold {threshold:.3g}")
        ax.legend(loc="lower right")
    ax.set_xlabel("1 - specificity")
    ax.set_ylabel("sensitivity")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    return _save(fig, path)


def confusion_plot(matrix: Sequence[Sequence[int]], classes: Sequence[str], path: str | Path, title: str = "Confusion matrix") -> Path:
    """Counts with row percentages, true class down the side."""
    cm = np.asarray(matrix)
    fig, ax = _subplots(figsize=(1.6 * len(classes) + 1.5, 1.4 * len(classes) + 1.2))
    ax.imshow(cm, cmap="Blues")
    rows = cm.sum(axis=1, keepdims=True).clip(min=1)
    for i in range(cm.shape[0]):
        for j in range(cm.shape[1]):
            dark = cm[i, j] > cm.max() / 2
            ax.text(j, i, f"{cm[i, j]}\n{100 * cm[i, j] / rows[i, 0]:.0f}%", ha="center", va="center", color="white" if dark else "black")
    ax.set_xticks(range(len(classes)), classes)
    ax.set_yticks(range(len(classes)), classes)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    return _save(fig, path)


def reliability_plot(bins: Sequence[dict], ece: float, path: str | Path, title: str = "Reliability") -> Path:
    """Observed share of pneumonia against the mean predicted P(pneumonia) per bin (from
    `pneumo.evaluation.calibration.reliability_bins`), the diagonal for perfect calibration,
    the gaps shaded, and a histogram of how many images fall in each bin."""
    fig, (ax, counts) = _subplots(2, 1, figsize=(4.6, 5.6))
    fig.subplots_adjust(hspace=0.08)
    used = [b for b in bins if b["n"]]
    centres = [(b["low"] + b["high"]) / 2 for b in bins]
    width = bins[0]["high"] - bins[0]["low"] if bins else 0.1
    ax.plot([0, 1], [0, 1], color="0.6", lw=1, ls="--", label="perfect calibration")
    ax.bar(
        [b["mean_probability"] for b in used],
        [b["observed"] - b["mean_probability"] for b in used],
        bottom=[b["mean_probability"] for b in used],
        width=width * 0.8,
        color="C3",
        alpha=0.25,
        label="gap",
    )
    ax.plot([b["mean_probability"] for b in used], [b["observed"] for b in used], "o-", color="C0", label="observed")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_ylabel("observed share with pneumonia")
    ax.set_title(f"{title}\nECE {ece:.3f} ({len(bins)} bins)")
    ax.legend(loc="upper left", fontsize=8)
    ax.grid(alpha=0.3)
    ax.tick_params(labelbottom=False)
    counts.bar(centres, [b["n"] for b in bins], width=width * 0.9, color="0.5")
    counts.set_xlim(0, 1)
    counts.set_yscale("symlog")
    counts.set_xlabel("predicted P(pneumonia)")
    counts.set_ylabel("images")
    return _save(fig, path)


def cam_figure(
    image: np.ndarray,
    heatmap: np.ndarray,
    probability: float,
    label: str,
    threshold: float,
    out: str | Path,
    title: str | None = None,
    scale: str = "Grad-CAM x P(pneumonia)",
) -> Path:
    """The image beside its Grad-CAM overlay, with a colour bar and the verdict in the title.

    The heatmap is stretched over the whole image whatever its size, which is right for
    pneumo's models: they see the image resized to a square without keeping its aspect ratio.

    Args:
        image: uint8 [H, W], shown in gray on both panels.
        heatmap: float [h, w] in [0, 1] (`pneumo.explain.gradcam.grad_cam`, weighted by P(pneumonia)
            by default, so a confident NORMAL shows no red).
        probability: P(pneumonia).
        label: the label at the threshold.
        threshold: the model's decision threshold.
        out: PNG file to write.
        title: first title line, e.g. the file name.
        scale: what the heat's scale is, written on the colour bar.
    """
    height, width = image.shape
    extent = (-0.5, width - 0.5, height - 0.5, -0.5)
    fig, axes = _subplots(1, 2, figsize=(9, 4.6))
    for ax in axes:
        ax.imshow(image, cmap="gray", vmin=0, vmax=255, extent=extent)
        ax.axis("off")
    axes[0].set_title("image", fontsize=10)
    overlay = axes[1].imshow(heatmap, cmap="jet", vmin=0, vmax=1, alpha=CAM_OPACITY, extent=extent, interpolation="bilinear")
    axes[1].set_title("Grad-CAM for PNEUMONIA", fontsize=10)
    fig.colorbar(overlay, ax=axes[1], fraction=0.046, pad=0.04, label=f"evidence for pneumonia ({scale})")
    verdict = f"{label}: P(pneumonia) = {probability:.3f} (threshold {threshold:.3g})"
    fig.suptitle(f"{title}\n{verdict}" if title else verdict, fontsize=11)
    return _save(fig, out)


def heatmap_rgba(heatmap: np.ndarray) -> np.ndarray:
    """A Grad-CAM map in [0, 1] as uint8 RGBA [H, W, 4] in `cam_figure`'s colour map, with alpha
    following the heat, so regions that did not raise the score stay clear when a page lays it
    over the image (at any opacity it chooses)."""
    heat = np.clip(heatmap, 0, 1)
    rgba = matplotlib.colormaps["jet"](heat)
    rgba[..., 3] = heat
    return (rgba * 255).round().astype(np.uint8)


def cam_overlay(image: np.ndarray, heatmap: np.ndarray, opacity: float = CAM_OPACITY) -> np.ndarray:
    """uint8 RGB [H, W, 3]: the gray image with `heatmap_rgba` of the (same-size) heatmap laid over it at `opacity`."""
    gray = np.repeat(image[..., None].astype(np.float32), 3, axis=2)
    rgba = heatmap_rgba(heatmap).astype(np.float32) / 255
    alpha = opacity * rgba[..., 3:]
    return ((1 - alpha) * gray + alpha * rgba[..., :3] * 255).round().astype(np.uint8)
