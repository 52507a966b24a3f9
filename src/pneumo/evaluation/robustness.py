"""A validation signal that is not saturated: the validation images under fixed acquisition and framing shifts.

Validation carved from the training split is too easy (ROC AUC ~0.99 for every sensible
model), so it cannot rank recipes or place a threshold. Other hospitals differ in contrast,
exposure, sharpness, noise and framing, and in their share of sick children; this module
replays those differences on the validation images, deterministically, and reports how the
model's operating point moves.

Framing matters most: every film, whatever its original shape, is squashed to a square, so a
film cut tighter or looser, or of another aspect ratio, shows the lungs at another place and
scale; and a side marker or a label in a corner is not anatomy. A model that learned the
frame instead of the lungs moves under these shifts.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from pneumo.evaluation.metrics import binary_metrics
from pneumo.utils.progress import progress_bar

__all__ = [
    "SHIFTS",
    "ACQUISITION_SHIFTS",
    "FRAMING_SHIFTS",
    "FAULTS",
    "apply_fault",
    "apply_shift",
    "fault_copies",
    "shifted_probabilities",
    "shift_report",
    "prevalence_accuracy",
]


def _contrast(c: float) -> Callable[[torch.Tensor, torch.Generator], torch.Tensor]:
    return lambda x, g: (x - x.mean(dim=(1, 2, 3), keepdim=True)) * c + x.mean(dim=(1, 2, 3), keepdim=True)


def _gamma(v: float) -> Callable[[torch.Tensor, torch.Generator], torch.Tensor]:
    return lambda x, g: x.clamp(1e-4, 1).pow(v)


def _blur(sigma_fraction: float) -> Callable[[torch.Tensor, torch.Generator], torch.Tensor]:
    def blur(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        sigma = max(sigma_fraction * x.shape[-1], 0.5)
        radius = int(3 * sigma)
        t = torch.arange(-radius, radius + 1, dtype=x.dtype, device=x.device)
        k = torch.exp(-(t**2) / (2 * sigma**2))
        k = k / k.sum()
        x = F.conv2d(F.pad(x, (radius, radius, 0, 0), mode="replicate"), k.view(1, 1, 1, -1))
        return F.conv2d(F.pad(x, (0, 0, radius, radius), mode="replicate"), k.view(1, 1, -1, 1))

    return blur


def _noise(sigma: float) -> Callable[[torch.Tensor, torch.Generator], torch.Tensor]:
    return lambda x, g: x + sigma * torch.randn(x.shape, generator=g, dtype=x.dtype)


def _zoom(keep: float) -> Callable[[torch.Tensor, torch.Generator], torch.Tensor]:
    def zoom(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        side = x.shape[-1]
        crop = int(round(side * keep))
        start = (side - crop) // 2
        return F.interpolate(
            x[..., start : start + crop, start : start + crop], size=(side, side), mode="bilinear", align_corners=False, antialias=True
        )

    return zoom


def _crop(top: float, bottom: float, left: float, right: float) -> Callable[[torch.Tensor, torch.Generator], torch.Tensor]:
    """Cut fractions of the side off each edge and squash what is left back to the square, as a film framed that way would be."""

    def crop(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        side = x.shape[-1]
        cut_top, cut_bottom, cut_left, cut_right = (int(round(f * side)) for f in (top, bottom, left, right))
        kept = x[..., cut_top : side - cut_bottom, cut_left : side - cut_right]
        return F.interpolate(kept, size=(side, side), mode="bilinear", align_corners=False, antialias=True)

    return crop


def _looser(margin: float) -> Callable[[torch.Tensor, torch.Generator], torch.Tensor]:
    """A film framed wider: a black margin of `margin` x side around the image, shrunk back to the square."""

    def pad(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        side = x.shape[-1]
        m = int(round(margin * side))
        return F.interpolate(F.pad(x, (m, m, m, m)), size=(side, side), mode="bilinear", align_corners=False, antialias=True)

    return pad


def _marker(size: float) -> Callable[[torch.Tensor, torch.Generator], torch.Tensor]:
    """A bright side marker (a solid square, `size` x side) in the upper-left corner, as an 'R' or 'L' plate leaves."""

    def mark(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        side = x.shape[-1]
        m, inset = max(2, int(round(size * side))), max(1, int(round(0.03 * side)))
        x = x.clone()
        x[..., inset : inset + m, inset : inset + m] = 1.0
        return x

    return mark


ACQUISITION_SHIFTS: dict[str, Callable[[torch.Tensor, torch.Generator], torch.Tensor]] = {
    "low contrast (x0.7)": _contrast(0.7),
    "high contrast (x1.3)": _contrast(1.3),
    "darker (gamma 1.5)": _gamma(1.5),
    "brighter (gamma 0.67)": _gamma(0.67),
    "blur (sigma 1% of side)": _blur(0.01),
    "noise (sigma 0.05)": _noise(0.05),
    "zoom in (central 85%)": _zoom(0.85),
    "brighter (+0.1)": lambda x, g: x + 0.1,
}
FRAMING_SHIFTS: dict[str, Callable[[torch.Tensor, torch.Generator], torch.Tensor]] = {
    "shoulders cut (top 15%)": _crop(0.15, 0, 0, 0),
    "diaphragm cut (bottom 15%)": _crop(0, 0.15, 0, 0),
    "narrower film (sides 12% each)": _crop(0, 0, 0.12, 0.12),
    "wider film (top and bottom 12% each)": _crop(0.12, 0.12, 0, 0),
    "looser (15% black margin)": _looser(0.15),
    "side marker (upper-left corner)": _marker(0.08),
}
# name -> transform of a float batch [B, 1, S, S] in [0, 1]; the sizes are fractions of the side
SHIFTS = {**ACQUISITION_SHIFTS, **FRAMING_SHIFTS}


def apply_shift(images: np.ndarray, name: str, seed: int = 0) -> np.ndarray:
    """uint8 [N, S, S] -> the same images under one named shift, uint8 again (as a file would be)."""
    x = torch.from_numpy(np.ascontiguousarray(images)).float().div(255).unsqueeze(1)
    shifted = SHIFTS[name](x, torch.Generator().manual_seed(seed)).clamp(0, 1)
    return shifted.mul(255).round().to(torch.uint8)[:, 0].numpy()


# A film put in the wrong way: negative, turned or upside down. Unlike the shifts, no site sends these
# as chest films, so the model must refuse them, not judge them; the input check's probe learns them
# from copies of training films (`fault_copies`) and is measured on validation copies.
FAULTS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "inverted (negative)": lambda x: 255 - x,
    "turned 90° (clockwise)": lambda x: np.rot90(x, -1, axes=(1, 2)),
    "upside down (turned 180°)": lambda x: np.rot90(x, 2, axes=(1, 2)),
    "turned 90° (anticlockwise)": lambda x: np.rot90(x, 1, axes=(1, 2)),
    "flipped top to bottom": lambda x: x[:, ::-1],
}


def apply_fault(images: np.ndarray, name: str) -> np.ndarray:
    """uint8 [N, S, S] -> the same films under one of the `FAULTS` (a new array)."""
    return np.ascontiguousarray(FAULTS[name](np.asarray(images)))


def fault_copies(images: np.ndarray, seed: int = 0) -> np.ndarray:
    """uint8 [N, S, S] -> each film once under one of the `FAULTS`, drawn per film."""
    images = np.asarray(images)
    which = np.random.default_rng(seed).integers(0, len(FAULTS), len(images))
    out = np.empty_like(images)
    for k, fault in enumerate(FAULTS.values()):
        if (which == k).any():
            out[which == k] = fault(images[which == k])
    return out


def prevalence_accuracy(recall: float, specificity: float, prevalence: float) -> float:
    """Accuracy the same operating point would have where a `prevalence` share of images is sick."""
    return prevalence * recall + (1 - prevalence) * specificity


def shifted_probabilities(
    predict: Callable[[np.ndarray], np.ndarray], images: np.ndarray, unshifted: np.ndarray | None = None, progress: bool = False
) -> dict[str, np.ndarray]:
    """`predict`'s output (P(pneumonia), or class probabilities) for the unshifted images ("none") and under every shift.

    Pass `unshifted` when the caller already has the plain predictions, to skip that pass.
    """
    out = {"none": predict(images) if unshifted is None else unshifted}
    for name in progress_bar(SHIFTS, len(SHIFTS), "validation under shifts", progress):
        out[name] = predict(apply_shift(images, name))
    return out


def shift_report(
    probabilities: dict[str, np.ndarray], y: np.ndarray, threshold: float, prevalence: float = 0.625
) -> dict[str, dict[str, float]]:
    """Per shift (and unshifted): ROC AUC, recall, specificity, and accuracy at `prevalence`.

    Args:
        probabilities: from `shifted_probabilities`.
        prevalence: the sick share to re-weight accuracy to; 0.625 is the official test split's.
    """
    report = {}
    for name, p in probabilities.items():
        m = binary_metrics(y, p, threshold)
        report[name] = {
            "roc_auc": m["roc_auc"],
            "recall": m["recall"],
            "specificity": m["specificity"],
            "accuracy_at_prevalence": prevalence_accuracy(m["recall"], m["specificity"], prevalence),
        }
    return report
