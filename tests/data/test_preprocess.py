"""The one preprocessing path, decode -> resize -> normalise, on real films, and the refusals of `check_image_batch`.

Training, evaluation, prediction and the service all go through these functions, so these tests pin what a
model sees: shape, dtype, range, and that a file gives the same pixels however it is reached.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from pneumo.data.io import read_image
from pneumo.data.preprocess import (
    check_image_batch,
    load_image,
    load_image_with_info,
    normalise,
    resize_image,
    trim_black_margin,
)
from pneumo.errors import PneumoError
from pneumo.models.registry import model_spec
from tests.conftest import SAMPLES, pick


@pytest.fixture(scope="module")
def films(shared_data: Path) -> list[Path]:
    """Six real training films, three per class, spread over the folders."""
    return pick("NORMAL", 3, offset=2) + pick("PNEUMONIA", 3, offset=2)


# --- stage 1: decode and resize -------------------------------------------------------------------


@pytest.mark.parametrize("size", [32, 64, 180, 224])
def test_real_films_load_as_writable_uint8_squares(films: list[Path], size: int) -> None:
    for film in films:
        image = load_image(film, size)
        assert image.shape == (size, size) and image.dtype == np.uint8
        assert image.flags.writeable and image.flags.c_contiguous  # torch.from_numpy takes it as is
        assert image.std() > 10  # a radiograph, not a flat field


def test_a_film_already_at_the_size_comes_through_pixel_for_pixel(films: list[Path]) -> None:
    """The copy in the shared data is 224 px: at 224 a film without a black margin is not resampled."""
    whole = [read_image(film) for film in films if trim_black_margin(read_image(film)).shape == (224, 224)]
    assert len(whole) >= 3
    for decoded in whole:
        assert np.array_equal(resize_image(decoded, 224), decoded)


def test_load_image_with_info_says_what_the_file_was(films: list[Path]) -> None:
    image, info = load_image_with_info(films[0], 64)
    assert np.array_equal(image, load_image(films[0], 64))
    assert (info.format, info.width, info.height, info.frames) == ("JPEG", 224, 224, 1)
    assert info.colourfulness < 2  # stored as RGB, but gray


@pytest.mark.parametrize(
    ("name", "fmt", "side"),
    [
        ("other/adult_rgb_2373px.jpg", "JPEG", 2373),
        ("other/nih_00000001_000.png", "PNG", 512),
        ("dicom/cr_chest_pa_monochrome1.dcm", "DICOM", 1024),
        ("dicom/dx_chest_uncompressed.dcm", "DICOM", 1024),
    ],
)
def test_other_formats_and_sizes_reach_the_same_shape(shared_data: Path, name: str, fmt: str, side: int) -> None:
    """A big JPEG may be decoded at reduced scale (size_hint); what comes out is close to resizing the full decode."""
    image, info = load_image_with_info(SAMPLES / name, 64)
    assert image.shape == (64, 64) and image.dtype == np.uint8
    assert (info.format, info.width, info.height) == (fmt, side, side)
    reference = resize_image(read_image(SAMPLES / name), 64).astype(int)
    assert np.abs(image.astype(int) - reference).mean() < 2


def test_a_missing_file_is_a_pneumo_error_naming_it(tmp_path: Path) -> None:
    with pytest.raises(PneumoError, match="nothing.jpeg"):
        load_image(tmp_path / "nothing.jpeg", 64)


def test_resize_at_the_same_size_returns_a_writable_copy() -> None:
    image = np.arange(64 * 64, dtype=np.uint32).reshape(64, 64).astype(np.uint8)
    image.setflags(write=False)  # as np.frombuffer or a memory-mapped cache gives it
    out = resize_image(image, 64)
    assert np.array_equal(out, image) and out.flags.writeable and not np.shares_memory(out, image)


def test_resize_stretches_rather_than_crops_or_pads() -> None:
    """The aspect ratio is not kept (as in the notebook): a wide image's left half stays the left half."""
    wide = np.full((100, 300), 40, dtype=np.uint8)  # dark grey: film, not a black margin
    wide[:, 150:] = 200
    out = resize_image(wide, 64)
    assert out.shape == (64, 64)
    assert (out[:, :31] == 40).all() and (out[:, 33:] == 200).all()  # the edge stays in the middle, no border added


@pytest.mark.parametrize("border", [(40, 40, 40, 40), (0, 0, 25, 25), (60, 0, 0, 0)])
def test_a_black_border_around_a_film_is_a_no_op(films: list[Path], tmp_path: Path, border: tuple[int, int, int, int]) -> None:
    """A film padded with black (to a square, or by a scanner's frame) reads as the same pixels as the film alone."""
    film = read_image(films[0])
    top, bottom, left, right = border
    padded = np.zeros((film.shape[0] + top + bottom, film.shape[1] + left + right), dtype=np.uint8)
    padded[top : top + film.shape[0], left : left + film.shape[1]] = film
    Image.fromarray(padded).save(tmp_path / "padded.png")
    Image.fromarray(film).save(tmp_path / "film.png")
    assert np.array_equal(load_image(tmp_path / "padded.png", 160), load_image(tmp_path / "film.png", 160))


def test_only_a_margin_is_trimmed_not_a_dark_image_or_dark_film() -> None:
    margin = np.zeros((100, 100), dtype=np.uint8)
    margin[10:90, 5:95] = 120
    assert trim_black_margin(margin).shape == (80, 90)
    dark = np.zeros((100, 100), dtype=np.uint8)
    dark[40:60, 40:60] = 200  # most of the image is dark: no film with a margin, kept whole
    assert trim_black_margin(dark).shape == (100, 100)
    assert trim_black_margin(np.zeros((50, 50), dtype=np.uint8)).shape == (50, 50)
    inside = np.full((100, 100), 120, dtype=np.uint8)
    inside[30:70, 30:70] = 0  # black inside the film is the film's
    assert np.array_equal(trim_black_margin(inside), inside)


def test_resize_is_antialiased() -> None:
    """A one-pixel checkerboard shrinks to mid-gray, not to an aliased pattern of 0 and 255."""
    checker = (np.indices((224, 224)).sum(axis=0) % 2 * 255).astype(np.uint8)
    out = resize_image(checker, 32)
    assert np.abs(out.astype(int) - 127).max() <= 2


def test_resize_is_pillows_bilinear_on_a_real_film(films: list[Path]) -> None:
    """Stage 1 is part of the cache key (PREPROCESS_VERSION): pin the resampler it uses."""
    decoded = trim_black_margin(read_image(films[3]))
    expected = np.asarray(Image.fromarray(decoded).resize((100, 100), Image.Resampling.BILINEAR))
    assert np.array_equal(resize_image(decoded, 100), expected)
    nearest = np.asarray(Image.fromarray(decoded).resize((100, 100), Image.Resampling.NEAREST))
    assert not np.array_equal(resize_image(decoded, 100), nearest)


def test_stage_one_needs_no_torch(films: list[Path]) -> None:
    """The ONNX runtime path decodes and resizes without importing torch."""
    code = (
        "import sys; from pneumo.data.preprocess import load_image; "
        f"image = load_image({str(films[0])!r}, 64); "
        "assert image.shape == (64, 64), image.shape; "
        "assert 'torch' not in sys.modules, 'torch was imported'"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr[-800:]


# --- the batch check -------------------------------------------------------------------------------


def test_a_batch_of_loaded_films_passes_unchanged(films: list[Path]) -> None:
    batch = np.stack([load_image(f, 64) for f in films])
    assert check_image_batch(batch, 64) is batch
    from_list = check_image_batch([load_image(f, 64) for f in films[:2]], 64)
    assert from_list.shape == (2, 64, 64) and from_list.dtype == np.uint8 and np.array_equal(from_list, batch[:2])


def test_an_empty_batch_is_allowed_unless_refused() -> None:
    empty = np.zeros((0, 64, 64), dtype=np.uint8)
    assert check_image_batch(empty, 64).shape == (0, 64, 64)
    with pytest.raises(PneumoError, match=r"^the model needs uint8 images \[N, 64, 64\] with N >= 1; got uint8 \[0, 64, 64\]"):
        check_image_batch(empty, 64, allow_empty=False)


@pytest.mark.parametrize(
    ("images", "got"),
    [
        (np.zeros((2, 64, 64), np.float32), "float32 [2, 64, 64]"),  # already normalised: stage 2 would do it twice
        (np.zeros((2, 64, 64), np.uint16), "uint16 [2, 64, 64]"),
        (np.zeros((2, 1, 64, 64), np.uint8), "uint8 [2, 1, 64, 64]"),  # a channel axis
        (np.zeros((64, 64), np.uint8), "uint8 [64, 64]"),  # one image, not a batch
        (np.zeros((2, 32, 32), np.uint8), "uint8 [2, 32, 32]"),  # the wrong size
        (np.zeros((2, 64, 32), np.uint8), "uint8 [2, 64, 32]"),
        ([[[0, 1], [2, 3]]], "int64 [1, 2, 2]"),  # plain Python numbers
    ],
)
def test_anything_else_is_refused_saying_how_to_make_a_batch(images: object, got: str) -> None:
    with pytest.raises(PneumoError) as err:
        check_image_batch(images, 64, what="seed_cnn")
    assert str(err.value) == (
        f"seed_cnn needs uint8 images [N, 64, 64]; got {got}: load them with pneumo.data.preprocess.load_image(path, 64)"
    )


# --- stage 2: normalise ----------------------------------------------------------------------------


@pytest.mark.parametrize("model", ["seed_cnn", "resnet18"])
def test_loaded_films_normalise_with_the_models_mean_and_std(films: list[Path], model: str) -> None:
    spec = model_spec(model)
    pixels = np.stack([load_image(f, 64) for f in films])
    before = pixels.copy()
    out = normalise(torch.from_numpy(pixels), spec.mean, spec.std)
    assert out.shape == (len(films), 1, 64, 64) and out.dtype == torch.float32
    expected = (pixels.astype(np.float64) / 255 - spec.mean) / spec.std
    assert np.allclose(out[:, 0].numpy(), expected, atol=1e-5)
    low, high = (0 - spec.mean) / spec.std, (1 - spec.mean) / spec.std
    assert low - 1e-6 <= out.min().item() and out.max().item() <= high + 1e-6
    assert out.min().item() < low + 0.5 and out.max().item() > high - 0.5  # real films use most of the range
    assert np.array_equal(pixels, before)  # the caller's array is not touched


def test_float_batches_in_0_1_give_the_same_result(films: list[Path]) -> None:
    u8 = torch.from_numpy(np.stack([load_image(f, 32) for f in films[:2]]))
    as_float = u8.float() / 255
    kept = as_float.clone()
    with_channel, without = normalise(as_float.unsqueeze(1), 0.5, 0.25), normalise(as_float, 0.5, 0.25)
    assert torch.allclose(normalise(u8, 0.5, 0.25), with_channel, atol=1e-6)
    assert torch.equal(with_channel, without) and without.shape == (2, 1, 32, 32)
    assert torch.equal(as_float, kept)  # normalised out of place


def test_normalise_keeps_the_batch_on_its_device_and_in_its_order() -> None:
    batch = torch.stack([torch.full((8, 8), v, dtype=torch.uint8) for v in (0, 51, 255)])
    out = normalise(batch, 0.0, 1.0)
    assert out.device == batch.device and out[:, 0, 0, 0].tolist() == pytest.approx([0.0, 0.2, 1.0])
