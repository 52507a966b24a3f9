"""Batches drawn by index from an in-memory uint8 array: no per-sample Python work."""

from __future__ import annotations

from typing import Iterator

import torch

__all__ = ["ArrayBatches"]


class ArrayBatches:
    """Iterate (images uint8 [B, S, S], targets [B]) over tensors already on their device.

    In a data-parallel run (world_size > 1) every process holds all the images and draws the
    same order each pass (same seed), cut to a multiple of world_size, and keeps positions
    rank::world_size of it: every process takes the same number of equal batches, and batch i
    over all processes holds exactly the images one process would take as its batch i with
    batch_size * world_size.

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
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        if len(images) != len(targets):
            raise ValueError("images and targets differ in length")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is not one of the {world_size} processes")
        self.images, self.targets = images, targets
        self.batch_size, self.shuffle, self.drop_last = batch_size, shuffle, drop_last
        self.rank, self.world_size = rank, world_size
        self.generator = torch.Generator().manual_seed(seed)

    def __len__(self) -> int:
        n = len(self.images) // self.world_size  # this process's share
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def index_batches(self) -> Iterator[torch.Tensor]:
        """One pass: the indices of each batch (on the images' device), for callers that look up more than images and targets."""
        n = len(self.images)
        order = torch.randperm(n, generator=self.generator) if self.shuffle else torch.arange(n)
        order = order[: n - n % self.world_size][self.rank :: self.world_size].to(self.images.device)
        for i in range(len(self)):
            yield order[i * self.batch_size : (i + 1) * self.batch_size]

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for idx in self.index_batches():
            yield self.images[idx], self.targets[idx]
