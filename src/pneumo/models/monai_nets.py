"""MONAI's ResNets and DenseNet-121 for single-channel 2-D films, registered by name."""

from __future__ import annotations

from typing import Callable

from torch import nn

__all__ = ["monai_resnet", "monai_densenet121"]


def monai_resnet(depth: int, width: float = 1.0) -> Callable[..., nn.Module]:
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


def monai_densenet121(in_chans: int, num_outputs: int, image_size: int, dropout: float) -> nn.Module:
    from monai.networks.nets import DenseNet121

    return DenseNet121(spatial_dims=2, in_channels=in_chans, out_channels=num_outputs, dropout_prob=dropout)
