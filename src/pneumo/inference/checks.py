"""Warnings for inputs the model cannot judge: not a frontal chest radiograph, or unlike its training images.

A classifier always answers, even for a photograph of a cat; these checks say when its
answer is likely meaningless. Two kinds, both cheap:

- rule checks on what the file says about itself (`rule_warnings`): DICOM modality, body
  part and view position, colour, shape and size of the original image;
- a distance from the training distribution in the model's own features, measured by
  `pneumo.inference.features` on the prediction's forward pass; `check_inputs` turns distances
  above the model's limit into a warning.

Nothing here imports torch: the ONNX runtime uses the rule checks too.

Example:
    >>> image, info = read_image_with_info("xray.dcm")
    >>> check_inputs([info], distances=np.array([30.0]), limit=21.4)
    [['the image looks unlike the chest X-rays the model was trained on ...']]
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from pneumo.data.io import ImageInfo

__all__ = ["RADIOGRAPHY_MODALITIES", "MAX_COLOURFULNESS", "ASPECT_RANGE", "MIN_SIDE", "MAX_AGE_YEARS", "rule_warnings", "warning_kind", "mahalanobis_distance", "check_inputs"]

_MEANINGLESS = "the result may be meaningless"

# DICOM PS3.3 C.7.3.1.1.1: CR computed radiography, DX digital radiography, RG film/screen
# radiography. DR is not a DICOM term but some digital-radiography systems write it.
RADIOGRAPHY_MODALITIES = frozenset({"CR", "DX", "RG", "DR"})
# Body Part Examined is free text in practice (CHEST, THORAX, "PORT CHEST", TORAX, LUNGS...).
_CHEST_WORDS = ("CHEST", "THORA", "TORAX", "LUNG", "PULMO")
# View Position (0018,5101): LL/RL laterals, LLO/RLO obliques; LAT/LATERAL are common vendor values.
_LATERAL_VIEWS = frozenset({"LL", "RL", "LAT", "LATERAL"})
_OBLIQUE_VIEWS = frozenset({"LLO", "RLO", "LAO", "RAO", "LPO", "RPO"})
# Mean absolute channel difference (ImageInfo.colourfulness, 0-255 scale), as measured in
# benchmarks/bench_input_checks.py: grey films stored as RGB JPEG 0; training films given a
# mild sepia cast (x 1/0.95/0.85 per channel), as a scanner or phone might, 9-16; colour
# photographs 18 (sklearn's muted "china.jpg"), 48 ("flower.jpg"), 58-80 (random colour
# fields). The model sees luma only, so a tint is no reason to warn; muted photographs that
# pass this rule are caught by the feature check.
MAX_COLOURFULNESS = 20.0
# Chest films and detectors run from 24x30 cm portrait to 43x35 landscape (0.8-1.25) and
# crops of them a little further; 1:2 either way is a strip, a screenshot or a montage.
ASPECT_RANGE = (0.5, 2.0)
# A side under 64 px is a thumbnail: the model sees it upscaled >3x to 224 px, with no lung texture left.
MIN_SIDE = 64


# The training films are of children aged 1 to 5 (Kermany et al. 2018); past adolescence the
# chest's size, shape and disease patterns differ (the adult sample films score oddly).
MAX_AGE_YEARS = 16.0


def _clean(value: str | None) -> str:
    return (value or "").strip().upper()


def rule_warnings(info: ImageInfo) -> list[str]:
    """Short warnings from the file's own description; empty when nothing is odd.

    Args:
        info: a `pneumo.data.io.ImageInfo`, or any object with its attributes. Absent DICOM
            tags (None, as for every JPEG and PNG) are no reason to warn.

    Example:
        >>> rule_warnings(SimpleNamespace(format="DICOM", width=512, height=512, colourfulness=0.0,
        ...                               frames=1, modality="OT", body_part=None, view_position=None))
        ['DICOM modality is OT, not a radiograph (CR, DR, DX, RG): the result may be meaningless']
    """
    out = []
    modality, body_part, view = _clean(info.modality), _clean(info.body_part), _clean(info.view_position)
    if modality and modality not in RADIOGRAPHY_MODALITIES:
        out.append(f"DICOM modality is {modality}, not a radiograph ({', '.join(sorted(RADIOGRAPHY_MODALITIES))}): {_MEANINGLESS}")
    if body_part and not any(word in body_part for word in _CHEST_WORDS):
        out.append(f"body part is {body_part}, not the chest: {_MEANINGLESS}")
    if view in _LATERAL_VIEWS:
        out.append(f"view position {view} is a lateral film; the model judges frontal (AP/PA) films: {_MEANINGLESS}")
    elif view in _OBLIQUE_VIEWS:
        out.append(f"view position {view} is an oblique film; the model judges frontal (AP/PA) films: {_MEANINGLESS}")
    age = getattr(info, "patient_age_years", None)
    if age is not None and age > MAX_AGE_YEARS:
        out.append(f"the patient is {age:.0f} years old; the model was trained on children aged 1-5: {_MEANINGLESS}")
    if info.frames > 1:
        out.append(f"the file holds {info.frames} frames (a series or a cine loop, not one radiograph): {_MEANINGLESS}")
    if info.colourfulness > MAX_COLOURFULNESS:
        out.append(f"the image is in colour (colourfulness {info.colourfulness:.0f}); radiographs are grey: {_MEANINGLESS}")
    lo, hi = ASPECT_RANGE
    if info.height > 0 and not lo <= info.width / info.height <= hi:
        out.append(f"the image is {info.width}x{info.height} px, too elongated for a chest film: {_MEANINGLESS}")
    if min(info.width, info.height) < MIN_SIDE:
        out.append(f"the image is only {info.width}x{info.height} px, too small to show the lungs: {_MEANINGLESS}")
    return out


# what each check's warning says first, and its kind in a tally (evaluate's abstention reasons)
_KINDS = (
    ("DICOM modality is", "not a radiograph"),
    ("body part is", "not the chest"),
    ("view position", "not a frontal film"),
    ("the patient is", "patient older than 16"),
    ("the file holds", "several frames"),
    ("the image is in colour", "colour image"),
    ("too elongated", "elongated image"),
    ("too small to show", "thumbnail"),
    ("looks unlike the chest X-rays", "unlike the training films"),
)


def warning_kind(warning: str) -> str:
    """A short name for the check behind a warning, to count warnings by kind."""
    return next((kind for words, kind in _KINDS if words in warning), "other")


def mahalanobis_distance(features: np.ndarray, mean: np.ndarray, precision: np.ndarray) -> np.ndarray:
    """Distance of each row of `features` [N, D] from a Gaussian (mean [D], precision [D, D]), in float64."""
    diff = np.asarray(features, dtype=np.float64) - np.asarray(mean, dtype=np.float64)
    squared = ((diff @ np.asarray(precision, dtype=np.float64)) * diff).sum(axis=1)
    return np.sqrt(np.clip(squared, 0, None))


def check_inputs(
    infos: Sequence[ImageInfo | None], distances: np.ndarray | None = None, limit: float | None = None
) -> list[list[str]]:
    """Every image's warnings: rule checks on its info (None: no file to describe) and, given
    feature distances and the model's limit (`pneumo.inference.features`), the distance check.

    Example:
        >>> probs, dist = probabilities_and_distance(model, stats, images)
        >>> for path, warnings in zip(paths, check_inputs(infos, dist, float(stats["threshold"]))):
        ...     print(path, "; ".join(warnings) or "ok")
    """
    if distances is not None and limit is None:
        raise ValueError("distances were given without the limit that judges them")
    if distances is not None and len(distances) != len(infos):
        raise ValueError(f"{len(infos)} infos but {len(distances)} distances")
    out = [rule_warnings(info) if info is not None else [] for info in infos]
    if distances is not None and limit is not None:
        for warnings, distance in zip(out, distances):
            if distance > limit:
                warnings.append(
                    f"the image looks unlike the chest X-rays the model was trained on "
                    f"(feature distance {distance:.0f}, limit {limit:.0f}): {_MEANINGLESS}"
                )
    return out
