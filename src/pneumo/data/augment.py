"""Batch augmentation with plain torch ops, so it runs wherever the batch is (CPU or GPU)."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from pneumo.config import AugmentConfig

__all__ = ["augment_batch"]


def _uniform(n: int, limit: float, generator: torch.Generator, device: torch.device) -> torch.Tensor:
    return (torch.rand(n, generator=generator, device=device) * 2 - 1) * limit


def augment_batch(x: torch.Tensor, cfg: AugmentConfig, generator: torch.Generator) -> torch.Tensor:
    """Randomly transform a float batch [B, 1, H, W] with values in [0, 1]; returns a new batch.

    Geometry (flip, rotation, zoom, shift) is one affine resampling per image; intensity
    changes (contrast, brightness, gamma, noise) follow, and the result is clipped to [0, 1].
    """
    if not cfg.enabled:
        return x
    b, device = x.shape[0], x.device
    if cfg.rotate_deg or cfg.scale or cfg.translate or cfg.hflip:
        angle = _uniform(b, math.radians(cfg.rotate_deg), generator, device)
        zoom = 1 + _uniform(b, cfg.scale, generator, device)
        flip = torch.where(torch.rand(b, generator=generator, device=device) < cfg.hflip, -1.0, 1.0)
        cos, sin = torch.cos(angle) / zoom, torch.sin(angle) / zoom
        theta = torch.stack(
            [
                torch.stack([cos * flip, -sin, _uniform(b, 2 * cfg.translate, generator, device)], dim=1),
                torch.stack([sin * flip, cos, _uniform(b, 2 * cfg.translate, generator, device)], dim=1),
            ],
            dim=1,
        )
        grid = F.affine_grid(theta.to(x.dtype), list(x.shape), align_corners=False)
        x = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
    if cfg.contrast:
        mean = x.mean(dim=(1, 2, 3), keepdim=True)
        x = (x - mean) * (1 + _uniform(b, cfg.contrast, generator, device)).view(b, 1, 1, 1) + mean
    if cfg.brightness:
        x = x + _uniform(b, cfg.brightness, generator, device).view(b, 1, 1, 1)
    if cfg.gamma:
        x = x.clamp(1e-4, 1).pow(torch.exp(_uniform(b, cfg.gamma, generator, device)).view(b, 1, 1, 1))
    if cfg.noise:
        sigma = torch.rand(b, generator=generator, device=device).view(b, 1, 1, 1) * cfg.noise
        x = x + sigma * torch.randn(x.shape, generator=generator, device=device, dtype=x.dtype)
    return x.clamp(0, 1)
