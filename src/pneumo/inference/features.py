"""How far an input lies from the model's training images, in the model's own penultimate features.

The Mahalanobis distance to the training images' features, with a shrunk (Ledoit-Wolf)
covariance, flagged above a high quantile of what held-out training images score (Lee et al.,
NeurIPS 2018). The statistics live beside a checkpoint's weights as `features.safetensors`,
tied to those weights by checksum; the distance rides on the prediction's forward pass
(`probabilities_and_distance`), so it costs one hook and a matrix product. A `TorchModel` with
statistics attached (`model.with_feature_check()`) measures it on every prediction.

Example:
    >>> model = TorchModel.load(bundled_model_dir())
    >>> stats = load_feature_stats(bundled_model_dir())
    >>> probs, dist = probabilities_and_distance(model, stats, images)
    >>> out_of_distribution(dist, stats)
"""
from __future__ import annotations

import json
import os
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from sklearn.covariance import LedoitWolf
from torch import nn

from pneumo.errors import PneumoError
from pneumo.inference.checks import mahalanobis_distance
from pneumo.models.checkpoint import resolve_checkpoint
from pneumo.models.meta import FEATURES, META
from pneumo.utils.files import write_temp

if TYPE_CHECKING:
    from pneumo.inference.torch_backend import TorchModel

__all__ = [
    "FEATURES",
    "feature_module",
    "feature_width",
    "mahalanobis",
    "fit_feature_stats",
    "save_feature_stats",
    "load_feature_stats",
    "feature_distance",
    "probabilities_and_distance",
    "out_of_distribution",
]

_FORMAT = "pneumo-feature-stats/1"


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
    """How many penultimate features the input checks measure (an ensemble's members' side by side)."""
    heads = getattr(net, "heads", None)
    return sum(h.in_features for h in heads) if isinstance(heads, nn.ModuleList) else _head(net).in_features


@contextmanager
def _penultimate_features(net: nn.Module) -> Iterator[list[torch.Tensor]]:
    """Collect the classifier's input batch by batch inside the `with` block; the hook goes away after."""
    batches: list[torch.Tensor] = []
    handle = feature_module(net).register_forward_pre_hook(lambda _module, args: batches.append(args[0].detach().float().cpu()))
    try:
        yield batches
    finally:
        handle.remove()


def _run(model: TorchModel, images: np.ndarray | torch.Tensor, batch_size: int, progress: bool = False) -> tuple[np.ndarray, torch.Tensor]:
    """One pass through `TorchModel.class_probabilities`: its probabilities and the features it computed."""
    with _penultimate_features(model.net) as batches:
        probs = model.class_probabilities(images, batch_size, progress)
    width = feature_width(model.net)
    return probs, torch.cat(batches).flatten(1) if batches else torch.zeros(0, width)


def _gaussian(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and Ledoit-Wolf precision: the sample covariance of 256 features from a few
    thousand images (or a few hundred) is near-singular, and its plain inverse would blow
    up every direction the training images happen not to vary in."""
    fitted = LedoitWolf().fit(features)
    return fitted.location_, fitted.precision_


def mahalanobis(features: torch.Tensor | np.ndarray, mean: torch.Tensor | np.ndarray, precision: torch.Tensor | np.ndarray) -> np.ndarray:
    """`pneumo.inference.checks.mahalanobis_distance` of tensors or arrays."""
    as_array = lambda t: t.detach().cpu().numpy() if isinstance(t, torch.Tensor) else np.asarray(t)  # noqa: E731
    return mahalanobis_distance(as_array(features), as_array(mean), as_array(precision))


def fit_feature_stats(
    model: TorchModel, images: np.ndarray | torch.Tensor, quantile: float = 0.995, folds: int = 5, batch_size: int = 256, progress: bool = False
) -> dict[str, torch.Tensor]:
    """Fit the training images' feature distribution and the distance above which an input is flagged.

    The threshold is the `quantile` of out-of-fold distances: each fold is scored under a
    Gaussian fitted to the other folds. In-sample distances are too small (a fitted point
    pulls the mean and covariance towards itself, badly so with 256 features and a few
    hundred images), and would flag far more than 1 - quantile of new training-like images:
    fitted on 200 images of the bundled model, their 99.5% quantile flagged 22-88% of 100
    held-out ones (five draws), the out-of-fold one 0-3%.

    Args:
        model: the model whose features are measured.
        images: uint8 [N, S, S] training images at the model's size (the ones it was fitted on).
        quantile: share of training-like images that should pass.
        folds: folds for the out-of-fold threshold.

    Returns:
        {"mean": [D], "precision": [D, D], "threshold": scalar}, float32.
    """
    if len(images) < 4 * folds:
        raise PneumoError(f"fitting feature statistics needs at least {4 * folds} training images, got {len(images)}")
    if not 0.5 <= quantile < 1:
        raise PneumoError(f"quantile must be in [0.5, 1), got {quantile}")
    features = _run(model, images, batch_size, progress)[1].double().numpy()
    fold = np.arange(len(features)) % folds
    held_out = np.empty(len(features))
    for k in range(folds):
        mean, precision = _gaussian(features[fold != k])
        held_out[fold == k] = mahalanobis(features[fold == k], mean, precision)
    mean, precision = _gaussian(features)
    return {
        "mean": torch.from_numpy(mean).float(),
        "precision": torch.from_numpy(precision).float(),
        "threshold": torch.tensor(float(np.quantile(held_out, quantile))),
    }


def _checked(stats: dict[str, torch.Tensor], where: str) -> dict[str, torch.Tensor]:
    """The stats if their tensors fit together and are finite, else a PneumoError naming `where`."""
    try:
        mean, precision, threshold = stats["mean"], stats["precision"], stats["threshold"]
    except KeyError as exc:
        raise PneumoError(f"{where} lacks the tensor {exc}; refit the feature statistics") from None
    width = mean.shape[0] if mean.dim() == 1 else -1
    if width < 1 or precision.shape != (width, width) or threshold.numel() != 1:
        raise PneumoError(f"{where} holds tensors of mismatched shapes: the file is damaged; refit the feature statistics")
    if not all(bool(torch.isfinite(t).all()) for t in (mean, precision, threshold)):
        raise PneumoError(f"{where} holds non-finite numbers: the file is damaged; refit the feature statistics")
    return {"mean": mean.float(), "precision": precision.float(), "threshold": threshold.float().reshape(())}


def _weights_sha256(folder: Path) -> str:
    try:
        return str(json.loads((folder / META).read_text()).get("weights_sha256", ""))
    except (OSError, ValueError):
        return ""


def save_feature_stats(stats: dict[str, torch.Tensor], checkpoint_dir: str | Path) -> Path:
    """Write `features.safetensors` beside a checkpoint's weights, atomically, tied to those weights by checksum."""
    folder = resolve_checkpoint(checkpoint_dir)
    stats = {k: v.contiguous() for k, v in _checked(stats, "the feature statistics").items()}
    metadata = {"format": _FORMAT, "weights_sha256": _weights_sha256(folder)}
    os.replace(write_temp(folder / FEATURES, lambda tmp: save_file(stats, str(tmp), metadata=metadata)), folder / FEATURES)
    return folder / FEATURES


def load_feature_stats(checkpoint_dir: str | Path) -> dict[str, torch.Tensor] | None:
    """A checkpoint's feature statistics; None when it has none, a PneumoError when they are damaged or stale."""
    folder = resolve_checkpoint(checkpoint_dir)
    path = folder / FEATURES
    if not path.exists():
        return None
    try:
        with safe_open(str(path), framework="pt") as fh:
            metadata = fh.metadata() or {}
            stats = {key: fh.get_tensor(key) for key in fh.keys()}
    except (SafetensorError, OSError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise PneumoError(f"{path} is not readable ({first}): the file is damaged; refit or delete it") from None
    if metadata.get("format") != _FORMAT:
        raise PneumoError(f"{path} is not a pneumo feature-statistics file (format {metadata.get('format')!r})")
    expected = _weights_sha256(folder)
    if expected and metadata.get("weights_sha256") != expected:
        raise PneumoError(f"{path} was fitted for other weights than {folder / META} describes: refit or delete it")
    return _checked(stats, str(path))


def probabilities_and_distance(
    model: TorchModel, stats: dict[str, torch.Tensor], images: np.ndarray | torch.Tensor, batch_size: int = 256, progress: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """One forward pass: class probabilities exactly as `TorchModel.class_probabilities` gives them, and feature distances."""
    probs, features = _run(model, images, batch_size, progress)
    if features.shape[1] != stats["mean"].shape[0]:
        raise PneumoError(
            f"the feature statistics are for {stats['mean'].shape[0]} features but this model has {features.shape[1]}: "
            "they were fitted for another model; refit them"
        )
    return probs, mahalanobis(features, stats["mean"], stats["precision"])


def feature_distance(
    model: TorchModel, stats: dict[str, torch.Tensor], images: np.ndarray | torch.Tensor, batch_size: int = 256
) -> np.ndarray:
    """Mahalanobis distance of each uint8 [N, S, S] image's features from the training images' ([N], float64)."""
    return probabilities_and_distance(model, stats, images, batch_size)[1]


def out_of_distribution(distances: np.ndarray, stats: dict[str, torch.Tensor]) -> np.ndarray:
    """True where a distance is above the statistics' threshold."""
    return np.asarray(distances) > float(stats["threshold"])
