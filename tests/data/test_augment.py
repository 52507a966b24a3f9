"""pneumo.data.augment: seeded batch augmentation on real radiographs."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pneumo.config import AugmentConfig, load_config
from pneumo.data.augment import augment_batch
from pneumo.data.preprocess import load_image
from tests.conftest import pick

SIZE = 64


@pytest.fixture(scope="module")
def batch(shared_data) -> torch.Tensor:
    """Six real images as float [B, 1, S, S] in [0, 1]."""
    files = pick("NORMAL", 3, offset=4) + pick("PNEUMONIA", 3, offset=4)
    images = np.stack([load_image(f, SIZE) for f in files])
    return torch.from_numpy(images).float().div(255).unsqueeze(1)


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.fixture(scope="module")
def full() -> AugmentConfig:
    """The augmentation of the shipped CPU recipe, plus flips."""
    cfg = load_config("cpu").augment
    cfg.hflip = 0.5
    return cfg


def test_all_off_returns_the_batch_unchanged(batch: torch.Tensor) -> None:
    before = batch.clone()
    out = augment_batch(batch, AugmentConfig(), _gen(0))
    assert torch.equal(out, before)
    assert torch.equal(batch, before)


def test_augmented_batch(batch: torch.Tensor, full: AugmentConfig) -> None:
    before = batch.clone()
    out = augment_batch(batch, full, _gen(0))
    assert out.shape == batch.shape and out.dtype == batch.dtype
    assert out.min() >= 0.0 and out.max() <= 1.0
    assert torch.equal(batch, before)  # the input is not modified in place
    # every image is changed, yet each stays the same radiograph, not noise
    for i in range(len(batch)):
        assert not torch.allclose(out[i], batch[i], atol=1e-3)
        corr = np.corrcoef(out[i].flatten().numpy(), batch[i].flatten().numpy())[0, 1]
        assert corr > 0.5, i


def test_same_seed_same_output(batch: torch.Tensor, full: AugmentConfig) -> None:
    assert torch.equal(augment_batch(batch, full, _gen(7)), augment_batch(batch, full, _gen(7)))


def test_different_seed_different_output(batch: torch.Tensor, full: AugmentConfig) -> None:
    assert not torch.allclose(augment_batch(batch, full, _gen(7)), augment_batch(batch, full, _gen(8)), atol=1e-3)


def test_generator_advances(batch: torch.Tensor, full: AugmentConfig) -> None:
    g = _gen(3)
    first, second = augment_batch(batch, full, g), augment_batch(batch, full, g)
    assert not torch.allclose(first, second, atol=1e-3)


def test_certain_flip_mirrors_exactly(batch: torch.Tensor) -> None:
    out = augment_batch(batch, AugmentConfig(hflip=1.0), _gen(0))
    assert torch.allclose(out, torch.flip(batch, dims=[3]), atol=1e-5)


def test_brightness_only_shifts_each_image_by_a_constant(batch: torch.Tensor) -> None:
    limit = 0.1
    out = augment_batch(batch, AugmentConfig(brightness=limit), _gen(0))
    for i in range(len(batch)):
        inside = (batch[i] > limit) & (batch[i] < 1 - limit)  # pixels no shift can clip
        shift = (out[i] - batch[i])[inside]
        assert shift.max() - shift.min() < 1e-5
        assert abs(float(shift.mean())) <= limit + 1e-6
    assert not torch.equal(out, batch)


def test_rotation_keeps_the_centre_pixel(batch: torch.Tensor) -> None:
    # rotation about the image centre with no zoom or shift: the centre stays close to where it was
    out = augment_batch(batch, AugmentConfig(rotate_deg=30), _gen(0))
    c = SIZE // 2
    centre = slice(c - 1, c + 1)
    assert torch.allclose(out[..., centre, centre], batch[..., centre, centre], atol=0.1)
    assert not torch.allclose(out, batch, atol=1e-3)


def test_aspect_stretches_one_axis_and_squeezes_the_other(batch: torch.Tensor) -> None:
    square = torch.zeros(1, 1, SIZE, SIZE)
    square[..., 16:48, 16:48] = 1.0  # a centred square, half the side
    out = augment_batch(square.repeat(64, 1, 1, 1), AugmentConfig(aspect=0.29), _gen(3))
    widths, heights = (out > 0.5).any(dim=2).sum(-1).flatten().float(), (out > 0.5).any(dim=3).sum(-1).flatten().float()
    ratios = widths / heights
    assert ratios.min() < 0.9 and ratios.max() > 1.1  # stretched both ways across the batch
    assert ratios.min() > 0.7 and ratios.max() < 1.45  # within exp(+-0.29) and pixel rounding
    assert ((widths * heights) / (32 * 32)).sub(1).abs().max() < 0.2  # area kept: a shape change, not a zoom


def test_erase_blanks_an_edge_or_a_corner_and_leaves_the_middle(batch: torch.Tensor) -> None:
    out = augment_batch(batch.repeat(20, 1, 1, 1), AugmentConfig(erase=1.0), _gen(4))
    changed = out != batch.repeat(20, 1, 1, 1)
    assert changed.flatten(1).any(dim=1).all()  # every image lost a band or a corner
    middle = slice(int(0.3 * SIZE), int(0.7 * SIZE))
    assert not changed[..., middle, middle].any()  # never the lungs' middle
    frac = changed.flatten(1).float().mean(dim=1)
    assert frac.max() <= 0.3 + 1e-6  # at most a 15% band or a 30% x 30% corner
    for img, mask in zip(out, changed):  # filled with one grey
        assert img[mask].unique().numel() == 1
    assert torch.equal(augment_batch(batch, AugmentConfig(erase=0.0), _gen(4)), batch)
