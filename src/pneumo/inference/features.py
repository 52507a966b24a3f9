"""The model's own features on the prediction's forward pass, and the input check's file.

`FeatureTap` collects one feature row per image while the network runs: its penultimate
features (the classifier's input; an ensemble's members' side by side), then the channel means
and standard deviations of the last feature map at each resolution of each member. The check
(`pneumo.inference.checks.FeatureCheck`) is fitted on such rows once, after training
(`pneumo.inference.fitting`). Its arrays live beside a checkpoint's weights as
`features.safetensors`, tied to those weights by checksum, and travel in an ONNX export's JSON.

Example:
    >>> model = TorchModel.load(bundled_model_dir()).with_feature_check()
    >>> probs, scores = model.probabilities_and_scores(images)
    >>> model.feature_check.flags(scores)
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.numpy import save_file
from torch import nn

from pneumo.errors import PneumoError
from pneumo.inference.checks import FeatureCheck
from pneumo.models.checkpoint import read_meta, resolve_checkpoint, write_meta
from pneumo.models.meta import FEATURES, META
from pneumo.models.registry import classifier_layer
from pneumo.utils.atomic import write_temp

__all__ = ["FEATURES", "FeatureTap", "feature_module", "feature_width", "load_feature_check", "save_feature_check"]

_FORMAT = "pneumo-feature-stats/3"
_READABLE_FORMATS = (
    "pneumo-feature-stats/1",
    "pneumo-feature-stats/2",
    _FORMAT,
)  # /1: the distance alone; /3: a site check and outlier rows


def _head(net: nn.Module) -> nn.Linear:
    """The classifier, as the network's spec names it (`pneumo.models.registry.classifier_layer`)."""
    return classifier_layer(net)[1]


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

    Two passes, the mean and then the mean square about it: the one-pass sum-of-squares formula
    loses the spread to float32 rounding where a channel's mean is large against it, and then two
    orderings of the same sums (PyTorch's and an ONNX graph's) disagree. On the CPU path the map is
    reduced over a [B, H*W, C] view of the channels-last maps PyTorch runs (several times faster
    than `Tensor.std(dim=(2, 3))`); in an ONNX export the same two means are global average pools,
    which onnxruntime runs on its blocked-layout maps without reordering them first.
    """
    n = int(m.shape[2] * m.shape[3])
    if torch.onnx.is_in_onnx_export():
        mean = nn.functional.adaptive_avg_pool2d(m, 1)
        var = nn.functional.adaptive_avg_pool2d((m - mean).square(), 1).flatten(1) * (n / (n - 1))
        return torch.cat([mean.flatten(1), var.sqrt()], dim=1)
    flat = m.permute(0, 2, 3, 1).reshape(m.shape[0], -1, m.shape[1])
    mean = flat.mean(dim=1)
    var = (flat - mean.unsqueeze(1)).square().mean(dim=1) * (n / (n - 1))
    return torch.cat([mean, var.sqrt()], dim=1)


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
