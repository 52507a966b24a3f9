"""Images a notebook holds become the same pixels a file would give, or a one-line PneumoError."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from pneumo.data.in_memory import image_from_object, is_in_memory_image
from pneumo.data.io import read_image_with_info
from pneumo.errors import PneumoError
from tests.conftest import pick


@pytest.fixture(scope="module")
def film(shared_data: Path) -> Path:
    return pick("PNEUMONIA", 1)[0]


def test_every_form_of_one_film_gives_the_files_pixels(film: Path) -> None:
    from_file, _ = read_image_with_info(film)
    image = Image.open(film)
    grey = np.asarray(image.convert("L"))
    forms = {
        "bytes": film.read_bytes(),
        "PIL": image,
        "array": grey,
        "array [H, W, 1]": grey[..., None],
        "RGB array": np.repeat(grey[..., None], 3, axis=-1),
        "RGBA array": np.dstack([grey, grey, grey, np.full_like(grey, 255)]),
        "float array in [0, 1]": grey / 255.0,
        "tensor [H, W]": torch.from_numpy(grey.copy()),
        "tensor [3, H, W]": torch.from_numpy(np.repeat(grey[None], 3, axis=0)),
    }
    for form, obj in forms.items():
        assert is_in_memory_image(obj), form
        pixels, info = image_from_object(obj, form)
        assert pixels.dtype == np.uint8 and pixels.shape == from_file.shape, form
        assert np.abs(pixels.astype(int) - from_file.astype(int)).max() <= 1, form
        assert info.width == from_file.shape[1] and info.height == from_file.shape[0], form
        assert info.colourfulness < 1.0, form  # a grey film stored as colour is still grey


def test_deep_and_odd_numbers_are_stretched_like_deep_files(film: Path) -> None:
    grey = np.asarray(Image.open(film).convert("L")).astype(np.uint16) * 257  # a 16-bit copy
    pixels, _ = image_from_object(grey, "deep")
    assert pixels.min() == 0 and pixels.max() == 255
    assert np.corrcoef(pixels.ravel(), grey.ravel())[0, 1] > 0.999
    mask, _ = image_from_object(np.eye(8, dtype=bool), "mask")
    assert set(np.unique(mask)) == {0, 255}


def test_colour_is_measured_so_the_checks_can_warn() -> None:
    rng = np.random.default_rng(0)
    photo = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
    assert image_from_object(photo, "photo")[1].colourfulness > 20
    buffer = io.BytesIO()
    Image.fromarray(photo).save(buffer, format="PNG")
    assert image_from_object(Image.open(buffer), "pil photo")[1].colourfulness > 20


@pytest.mark.parametrize(
    ("obj", "message"),
    [
        (np.zeros((4, 4, 4, 4), dtype=np.uint8), "must be [H, W] grey or [H, W, C] colour"),
        (np.zeros((0, 5), dtype=np.uint8), "empty"),
        (np.full((8, 8), np.nan), "NaN or infinite"),
        (np.full((8, 8), 7.0), "same value"),
        (np.array([["a", "b"], ["c", "d"]]), "must be numbers"),
        (b"not an image", "<given>"),
        (12, "a int is not an image"),
    ],
)
def test_what_is_not_an_image_is_refused_with_what_was_given(obj: object, message: str) -> None:
    with pytest.raises(PneumoError, match=r"^<given>") as err:
        image_from_object(obj, "<given>")
    assert message in str(err.value)
