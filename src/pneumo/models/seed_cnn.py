"""The notebook's network, layer for layer, with Keras's defaults.

Keras defaults reproduced: glorot-uniform kernels and zero biases; BatchNormalization
momentum 0.99 (PyTorch momentum 0.01) and epsilon 1e-3; SeparableConv2D = depthwise 3x3
then pointwise 1x1 with the bias and ReLU after the pointwise step. The final sigmoid is
folded into the loss (BCE with logits), which is the same function, computed stably.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["SeedCNN"]

_BN = {"momentum": 0.01, "eps": 1e-3}


class SeparableConv2d(nn.Module):
    """Keras SeparableConv2D(filters, 3, padding='same', activation='relu')."""

    def __init__(self, in_ch: int, out_ch: int) -> None:
        super().__init__()
        self.depthwise = nn.Conv2d(in_ch, in_ch, 3, padding=1, groups=in_ch, bias=False)
        self.pointwise = nn.Conv2d(in_ch, out_ch, 1, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.pointwise(self.depthwise(x)))


def conv_block(in_ch: int, out_ch: int) -> nn.Sequential:
    """SeparableConv2D x2 -> BatchNorm -> MaxPool."""
    return nn.Sequential(SeparableConv2d(in_ch, out_ch), SeparableConv2d(out_ch, out_ch), nn.BatchNorm2d(out_ch, **_BN), nn.MaxPool2d(2))


def dense_block(in_features: int, units: int, dropout: float) -> nn.Sequential:
    """Dense(relu) -> BatchNorm -> Dropout."""
    return nn.Sequential(nn.Linear(in_features, units), nn.ReLU(), nn.BatchNorm1d(units, **_BN), nn.Dropout(dropout))


class SeedCNN(nn.Module):
    """Conv(16)x2 -> pool -> blocks 32, 64, 128, drop 0.2, 256, drop 0.2 -> dense 512/128/64 -> logits."""

    def __init__(self, in_chans: int = 1, num_outputs: int = 1, image_size: int = 180) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(in_chans, 16, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(16, 16, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            conv_block(16, 32),
            conv_block(32, 64),
            conv_block(64, 128),
            nn.Dropout(0.2),
            conv_block(128, 256),
            nn.Dropout(0.2),
        )
        side = image_size
        for _ in range(5):  # five 2x2 max-pools, each flooring like Keras's 'valid' pooling
            side //= 2
        if side < 1:
            raise ValueError(f"image_size {image_size} is too small for seed_cnn (needs at least 32)")
        self.classifier = nn.Sequential(
            nn.Flatten(),
            dense_block(256 * side * side, 512, 0.7),
            dense_block(512, 128, 0.5),
            dense_block(128, 64, 0.3),
            nn.Linear(64, num_outputs),
        )
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.xavier_uniform_(m.weight)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))
