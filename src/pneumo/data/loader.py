"""Batches drawn by index from an in-memory uint8 array: no per-sample Python work."""
from __future__ import annotations

from typing import Iterator

import torch

__all__ = ["ArrayBatches"]


class ArrayBatches:
    """Iterate (images uint8 [B, S, S], targets [B]) over tensors already on their device.

    Example:
        >>> batches = ArrayBatches(images, targets, batch_size=16, shuffle=True, seed=0)
        >>> x, y = next(iter(batches))
    """

    def __init__(
        self,
        images: torch.Tensor,
        targets: torch.Tensor,
        batch_size: int,
        shuffle: bool = False,
        seed: int = 0,
        drop_last: bool = False,
    ) -> None:
        if len(images) != len(targets):
            raise ValueError("images and targets differ in length")
        self.images, self.targets = images, targets
        self.batch_size, self.shuffle, self.drop_last = batch_size, shuffle, drop_last
        self.generator = torch.Generator().manual_seed(seed)

    def __len__(self) -> int:
        n = len(self.images)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        n = len(self.images)
        order = torch.randperm(n, generator=self.generator) if self.shuffle else torch.arange(n)
        order = order.to(self.images.device)
        for i in range(len(self)):
            idx = order[i * self.batch_size : (i + 1) * self.batch_size]
            yield self.images[idx], self.targets[idx]
