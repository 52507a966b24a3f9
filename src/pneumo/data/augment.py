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

    Geometry (flip, rotation, zoom, aspect, shift) is one affine resampling per image; intensity
    changes (contrast, brightness, gamma, noise) follow, then an edge or corner may be blanked
    (`erase`), and the result is clipped to [0, 1].
    """
    if not cfg.enabled:
        return x
    b, device = x.shape[0], x.device
    if cfg.rotate_deg or cfg.scale or cfg.translate or cfg.hflip or cfg.aspect:
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
        if cfg.aspect:  # stretch one axis and squeeze the other: the same film at another original shape
            stretch = torch.exp(_uniform(b, cfg.aspect, generator, device) / 2)
            theta = theta * torch.stack([1 / stretch, stretch], dim=1).unsqueeze(2)
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
    if cfg.erase:
        x = _erase_edges(x, cfg.erase, generator)
    return x.clamp(0, 1)


def _erase_edges(x: torch.Tensor, probability: float, generator: torch.Generator) -> torch.Tensor:
    """Blank, in a `probability` share of the images, one band along an edge or one corner
    (3-15% of the side; a corner twice that), filled with a random grey: where side markers,
    labels and collimation edges sit, none of which is anatomy."""
    b, side, device = x.shape[0], x.shape[-1], x.device
    hit = torch.rand(b, generator=generator, device=device) < probability
    where = torch.randint(0, 8, (b, 1, 1), generator=generator, device=device)  # 0-3 an edge, 4-7 a corner
    width = (0.03 + 0.12 * torch.rand(b, generator=generator, device=device)).view(b, 1, 1)
    fill = torch.rand(b, generator=generator, device=device).view(b, 1, 1, 1)
    pos = (torch.arange(side, device=device, dtype=x.dtype) + 0.5) / side
    yy, xx = pos.view(1, side, 1).expand(b, side, side), pos.view(1, 1, side).expand(b, side, side)
    near = [yy < width, yy > 1 - width, xx < width, xx > 1 - width]  # top, bottom, left, right bands
    far = [yy < 2 * width, yy > 1 - 2 * width, xx < 2 * width, xx > 1 - 2 * width]
    regions = [*near, far[0] & far[2], far[0] & far[3], far[1] & far[2], far[1] & far[3]]
    mask = torch.zeros(b, side, side, dtype=torch.bool, device=device)
    for k, region in enumerate(regions):
        mask |= region & (where == k)
    mask &= hit.view(b, 1, 1)
    return torch.where(mask.unsqueeze(1), fill.to(x.dtype), x)
