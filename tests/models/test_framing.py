from __future__ import annotations

import numpy as np
import pytest
import torch

from pneumo.data.preprocess import load_image
from pneumo.evaluation.robustness import apply_shift
from pneumo.models import create_model
from pneumo.models.framing import ContentCrop, content_crop_of, without_pre_hooks
from tests.conftest import pick


@pytest.fixture(scope="module")
def films() -> np.ndarray:
    """uint8 [8, 224, 224]: real training films, both classes."""
    return np.stack([load_image(p, 224) for p in pick("NORMAL", 4) + pick("PNEUMONIA", 4)])


def _raw(images: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(images).float().div(255)


def test_a_black_margin_is_found_and_cropped_away(films: np.ndarray) -> None:
    crop = ContentCrop(0.0, 1.0)
    looser = apply_shift(films, "looser (15% black margin)")  # the film shrunk into a black frame of 29 px
    plain, framed = crop.raw_boxes(_raw(films)), crop.raw_boxes(_raw(looser))
    margin = round(0.15 * 224) * 224 / (224 + 2 * round(0.15 * 224))
    # the framed film's box sits inside the margin, at the plain film's box shrunk by the same factor
    expected = margin + plain * (224 - 2 * margin) / 224
    assert torch.all((framed - expected).abs() <= 3), (framed, expected)
    # after the crop, the framed film looks like the plain one cropped: most of the frame's effect is gone
    x, y = crop(_raw(films).unsqueeze(1)), crop(_raw(looser).unsqueeze(1))
    assert (x - y).abs().mean() < 0.25 * (_raw(films) - _raw(looser)).abs().mean()


def test_a_film_without_margins_keeps_its_rows_and_a_box_too_small_is_not_trusted(films: np.ndarray) -> None:
    crop = ContentCrop(0.0, 1.0)
    boxes = crop.raw_boxes(_raw(films))
    assert torch.all(boxes[:, 1] - boxes[:, 0] >= 112) and torch.all(boxes[:, 3] - boxes[:, 2] >= 112)
    sliver = torch.zeros(1, 224, 224)
    sliver[:, :, 100:130] = 0.8  # a bright strip 30 px wide: narrower than half the side
    assert crop.raw_boxes(sliver).tolist() == [[0.0, 224.0, 0.0, 224.0]]
    whole = torch.full((1, 1, 224, 224), 0.5)
    assert torch.allclose(crop(whole), whole)


def test_uncrop_puts_a_map_back_where_it_came_from(films: np.ndarray) -> None:
    crop = ContentCrop(0.0, 1.0)
    looser = _raw(apply_shift(films, "looser (15% black margin)"))
    boxes = crop.raw_boxes(looser)
    back = crop.uncrop(crop(looser.unsqueeze(1))[:, 0], boxes)
    inside = torch.zeros_like(looser, dtype=torch.bool)
    for i, (top, bottom, left, right) in enumerate(boxes.long().tolist()):
        inside[i, top + 2 : bottom - 2, left + 2 : right - 2] = True
    assert (back - looser)[inside].abs().mean() < 0.02  # the round trip only blurs by resampling
    outside = torch.ones_like(inside)
    for i, (top, bottom, left, right) in enumerate(boxes.long().tolist()):
        outside[i, top:bottom, left:right] = False
    assert back[outside].abs().max() < 1e-6  # nothing lands in the margin


def test_a_cropping_model_keeps_the_bare_networks_weights_and_crops_what_it_is_given(films: np.ndarray) -> None:
    torch.manual_seed(0)
    bare = create_model("resnet18_half", num_outputs=1, image_size=224).eval()
    cropping = create_model("resnet18_half", num_outputs=1, image_size=224, crop="content").eval()
    assert cropping.state_dict().keys() == bare.state_dict().keys() and content_crop_of(bare) is None
    cropping.load_state_dict(bare.state_dict())
    x = (_raw(apply_shift(films[::4], "looser (15% black margin)")).unsqueeze(1) - 0.5) / 0.25  # normalised, as the network is fed
    with torch.no_grad():
        assert torch.allclose(cropping(x), bare(content_crop_of(cropping)(x)), atol=1e-5)
        assert (content_crop_of(cropping)(x) - x).abs().mean() > 0.05  # the margin is gone: another input
        with without_pre_hooks(cropping):  # what CUDA-graph recording sees: the bare network
            assert torch.allclose(cropping(x), bare(x), atol=1e-5)
            assert not cropping._forward_pre_hooks
        assert torch.allclose(cropping(x), bare(content_crop_of(cropping)(x)), atol=1e-5)
