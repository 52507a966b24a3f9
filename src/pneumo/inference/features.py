"""The model's own features on the prediction's forward pass, and the input check fitted on them.

`FeatureTap` collects one feature row per image while the network runs: its penultimate
features (the classifier's input; an ensemble's members' side by side), then the channel means
and standard deviations of the last feature map at each resolution of each member. The check
(`pneumo.inference.checks.FeatureCheck`) is fitted once, after training:

- the Mahalanobis distance of the penultimate features, with a shrunk (Ledoit-Wolf) covariance
  of the training films' and a limit at a high quantile of out-of-fold training distances
  (Lee et al., NeurIPS 2018);
- a linear probe on the multi-depth statistics that tells the training films from outlier
  films (adult films from other hospitals), its limit a high quantile of what the held-out
  validation films score, so that its false-alarm rate is measured on children's films the
  model never trained on.

Its arrays live beside a checkpoint's weights as `features.safetensors`, tied to those weights by
checksum, and travel in an ONNX export's JSON.

Example:
    >>> model = TorchModel.load(bundled_model_dir()).with_feature_check()
    >>> probs, scores = model.probabilities_and_scores(images)
    >>> model.feature_check.flags(scores)
"""
from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.numpy import save_file
from sklearn.covariance import LedoitWolf
from sklearn.linear_model import LogisticRegression
from torch import nn

from pneumo.errors import PneumoError
from pneumo.inference.checks import FeatureCheck, SiteCheck, mahalanobis_distance
from pneumo.models.checkpoint import read_meta, resolve_checkpoint, write_meta
from pneumo.models.meta import FEATURES, META
from pneumo.utils.files import write_temp
from pneumo.utils.progress import progress_bar

if TYPE_CHECKING:
    from pneumo.inference.torch_backend import TorchModel

__all__ = [
    "FEATURES",
    "PROBE_C",
    "PROBE_QUANTILE",
    "CheckFit",
    "FeatureTap",
    "feature_module",
    "feature_rows",
    "feature_width",
    "fit_feature_check",
    "fit_site_check",
    "load_feature_check",
    "save_feature_check",
]

_FORMAT = "pneumo-feature-stats/3"
_READABLE_FORMATS = ("pneumo-feature-stats/1", "pneumo-feature-stats/2", _FORMAT)  # /1: the distance alone; /3: a site check and outlier rows
# Inverse L2 strength of the probe over standardised statistics (strong: ~100 outlier films face
# ~2000 statistics) and the quantile of validation children's scores where it draws its limit
# (chosen with benchmarks/probe_sweep.py and benchmarks/bench_site.py).
PROBE_C = 3e-2
PROBE_QUANTILE = 0.995
# the distance's limit leaves at most 1% of every validation copy (unshifted or shifted) beyond it
COPY_QUANTILE = 0.99
# a site's own check (`fit_site_check`): the probe's strength, and the share of the site's films each limit passes
SITE_PROBE_C = 1e-2
SITE_QUANTILE = 0.995


def _head(net: nn.Module) -> nn.Linear:
    """The classifier: the last registered nn.Linear (fc, class_layers.out, seed_cnn's last dense)."""
    linears = [m for m in net.modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise PneumoError(f"{type(net).__name__} has no nn.Linear classifier layer, which feature checks read")
    return linears[-1]


def feature_module(net: nn.Module) -> nn.Module:
    """The module whose input is the penultimate features: an ensemble's `feature_layer` (its
    members' features side by side), else the classifier."""
    layer = getattr(net, "feature_layer", None)
    return layer if isinstance(layer, nn.Module) else _head(net)


def feature_width(net: nn.Module) -> int:
    """How many penultimate features the distance measures (an ensemble's members' side by side)."""
    heads = getattr(net, "heads", None)
    return sum(h.in_features for h in heads) if isinstance(heads, nn.ModuleList) else _head(net).in_features


class FeatureTap:
    """Collects a feature row per image on every forward pass of `net` while attached (a `with` block).

    The row: penultimate features, then for each member (an ensemble's bodies, else the network)
    and each spatial resolution its layers produce, in the order they run, the channel means and
    standard deviations of the last map at that resolution (a ResNet's stem and four stages).
    Works unchanged under ONNX tracing, where the rows become a graph output.
    """

    def __init__(self, net: nn.Module) -> None:
        self.net = net
        self.rows: list[torch.Tensor] = []
        self._handles: list[Any] = []
        self._maps: dict[tuple[int, tuple[int, int]], torch.Tensor] = {}
        self._penultimate: list[torch.Tensor] = []

    def __enter__(self) -> FeatureTap:
        bodies = getattr(self.net, "bodies", None)
        roots = list(bodies) if isinstance(bodies, nn.ModuleList) else [self.net]
        for index, root in enumerate(roots):
            for module in root.modules():
                if module is not root:
                    self._handles.append(module.register_forward_hook(self._map_hook(index)))
        self._handles.append(feature_module(self.net).register_forward_pre_hook(lambda _m, args: self._penultimate.append(args[0])))
        self._handles.append(self.net.register_forward_hook(self._finish))
        return self

    def __exit__(self, *exc: object) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def _map_hook(self, root: int):
        def hook(_module: nn.Module, _args: object, output: object) -> None:
            if isinstance(output, torch.Tensor) and output.dim() == 4 and min(output.shape[-2:]) > 1:
                key = (root, (int(output.shape[-2]), int(output.shape[-1])))
                self._maps[key] = output  # the last map at this resolution wins; the key keeps its first place
        return hook

    def _finish(self, _module: nn.Module, _args: object, _output: object) -> None:
        pooled = [_channel_stats(m.float()) for m in self._maps.values()]
        self.rows.append(torch.cat([self._penultimate[-1].flatten(1).float(), *pooled], dim=1).detach())
        self._maps.clear()
        self._penultimate.clear()


def _channel_stats(m: torch.Tensor) -> torch.Tensor:
    """[B, C, H, W] -> [B, 2C]: each channel's mean and standard deviation (n - 1) over the map.

    Reduced over a [B, H*W, C] view (on the channels-last maps the CPU path runs, 3x faster than
    `Tensor.std(dim=(2, 3))`), in two reads of the map and no temporaries: the mean, and the sum of
    squares as a squared L2 norm; var = (sum x^2 - n mean^2) / (n - 1). The 180 px map of the
    notebook's network took 3.5 ms a batch of 8 instead of 13.6, and its tapped forward pass went
    from 110 to 127 images/s; the rows agree with the subtract-then-square formula to 1e-5 (the
    maps are activations, whose mean is not large against their spread). Plain ops, so ONNX
    tracing exports them as they are.
    """
    flat = m.permute(0, 2, 3, 1).reshape(m.shape[0], -1, m.shape[1])
    n = flat.shape[1]
    mean = flat.mean(dim=1)
    squares = torch.linalg.vector_norm(flat, dim=1).square()
    var = ((squares - n * mean.square()) / (n - 1)).clamp(min=0)
    return torch.cat([mean, var.sqrt()], dim=1)


def feature_rows(model: TorchModel, images: np.ndarray | torch.Tensor, batch_size: int = 256, progress: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """One pass through `TorchModel.class_probabilities`: its probabilities and every image's feature row ([N, D] float64)."""
    with FeatureTap(model.net) as tap:
        probs = model.class_probabilities(images, batch_size, progress)
    rows = torch.cat([r.cpu() for r in tap.rows]).double().numpy() if tap.rows else np.zeros((0, feature_width(model.net)))
    return probs, rows


def _gaussian(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and Ledoit-Wolf precision: the sample covariance of 256 features from a few
    thousand images (or a few hundred) is near-singular, and its plain inverse would blow
    up every direction the training images happen not to vary in."""
    fitted = LedoitWolf().fit(features)
    return fitted.location_, fitted.precision_


def _out_of_fold_distances(features: np.ndarray, folds: int) -> np.ndarray:
    """Each fold's distances under a Gaussian fitted to the other folds. In-sample distances are
    too small (a fitted point pulls the mean and covariance towards itself, badly so with 256
    features and a few hundred images): fitted on 200 images of an earlier bundled model, their
    99.5% quantile flagged 22-88% of 100 held-out ones (five draws), the out-of-fold one 0-3%."""
    fold = np.arange(len(features)) % folds
    held_out = np.empty(len(features))
    for k in range(folds):
        mean, precision = _gaussian(features[fold != k])
        held_out[fold == k] = mahalanobis_distance(features[fold == k], mean, precision)
    return held_out


def _probe(inliers: np.ndarray, outliers: np.ndarray, c: float = PROBE_C) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """Standardisation and logistic-regression weights telling outliers (1) from inliers (0), classes weighted equally."""
    x = np.vstack([inliers, outliers])
    center, scale = x.mean(axis=0), x.std(axis=0)
    scale = np.where(scale > 1e-8, scale, 1.0)
    y = np.r_[np.zeros(len(inliers)), np.ones(len(outliers))]
    fitted = LogisticRegression(C=c, class_weight="balanced", max_iter=5000).fit((x - center) / scale, y)
    return center, scale, fitted.coef_[0], float(fitted.intercept_[0])


def _probe_scores(rows: np.ndarray, center: np.ndarray, scale: np.ndarray, weight: np.ndarray, bias: float) -> np.ndarray:
    return ((rows - center) / scale) @ weight + bias


@dataclass
class CheckFit:
    """A fitted check with what was measured while fitting it (counts; intervals are the caller's)."""

    check: FeatureCheck
    val_flagged: int = 0  # validation films (held-out children) flagged, limits fitted on the other half
    n_val: int = 0
    outliers_caught: int = 0  # outlier films flagged by a probe fitted without their source
    n_outliers: int = 0
    n_sources: int = 0
    copy_flagged: dict[str, float] = field(default_factory=dict)  # share of each shifted validation copy flagged
    notes: list[str] = field(default_factory=list)


def _source_folds(groups: Sequence[str], folds: int, seed: int) -> list[np.ndarray]:
    names = np.array(sorted(set(groups)))
    np.random.default_rng(seed).shuffle(names)
    return [np.isin(np.asarray(groups), part) for part in np.array_split(names, min(folds, len(names)))]


def _distance_limit(train: np.ndarray, copies: Sequence[np.ndarray], mean: np.ndarray, precision: np.ndarray, quantile: float, folds: int) -> float:
    """The distance's limit: the `quantile` of out-of-fold training distances, raised where needed so that
    at most 1 - COPY_QUANTILE of every validation copy (unshifted and shifted) is beyond it. The distance
    is for gross outliers (photographs, documents, noise), far beyond any copy; the probe is the fine judge."""
    limit = float(np.quantile(_out_of_fold_distances(train, folds), quantile))
    for rows in copies:
        limit = max(limit, float(np.quantile(mahalanobis_distance(rows, mean, precision), COPY_QUANTILE)))
    return limit


def fit_feature_check(
    model: TorchModel,
    train_images: np.ndarray | torch.Tensor,
    val_images: np.ndarray | torch.Tensor | None = None,
    outlier_images: np.ndarray | None = None,
    outlier_sources: Sequence[str] | None = None,
    quantile: float = 0.995,
    probe_quantile: float = PROBE_QUANTILE,
    folds: int = 5,
    batch_size: int = 256,
    progress: bool = False,
    seed: int = 0,
    val_rows: np.ndarray | None = None,
    train_views: np.ndarray | torch.Tensor | None = None,
    shifted_val_rows: dict[str, np.ndarray] | None = None,
) -> CheckFit:
    """Fit the input check of `model`: the distance on its training films, and with validation
    and outlier films, the probe.

    Args:
        train_images: uint8 [N, S, S] films the model was fitted on.
        val_images: held-out films of the training distribution: the probe's limit is their
            `probe_quantile`; its false-alarm rate is measured on one half with the limit fitted on the other.
        outlier_images: films the model must not judge (never its training films).
        outlier_sources: each outlier film's source; films of one source are held out together when
            measuring how many of a new source's films the probe catches.
        quantile: share of training-like films the distance passes.
        val_rows: the validation films' feature rows when a pass over them was just made with a
            `FeatureTap` (the end of a run), so they are not computed again.
        train_views: augmented and shifted copies of training films (uint8 [M, S, S]): the probe counts
            them as training-like too, so a film taken or framed a little differently is not "another site".
        shifted_val_rows: feature rows of the validation films under each simulated shift
            (`pneumo.evaluation.robustness`): the distance's limit keeps each copy's false alarms at most
            1 - COPY_QUANTILE, and the share of each copy the check flags is measured.
    """
    if len(train_images) < 4 * folds:
        raise PneumoError(f"fitting the input check needs at least {4 * folds} training images, got {len(train_images)}")
    if not 0.5 <= quantile < 1 or not 0.5 <= probe_quantile < 1:
        raise PneumoError(f"quantiles must be in [0.5, 1), got {quantile} and {probe_quantile}")
    width = feature_width(model.net)
    train = feature_rows(model, train_images, batch_size, progress)[1]
    mean, precision = _gaussian(train[:, :width])
    val = val_rows if val_rows is not None else (feature_rows(model, val_images, batch_size, progress)[1] if val_images is not None else None)
    copies = {"none": val} if val is not None else {}
    copies |= dict(shifted_val_rows or {})
    limit = _distance_limit(train[:, :width], [rows[:, :width] for rows in copies.values()], mean, precision, quantile, folds)
    distance_only = FeatureCheck(mean, precision, limit)
    if val is None or outlier_images is None or len(outlier_images) < 2 * folds or len(val) < 20:
        why = "no outlier films were given" if outlier_images is None else "too few outlier or validation films"
        return CheckFit(distance_only, copy_flagged=_copy_flagged(distance_only, copies), notes=[f"distance check only: {why}"])
    sources = list(outlier_sources) if outlier_sources is not None else [str(i) for i in range(len(outlier_images))]
    outliers = feature_rows(model, outlier_images, batch_size, progress)[1]
    inliers = train[:, width:]
    if train_views is not None and len(train_views):
        inliers = np.vstack([inliers, feature_rows(model, train_views, batch_size, progress)[1][:, width:]])
    center, scale, weight, bias = _probe(inliers, outliers[:, width:])
    val_scores = _probe_scores(val[:, width:], center, scale, weight, bias)
    check = FeatureCheck(
        mean, precision, limit, center, scale, weight, bias, float(np.quantile(val_scores, probe_quantile)), outlier_rows=outliers[:, width:].astype(np.float32)
    )
    # false alarms on held-out children: the probe's limit from one half of validation, counted on the other
    half = np.random.default_rng(seed).permutation(len(val)) < len(val) // 2
    distance_flags = mahalanobis_distance(val[:, :width], mean, precision) > limit
    val_flagged = 0
    for fit_half in (half, ~half):
        cut = np.quantile(val_scores[fit_half], probe_quantile)
        val_flagged += int((distance_flags[~fit_half] | (val_scores[~fit_half] > cut)).sum())
    # outliers caught from sources the probe never saw
    caught = 0
    source_folds = _source_folds(sources, folds, seed)
    for held in progress_bar(source_folds, len(source_folds), "probe on unseen sources", progress):
        c, s, w, b = _probe(inliers, outliers[~held, width:])
        cut = np.quantile(_probe_scores(val[:, width:], c, s, w, b), probe_quantile)
        held_scores = np.c_[mahalanobis_distance(outliers[held, :width], mean, precision), _probe_scores(outliers[held, width:], c, s, w, b)]
        caught += int(((held_scores[:, 0] > limit) | (held_scores[:, 1] > cut)).sum())
    return CheckFit(check, val_flagged, len(val), caught, len(outliers), len(set(sources)), _copy_flagged(check, copies))


def _copy_flagged(check: FeatureCheck, copies: dict[str, np.ndarray]) -> dict[str, float]:
    """The share of each validation copy the check flags (the unshifted one in-sample for the probe's limit)."""
    return {name: float(check.flags(check.scores(rows)).mean()) for name, rows in copies.items() if len(rows)}


def fit_site_check(check: FeatureCheck, site_rows: np.ndarray, quantile: float = SITE_QUANTILE, folds: int = 5) -> SiteCheck:
    """A site's own check from the feature rows of its unlabelled films: a Gaussian of their penultimate
    features and a probe telling them from the check's outlier films, each limit at `quantile` of the
    site films' out-of-fold scores (so the limit is not drawn on scores the films fitted themselves)."""
    if check.outlier_rows is None or not check.has_probe:
        raise PneumoError("this model's input check keeps no outlier films' statistics, so a site's films cannot be told from them; refit its check with pneumo ensemble MODEL --out DIR")
    width = len(check.mean)
    rows = np.asarray(site_rows, dtype=np.float64)
    penultimate, stats, outliers = rows[:, :width], rows[:, width : check.width], np.asarray(check.outlier_rows, dtype=np.float64)
    fold = np.arange(len(rows)) % folds
    distances, probe_scores = np.empty(len(rows)), np.empty(len(rows))
    for k in range(folds):
        inside = fold != k
        m, pr = _gaussian(penultimate[inside])
        distances[~inside] = mahalanobis_distance(penultimate[~inside], m, pr)
        probe_scores[~inside] = _probe_scores(stats[~inside], *_probe(stats[inside], outliers, SITE_PROBE_C))
    mean, precision = _gaussian(penultimate)
    center, scale, weight, bias = _probe(stats, outliers, SITE_PROBE_C)
    return SiteCheck(mean, precision, float(np.quantile(distances, quantile)), center, scale, weight, bias, float(np.quantile(probe_scores, quantile)))


def _weights_sha256(folder: Path) -> str:
    try:
        return str(json.loads((folder / META).read_text()).get("weights_sha256", ""))
    except (OSError, ValueError):
        return ""


def save_feature_check(check: FeatureCheck, checkpoint_dir: str | Path) -> Path:
    """Write `features.safetensors` beside a checkpoint's weights, atomically, tied to those weights
    by checksum, and re-seal the folder's metadata with the new file's checksum (`features_sha256`),
    so the folder loads and an edit to either file is caught.

    The metadata is read (and so validated) first: a folder whose meta.json was edited is refused
    before anything is written."""
    folder = resolve_checkpoint(checkpoint_dir)
    meta = read_meta(folder)
    metadata = {"format": _FORMAT, "weights_sha256": meta.weights_sha256}
    os.replace(write_temp(folder / FEATURES, lambda tmp: save_file(check.arrays(), str(tmp), metadata=metadata)), folder / FEATURES)
    write_meta(folder, meta)  # records features_sha256 of the file just written, and meta_sha256 over it
    return folder / FEATURES


def load_feature_check(checkpoint_dir: str | Path) -> FeatureCheck | None:
    """A checkpoint's input check; None when it has none, a PneumoError when it is damaged or stale."""
    folder = resolve_checkpoint(checkpoint_dir)
    path = folder / FEATURES
    if not path.exists():
        return None
    try:
        with safe_open(str(path), framework="np") as fh:
            metadata = fh.metadata() or {}
            arrays = {key: fh.get_tensor(key) for key in fh.keys()}
    except (SafetensorError, OSError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise PneumoError(f"{path} is not readable ({first}): the file is damaged; refit or delete it") from None
    if metadata.get("format") not in _READABLE_FORMATS:
        raise PneumoError(f"{path} is not a pneumo feature-statistics file (format {metadata.get('format')!r})")
    expected = _weights_sha256(folder)
    if expected and metadata.get("weights_sha256") != expected:
        raise PneumoError(f"{path} was fitted for other weights than {folder / META} describes: refit or delete it")
    return FeatureCheck.from_arrays(arrays, str(path))
