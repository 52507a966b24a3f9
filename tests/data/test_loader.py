"""pneumo.data.loader.ArrayBatches: index-based batches over in-memory tensors."""

from __future__ import annotations

import pytest
import torch

from pneumo.data.loader import ArrayBatches


def _data(n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Image i is filled with i (mod 256) and its target is i, so every batch tells what it holds."""
    images = (torch.arange(n) % 256).to(torch.uint8).view(n, 1, 1).expand(n, 4, 4).contiguous()
    targets = torch.arange(n)
    return images, targets


def _epoch(batches: ArrayBatches) -> list[torch.Tensor]:
    out = []
    for x, y in batches:
        assert x.dtype == torch.uint8 and x.shape[1:] == (4, 4)
        assert len(x) == len(y)
        assert torch.equal(x[:, 0, 0], (y % 256).to(torch.uint8))  # images and targets stay paired
        out.append(y)
    return out


@pytest.mark.parametrize(("n", "batch_size"), [(10, 3), (12, 4), (1, 8), (300, 32)])
@pytest.mark.parametrize("shuffle", [False, True])
def test_every_index_once_per_epoch(n: int, batch_size: int, shuffle: bool) -> None:
    batches = ArrayBatches(*_data(n), batch_size=batch_size, shuffle=shuffle, seed=0)
    for _ in range(2):
        ys = _epoch(batches)
        assert len(ys) == len(batches) == -(-n // batch_size)
        assert all(len(y) == batch_size for y in ys[:-1])
        assert sorted(torch.cat(ys).tolist()) == list(range(n))


def test_no_shuffle_is_in_order() -> None:
    ys = _epoch(ArrayBatches(*_data(10), batch_size=4))
    assert [y.tolist() for y in ys] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]


def test_shuffle_is_deterministic_per_seed() -> None:
    def order(seed: int) -> list[list[int]]:
        batches = ArrayBatches(*_data(50), 8, shuffle=True, seed=seed)
        return [torch.cat(_epoch(batches)).tolist() for _ in range(2)]  # two epochs

    a, b, c = order(0), order(0), order(1)
    assert a == b
    assert a != c
    assert a[0] != list(range(50))  # really shuffled
    assert a[0] != a[1]  # a new order every epoch


def test_drop_last() -> None:
    batches = ArrayBatches(*_data(10), batch_size=3, shuffle=True, seed=0, drop_last=True)
    assert len(batches) == 3
    ys = _epoch(batches)
    assert len(ys) == 3 and all(len(y) == 3 for y in ys)
    assert len(set(torch.cat(ys).tolist())) == 9
    # exact multiple: nothing is dropped
    assert len(ArrayBatches(*_data(12), batch_size=4, drop_last=True)) == 3
    # fewer items than a batch: no batch at all
    assert len(ArrayBatches(*_data(3), batch_size=4, drop_last=True)) == 0
    assert _epoch(ArrayBatches(*_data(3), batch_size=4, drop_last=True)) == []


def test_len_without_drop_last() -> None:
    assert len(ArrayBatches(*_data(10), batch_size=3)) == 4
    assert len(ArrayBatches(*_data(9), batch_size=3)) == 3
    assert len(ArrayBatches(*_data(0), batch_size=3)) == 0


def test_lengths_must_match() -> None:
    images, targets = _data(5)
    with pytest.raises(ValueError, match="length"):
        ArrayBatches(images, targets[:4], batch_size=2)
