"""Models by name: `create_model("resnet18", num_outputs=1, image_size=224)`.

Every entry has a small spec of its defaults (input size, normalisation) that training
records in the checkpoint and inference reads back.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from torch import nn

from pneumo.errors import PneumoError
from pneumo.models.seed_cnn import SeedCNN

__all__ = ["ModelSpec", "create_model", "available_models", "model_spec"]


@dataclass(frozen=True)
class ModelSpec:
    """What a model expects: default input side and the intensity normalisation."""

    name: str
    build: Callable[..., nn.Module]
    image_size: int
    mean: float
    std: float
    description: str


def _monai_resnet(depth: int, width: float = 1.0) -> Callable[..., nn.Module]:
    """He et al.'s ResNet: a 7x7 stride-2 stem (MONAI's default stride is 1, which runs the
    whole network at twice the resolution for 4x the compute), optionally narrower."""

    def build(in_chans: int, num_outputs: int, image_size: int, dropout: float) -> nn.Module:
        from monai.networks.nets import resnet

        net = getattr(resnet, f"resnet{depth}")(
            spatial_dims=2, n_input_channels=in_chans, num_classes=num_outputs, conv1_t_stride=2, widen_factor=width
        )
        if dropout:
            net.fc = nn.Sequential(nn.Dropout(dropout), net.fc)
        return net

    return build


def _monai_densenet121(in_chans: int, num_outputs: int, image_size: int, dropout: float) -> nn.Module:
    from monai.networks.nets import DenseNet121

    return DenseNet121(spatial_dims=2, in_channels=in_chans, out_channels=num_outputs, dropout_prob=dropout)


def _seed_cnn(in_chans: int, num_outputs: int, image_size: int, dropout: float) -> nn.Module:
    return SeedCNN(in_chans=in_chans, num_outputs=num_outputs, image_size=image_size)


_REGISTRY: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in (
        ModelSpec("seed_cnn", _seed_cnn, 180, 0.0, 1.0, "the notebook's separable-convolution CNN (3.5M parameters at 180 px)"),
        ModelSpec("resnet18", _monai_resnet(18), 224, 0.5, 0.25, "ResNet-18 (MONAI), single-channel input"),
        ModelSpec("resnet18_half", _monai_resnet(18, 0.5), 224, 0.5, 0.25, "ResNet-18 at half width (MONAI): 2.8M parameters, ~4x cheaper"),
        ModelSpec("resnet34", _monai_resnet(34), 224, 0.5, 0.25, "ResNet-34 (MONAI), single-channel input"),
        ModelSpec("densenet121", _monai_densenet121, 224, 0.5, 0.25, "DenseNet-121 (MONAI), single-channel input"),
    )
}


def available_models() -> list[str]:
    """Names accepted by `create_model`."""
    return sorted(_REGISTRY)


def model_spec(name: str) -> ModelSpec:
    """The spec of a registered model, or a PneumoError listing the names."""
    if name not in _REGISTRY:
        raise PneumoError(f"unknown model '{name}'; available: {', '.join(available_models())}")
    return _REGISTRY[name]


def create_model(
    name: str, num_outputs: int = 1, image_size: int | None = None, in_chans: int = 1, dropout: float = 0.0
) -> nn.Module:
    """Build a freshly initialised model from the registry.

    Example:
        >>> net = create_model("seed_cnn", num_outputs=1, image_size=180)
    """
    spec = model_spec(name)
    return spec.build(in_chans=in_chans, num_outputs=num_outputs, image_size=image_size or spec.image_size, dropout=dropout)
