"""Warnings for inputs the model cannot judge: not a frontal chest radiograph, or unlike its training images.

A classifier always answers, even for a photograph of a cat; these checks say when its
answer is likely meaningless. Two kinds, both cheap:

- rule checks on what the file says about itself (`rule_warnings`): DICOM modality, body
  part and view position, colour, shape and size of the original image;
- the model's own features on the prediction's forward pass (`FeatureCheck`, fitted by
  `pneumo.inference.features`): a distance from the training films, and a probe that tells
  them from adult and other-site films; `check_inputs` turns scores above their limits into warnings.

Nothing here imports torch: the ONNX runtime uses the rule checks too.

Example:
    >>> image, info = read_image_with_info("xray.dcm")
    >>> check_inputs([info])
    [['the patient is 61 years old; the model was trained on children aged 1-5: ...']]
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from pneumo.data.pixels import ImageInfo
from pneumo.errors import PneumoError

__all__ = [
    "ASPECT_RANGE",
    "MAX_AGE_YEARS",
    "MAX_COLOURFULNESS",
    "MIN_SIDE",
    "RADIOGRAPHY_MODALITIES",
    "FeatureCheck",
    "InputWarning",
    "SiteCheck",
    "abstain_reason",
    "check_inputs",
    "mahalanobis_distance",
    "rule_warnings",
    "warning_kind",
]

_MEANINGLESS = "the result may be meaningless"


class InputWarning(str):
    """A warning about an input: its words, and `kind`, the check behind it ("colour image",
    "adult or other-site film"...), so that a tally of warnings never reads the words.
    A `str`, so output formats, JSON and `"; ".join` take it as they take any text."""

    kind: str

    def __new__(cls, kind: str, text: str) -> InputWarning:
        warning = super().__new__(cls, text)
        warning.kind = kind
        return warning

    def __getnewargs__(self) -> tuple[str, str]:  # pickling (worker processes) keeps the kind
        return (self.kind, str(self))


# DICOM PS3.3 C.7.3.1.1.1: CR computed radiography, DX digital radiography, RG film/screen
# radiography. DR is not a DICOM term but some digital-radiography systems write it.
RADIOGRAPHY_MODALITIES = frozenset({"CR", "DX", "RG", "DR"})
# Body Part Examined is free text in practice (CHEST, THORAX, "PORT CHEST", TORAX, LUNGS...).
_CHEST_WORDS = ("CHEST", "THORA", "TORAX", "LUNG", "PULMO")
# View Position (0018,5101): LL/RL laterals, LLO/RLO obliques; LAT/LATERAL are common vendor values.
_LATERAL_VIEWS = frozenset({"LL", "RL", "LAT", "LATERAL"})
_OBLIQUE_VIEWS = frozenset({"LLO", "RLO", "LAO", "RAO", "LPO", "RPO"})
# Mean absolute channel difference (ImageInfo.colourfulness, 0-255 scale) above which an image is
# a colour picture, not a tinted film: `python benchmarks/bench_input_checks.py` prints it for grey
# films, tinted films and photographs. The model sees luma only, so a tint is no reason to warn;
# muted photographs that pass this rule are caught by the feature check.
MAX_COLOURFULNESS = 20.0
# Chest films and detectors run from 24x30 cm portrait to 43x35 landscape (0.8-1.25) and
# crops of them a little further; 1:2 either way is a strip, a screenshot or a montage.
ASPECT_RANGE = (0.5, 2.0)
# Over half the picture transparent: what is left after compositing on black is mostly black, not a film.
MAX_TRANSPARENT = 0.5
# A side under 64 px is a thumbnail: the model sees it upscaled >3x to 224 px, with no lung texture left.
MIN_SIDE = 64


# The training films are of children aged 1 to 5 (Kermany et al. 2018); past adolescence the
# chest's size, shape and disease patterns differ (the adult sample films score oddly).
MAX_AGE_YEARS = 16.0


def _clean(value: str | None) -> str:
    return (value or "").strip().upper()


def rule_warnings(info: ImageInfo) -> list[InputWarning]:
    """Short warnings from the file's own description; empty when nothing is odd.

    Args:
        info: a `pneumo.data.pixels.ImageInfo`, or any object with its attributes. Absent DICOM
            tags (None, as for every JPEG and PNG) are no reason to warn.

    Example:
        >>> rule_warnings(SimpleNamespace(format="DICOM", width=512, height=512, colourfulness=0.0,
        ...                               frames=1, modality="OT", body_part=None, view_position=None))
        ['DICOM modality is OT, not a radiograph (CR, DR, DX, RG): the result may be meaningless']
    """
    out = []
    modality, body_part, view = _clean(info.modality), _clean(info.body_part), _clean(info.view_position)
    if modality and modality not in RADIOGRAPHY_MODALITIES:
        out.append(
            InputWarning(
                "not a radiograph",
                f"DICOM modality is {modality}, not a radiograph ({', '.join(sorted(RADIOGRAPHY_MODALITIES))}): {_MEANINGLESS}",
            )
        )
    if body_part and not any(word in body_part for word in _CHEST_WORDS):
        out.append(InputWarning("not the chest", f"body part is {body_part}, not the chest: {_MEANINGLESS}"))
    if view in _LATERAL_VIEWS:
        out.append(
            InputWarning(
                "not a frontal film", f"view position {view} is a lateral film; the model judges frontal (AP/PA) films: {_MEANINGLESS}"
            )
        )
    elif view in _OBLIQUE_VIEWS:
        out.append(
            InputWarning(
                "not a frontal film", f"view position {view} is an oblique film; the model judges frontal (AP/PA) films: {_MEANINGLESS}"
            )
        )
    age = getattr(info, "patient_age_years", None)
    if age is not None and age > MAX_AGE_YEARS:
        out.append(
            InputWarning(
                "patient older than 16", f"the patient is {age:.0f} years old; the model was trained on children aged 1-5: {_MEANINGLESS}"
            )
        )
    if info.frames > 1:
        out.append(
            InputWarning(
                "several frames", f"the file holds {info.frames} frames (a series or a cine loop, not one radiograph): {_MEANINGLESS}"
            )
        )
    if info.colourfulness > MAX_COLOURFULNESS:
        out.append(
            InputWarning(
                "colour image", f"the image is in colour (colourfulness {info.colourfulness:.0f}); radiographs are grey: {_MEANINGLESS}"
            )
        )
    transparent = getattr(info, "transparent", 0.0)
    if transparent > MAX_TRANSPARENT:
        out.append(
            InputWarning("transparent image", f"{transparent:.0%} of the image is transparent (judged as shown on black): {_MEANINGLESS}")
        )
    lo, hi = ASPECT_RANGE
    if info.height > 0 and not lo <= info.width / info.height <= hi:
        out.append(
            InputWarning("elongated image", f"the image is {info.width}x{info.height} px, too elongated for a chest film: {_MEANINGLESS}")
        )
    if min(info.width, info.height) < MIN_SIDE:
        out.append(
            InputWarning("thumbnail", f"the image is only {info.width}x{info.height} px, too small to show the lungs: {_MEANINGLESS}")
        )
    return out


def warning_kind(warning: str) -> str:
    """The kind of check behind a warning (`InputWarning.kind`); "other" for plain text."""
    return getattr(warning, "kind", "other")


def abstain_reason(warnings: Sequence[str], abstain: bool = True) -> str | None:
    """Why the model gives an input no verdict (its first warning), or None where it judges it.

    The one abstain rule: `classify` labels and `evaluate` judges exactly the inputs this returns
    None for, so evaluate's judged-film metrics are those of the films predict would label.
    `abstain=False` judges every input, its warnings notwithstanding.
    """
    return warnings[0] if abstain and warnings else None


def mahalanobis_distance(features: np.ndarray, mean: np.ndarray, precision: np.ndarray) -> np.ndarray:
    """Distance of each row of `features` [N, D] from a Gaussian (mean [D], precision [D, D]), in float64."""
    diff = np.asarray(features, dtype=np.float64) - np.asarray(mean, dtype=np.float64)
    squared = ((diff @ np.asarray(precision, dtype=np.float64)) * diff).sum(axis=1)
    return np.sqrt(np.clip(squared, 0, None))


# the arrays a FeatureCheck is saved as (features.safetensors, the export's JSON); probe_*, site_* and outlier_rows are optional
_DISTANCE_ARRAYS = ("mean", "precision", "threshold")
_PROBE_ARRAYS = ("probe_center", "probe_scale", "probe_weight", "probe_bias", "probe_limit")
_SITE_ARRAYS = tuple(f"site_{name}" for name in ("mean", "precision", "distance_limit", *_PROBE_ARRAYS))
_OUTLIER_ROWS = "outlier_rows"


@dataclass(frozen=True)
class SiteCheck:
    """What a site's own unlabelled films look like to the model (`pneumo calibrate --unlabeled`): a film the
    model's own check refuses is still judged when it lies within the site's films' distance limit and
    passes a probe fitted to tell the site's films from the outlier films. It widens what is accepted
    along the site's own variation only: adult films and non-chest images stay outside both."""

    mean: np.ndarray  # [P] the site films' penultimate features
    precision: np.ndarray  # [P, P] their shrunk inverse covariance
    distance_limit: float
    probe_center: np.ndarray  # [Q]
    probe_scale: np.ndarray  # [Q]
    probe_weight: np.ndarray  # [Q]: site films (low) against outlier films (high)
    probe_bias: float
    probe_limit: float

    def accepts(self, distance: np.ndarray, probe: np.ndarray) -> np.ndarray:
        return (np.asarray(distance) <= self.distance_limit) & (np.asarray(probe) <= self.probe_limit)


@dataclass(frozen=True)
class FeatureCheck:
    """The model's own judge of whether an input is like its training films, from the features
    of the prediction's forward pass (`pneumo.inference.features` taps and fits them).

    A feature row is the penultimate features (the classifier's input), then the channel means
    and standard deviations of the last feature map at each resolution. Two scores, each with
    its limit:

    - `distance`: Mahalanobis distance of the penultimate features from the training films'
      (Lee et al. 2018): anything far from every training film, photographs and noise included;
    - `probe`: a linear probe on the multi-depth statistics, fitted to tell the training films
      (and their augmented and shifted copies) from films the model must not judge (adult films
      from other hospitals, `outliers` in the config); it catches what lies near the training films
      in the last layer but differs in texture, anatomy and acquisition. Absent when no outlier films were given.

    With a `site` (`pneumo calibrate --unlabeled`), a film either score refuses is judged all the same
    when the site's check accepts it. `outlier_rows` keeps the outlier films' multi-depth statistics so
    that a site check can be fitted later without them; they are not needed to score.

    Its arrays are plain numpy, so the torch-free runtime scores exports exactly as PyTorch does.
    """

    mean: np.ndarray  # [P] penultimate features' mean
    precision: np.ndarray  # [P, P] their shrunk inverse covariance
    distance_limit: float
    probe_center: np.ndarray | None = None  # [Q] standardisation of the multi-depth statistics
    probe_scale: np.ndarray | None = None  # [Q]
    probe_weight: np.ndarray | None = None  # [Q] logistic-regression weights
    probe_bias: float = 0.0
    probe_limit: float = float("inf")
    site: SiteCheck | None = None
    outlier_rows: np.ndarray | None = None  # [M, Q] the outlier films' multi-depth statistics

    @property
    def width(self) -> int:
        """Feature row width this check needs (penultimate plus, with a probe, the multi-depth statistics)."""
        return len(self.mean) + (len(self.probe_weight) if self.probe_weight is not None else 0)

    @property
    def has_probe(self) -> bool:
        return self.probe_weight is not None

    def scores(self, features: np.ndarray) -> np.ndarray:
        """[N, 4] float64: each row's distance and probe score, then the site's distance and probe
        score (NaN without a probe, without a site)."""
        features = np.asarray(features, dtype=np.float64)
        if features.ndim == 2 and len(features) == 0:
            return np.zeros((0, 4))  # no images, no scores (a backend's empty pass may not know its width)
        # with a probe the check reads the whole row, so its width is the model's; without one, the penultimate part only
        if features.ndim != 2 or (features.shape[1] != self.width if self.has_probe else features.shape[1] < self.width):
            raise PneumoError(
                f"the input check needs {self.width} features per image but got {features.shape[1:] or 'none'}: "
                "it was fitted for another model; refit or export it again"
            )
        p = len(self.mean)
        out = np.full((len(features), 4), np.nan)
        out[:, 0] = mahalanobis_distance(features[:, :p], self.mean, self.precision)
        if self.has_probe:
            q = features[:, p : p + len(self.probe_weight)]
            out[:, 1] = ((q - self.probe_center) / self.probe_scale) @ self.probe_weight + self.probe_bias
            if self.site is not None:
                site = self.site
                out[:, 2] = mahalanobis_distance(features[:, :p], site.mean, site.precision)
                out[:, 3] = ((q - site.probe_center) / site.probe_scale) @ site.probe_weight + site.probe_bias
        return out

    def own_flags(self, scores: np.ndarray) -> np.ndarray:
        """True where the model's own check (distance or probe) is above its limit, whatever a site says."""
        scores = np.asarray(scores, dtype=np.float64)
        return (scores[:, 0] > self.distance_limit) | (np.nan_to_num(scores[:, 1], nan=-np.inf) > self.probe_limit)

    def flags(self, scores: np.ndarray) -> np.ndarray:
        """True where the film is refused: the model's own check flags it and no site check accepts it."""
        scores = np.asarray(scores, dtype=np.float64)
        flagged = self.own_flags(scores)
        if self.site is not None and scores.shape[1] >= 4:
            flagged &= ~self.site.accepts(np.nan_to_num(scores[:, 2], nan=np.inf), np.nan_to_num(scores[:, 3], nan=np.inf))
        return flagged

    def warnings(self, row: np.ndarray) -> list[InputWarning]:
        """The warnings one image's scores raise (none when the site's check accepts what the model's own refuses)."""
        row = np.asarray(row, dtype=np.float64)
        if not self.flags(row[None])[0]:
            return []
        out = []
        if row[0] > self.distance_limit:
            out.append(
                InputWarning(
                    "unlike the training films",
                    f"the image looks unlike the chest X-rays the model was trained on "
                    f"(feature distance {row[0]:.0f}, limit {self.distance_limit:.0f}): {_MEANINGLESS}",
                )
            )
        if np.isfinite(row[1]) and row[1] > self.probe_limit:
            out.append(
                InputWarning(
                    "adult or other-site film",
                    f"the film looks like an adult's or another site's, not the children's films the model was trained on "
                    f"(probe score {row[1]:.1f}, limit {self.probe_limit:.1f}): {_MEANINGLESS}",
                )
            )
        return out

    def with_site(self, site: SiteCheck | None) -> FeatureCheck:
        return dataclasses.replace(self, site=site)

    def arrays(self, scoring_only: bool = False) -> dict[str, np.ndarray]:
        """float32 arrays to save (names as `from_arrays` reads them); `scoring_only` leaves out the
        outlier rows, which only a later site calibration needs (an export's JSON)."""
        out = {"mean": self.mean, "precision": self.precision, "threshold": np.array(self.distance_limit)}
        if self.has_probe:
            out |= {
                "probe_center": self.probe_center,
                "probe_scale": self.probe_scale,
                "probe_weight": self.probe_weight,
                "probe_bias": np.array(self.probe_bias),
                "probe_limit": np.array(self.probe_limit),
            }
        if self.site is not None:
            out |= {f"site_{name}": np.asarray(getattr(self.site, name)) for name in (f.name for f in dataclasses.fields(SiteCheck))}
        if self.outlier_rows is not None and not scoring_only:
            out[_OUTLIER_ROWS] = self.outlier_rows
        return {k: np.ascontiguousarray(np.asarray(v, dtype=np.float32)) for k, v in out.items()}

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray], where: str) -> FeatureCheck:
        """A check from saved arrays, or a PneumoError naming `where` when they are missing, mismatched or not finite."""
        damaged = f"{where} holds a damaged input check"
        missing = [k for k in _DISTANCE_ARRAYS if k not in arrays]
        probe = [k for k in _PROBE_ARRAYS if k in arrays]
        site = [k for k in _SITE_ARRAYS if k in arrays]
        if missing or 0 < len(probe) < len(_PROBE_ARRAYS) or 0 < len(site) < len(_SITE_ARRAYS) or (site and not probe):
            lacking = missing or sorted(set(_PROBE_ARRAYS) - set(probe)) or sorted(set(_SITE_ARRAYS) - set(site)) or list(_PROBE_ARRAYS)
            raise PneumoError(f"{damaged} (it lacks {', '.join(lacking)}); refit or export it again")
        known = _DISTANCE_ARRAYS + _PROBE_ARRAYS + _SITE_ARRAYS + (_OUTLIER_ROWS,)
        a = {k: np.asarray(v, dtype=np.float64) for k, v in arrays.items() if k in known}
        p = a["mean"].shape[0] if a["mean"].ndim == 1 else 0
        shapes_ok = p > 0 and a["precision"].shape == (p, p) and a["threshold"].size == 1
        q = 0
        if probe:
            q = a["probe_weight"].shape[0] if a["probe_weight"].ndim == 1 else 0
            shapes_ok &= q > 0 and a["probe_center"].shape == (q,) and a["probe_scale"].shape == (q,)
            shapes_ok &= a["probe_bias"].size == 1 and a["probe_limit"].size == 1
        if site:
            shapes_ok &= a["site_mean"].shape == (p,) and a["site_precision"].shape == (p, p) and a["site_distance_limit"].size == 1
            shapes_ok &= all(a[f"site_{k}"].shape == (q,) for k in ("probe_center", "probe_scale", "probe_weight"))
            shapes_ok &= a["site_probe_bias"].size == 1 and a["site_probe_limit"].size == 1
        if _OUTLIER_ROWS in a:
            shapes_ok &= q > 0 and a[_OUTLIER_ROWS].ndim == 2 and a[_OUTLIER_ROWS].shape[1] == q
        if not shapes_ok:
            raise PneumoError(f"{damaged} (its arrays' shapes do not fit together); refit or export it again")
        scales = [a[k] for k in ("probe_scale", "site_probe_scale") if k in a]
        if not all(np.isfinite(v).all() for v in a.values()) or not all((v > 0).all() for v in scales):
            raise PneumoError(f"{damaged} (non-finite or non-positive numbers); refit or export it again")
        scalar = lambda name: float(a[name].reshape(-1)[0])  # noqa: E731
        site_check = None
        if site:
            site_check = SiteCheck(
                a["site_mean"],
                a["site_precision"],
                scalar("site_distance_limit"),
                a["site_probe_center"],
                a["site_probe_scale"],
                a["site_probe_weight"],
                scalar("site_probe_bias"),
                scalar("site_probe_limit"),
            )
        if not probe:
            return cls(a["mean"], a["precision"], scalar("threshold"))
        return cls(
            a["mean"],
            a["precision"],
            scalar("threshold"),
            a["probe_center"],
            a["probe_scale"],
            a["probe_weight"],
            scalar("probe_bias"),
            scalar("probe_limit"),
            site_check,
            a.get(_OUTLIER_ROWS),
        )


def check_inputs(infos: Sequence[ImageInfo | None], scores: np.ndarray | None = None, check: FeatureCheck | None = None) -> list[list[str]]:
    """Every image's warnings: rule checks on its info (None: no file to describe) and, given
    the model's feature-check scores and the check itself (`Model.probabilities_and_scores`), its warnings.

    Example:
        >>> probs, scores = model.probabilities_and_scores(images)
        >>> for path, warnings in zip(paths, check_inputs(infos, scores, model.feature_check)):
        ...     print(path, "; ".join(warnings) or "ok")
    """
    if scores is not None and check is None:
        raise ValueError("feature-check scores were given without the check that judges them")
    if scores is not None and len(scores) != len(infos):
        raise ValueError(f"{len(infos)} infos but {len(scores)} scores")
    out = [rule_warnings(info) if info is not None else [] for info in infos]
    if scores is not None and check is not None:
        for warnings, row in zip(out, np.asarray(scores, dtype=np.float64)):
            warnings.extend(check.warnings(row))
    return out
