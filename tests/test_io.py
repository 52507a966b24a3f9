"""pneumo.data.io and pneumo.preprocess: decoding any image mode to uint8 gray, resizing, normalising."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import SAMPLES, pick
from pneumo.data.io import decode_image, read_image
from pneumo.errors import PneumoError
from pneumo.preprocess import load_image, normalise, resize_image


@pytest.fixture(scope="module")
def real_jpeg(shared_data: Path) -> Path:
    return pick("PNEUMONIA", 1, offset=7)[0]


@pytest.fixture(scope="module")
def gray(real_jpeg: Path) -> np.ndarray:
    """A real radiograph as PIL decodes it, first channel (the three are identical)."""
    with Image.open(real_jpeg) as im:
        return np.asarray(im.convert("RGB"))[..., 0].copy()


# --- real files ---------------------------------------------------------------------------------


@pytest.mark.parametrize("offset", [0, 5, 11])
def test_real_jpeg_is_first_channel_of_rgb(shared_data: Path, offset: int) -> None:
    for path in pick("NORMAL", 2, offset) + pick("PNEUMONIA", 2, offset):
        with Image.open(path) as im:
            assert im.mode == "RGB"
            rgb = np.asarray(im.convert("RGB"))
        assert np.array_equal(rgb[..., 0], rgb[..., 1]) and np.array_equal(rgb[..., 0], rgb[..., 2])
        image = read_image(path)
        assert image.dtype == np.uint8 and image.shape == (224, 224)
        assert np.array_equal(image, rgb[..., 0])
        # the reduced-scale (draft) path decodes the same pixels when no reduction is needed
        assert np.array_equal(read_image(path, size_hint=224), image)


@pytest.mark.parametrize("name", ["nih_00000001_000.png", "nih_00027426_000.png"])
def test_sample_pngs_decode(name: str, shared_data: Path) -> None:
    path = SAMPLES / "other" / name
    image = read_image(path)
    with Image.open(path) as im:
        expected = np.asarray(im.convert("L"))
    assert image.dtype == np.uint8 and image.ndim == 2
    assert image.shape == (512, 512)
    assert np.array_equal(image, expected)
    assert image.std() > 10  # a radiograph, not a blank


def test_large_rgb_jpeg_decodes_at_reduced_scale(shared_data: Path) -> None:
    path = SAMPLES / "other" / "adult_rgb_2373px.jpg"
    full = read_image(path)
    assert full.shape == (2373, 2373) and full.dtype == np.uint8
    reduced = read_image(path, size_hint=224)
    # JPEG draft scaling halves the side while it stays at least 2 x 224
    assert all(448 <= s < 2373 for s in reduced.shape)
    small = load_image(path, 224)
    assert small.shape == (224, 224) and small.dtype == np.uint8
    reference = resize_image(full, 224).astype(int)
    assert np.abs(small.astype(int) - reference).mean() < 3  # same picture either way


# --- files built from a real image, one per PIL mode -----------------------------------------------


def _save(image: Image.Image, path: Path, fmt: str, **kw) -> Path:
    image.save(path, fmt, **kw)
    return path


def test_grayscale_png(tmp_path: Path, gray: np.ndarray) -> None:
    path = _save(Image.fromarray(gray, "L"), tmp_path / "g.png", "PNG")
    assert np.array_equal(read_image(path), gray)


def test_rgb_png_identical_channels(tmp_path: Path, gray: np.ndarray) -> None:
    path = _save(Image.fromarray(np.stack([gray] * 3, axis=-1), "RGB"), tmp_path / "rgb.png", "PNG")
    assert np.array_equal(read_image(path), gray)


def test_rgb_png_coloured_uses_luma(tmp_path: Path, gray: np.ndarray) -> None:
    rgb = np.stack([gray, 255 - gray, gray // 2], axis=-1).astype(np.uint8)
    path = _save(Image.fromarray(rgb, "RGB"), tmp_path / "colour.png", "PNG")
    image = read_image(path)
    luma = 0.299 * rgb[..., 0] + 0.587 * rgb[..., 1] + 0.114 * rgb[..., 2]
    assert image.shape == gray.shape and image.dtype == np.uint8
    assert np.abs(image.astype(float) - luma).max() <= 1.0


def test_rgba_png_drops_alpha(tmp_path: Path, gray: np.ndarray) -> None:
    alpha = np.tile(np.linspace(0, 255, gray.shape[1]).astype(np.uint8), (gray.shape[0], 1))
    rgba = np.stack([gray, gray, gray, alpha], axis=-1)
    path = _save(Image.fromarray(rgba, "RGBA"), tmp_path / "rgba.png", "PNG")
    assert np.array_equal(read_image(path), gray)


def test_gray_alpha_png(tmp_path: Path, gray: np.ndarray) -> None:
    la = Image.merge("LA", [Image.fromarray(gray), Image.new("L", (gray.shape[1], gray.shape[0]), 128)])
    path = _save(la, tmp_path / "la.png", "PNG")
    assert np.array_equal(read_image(path), gray)


def test_16bit_png_is_stretched(tmp_path: Path, gray: np.ndarray) -> None:
    # a 12-bit detector's values stored in 16 bits: 1000 + 10 * gray (so only ~2550 of 65535 levels in use)
    deep = gray.astype(np.uint16) * 10 + 1000
    im = Image.fromarray(deep)
    assert im.mode == "I;16"
    path = _save(im, tmp_path / "deep.png", "PNG")
    with Image.open(path) as check:
        assert check.mode.startswith("I")  # really stored as 16-bit
    image = read_image(path)
    assert image.dtype == np.uint8 and image.shape == gray.shape
    assert image.min() == 0 and image.max() == 255
    lo, hi = int(gray.min()), int(gray.max())
    expected = (gray.astype(float) - lo) / (hi - lo) * 255
    assert np.abs(image - expected).max() <= 0.5 + 1e-9


def test_palette_png(tmp_path: Path, gray: np.ndarray) -> None:
    palette = Image.fromarray(gray).convert("RGB").quantize(64)
    assert palette.mode == "P"
    path = _save(palette, tmp_path / "p.png", "PNG")
    image = read_image(path)
    assert image.dtype == np.uint8 and image.shape == gray.shape
    assert np.array_equal(image, np.asarray(palette.convert("L")))
    assert np.abs(image.astype(int) - gray).mean() < 4  # 64 levels of gray: close to the original


def test_bilevel_png(tmp_path: Path, gray: np.ndarray) -> None:
    path = _save(Image.fromarray(gray).convert("1"), tmp_path / "bw.png", "PNG")
    image = read_image(path)
    assert image.shape == gray.shape and image.dtype == np.uint8
    assert set(np.unique(image)) == {0, 255}


def test_cmyk_jpeg(tmp_path: Path, gray: np.ndarray) -> None:
    cmyk = Image.fromarray(gray).convert("RGB").convert("CMYK")
    path = _save(cmyk, tmp_path / "cmyk.jpeg", "JPEG", quality=95)
    with Image.open(path) as check:
        assert check.mode == "CMYK"
    image = read_image(path)
    assert image.dtype == np.uint8 and image.shape == gray.shape
    # not inverted, and close to the original despite lossy compression
    assert np.corrcoef(image.ravel(), gray.ravel())[0, 1] > 0.99
    assert np.abs(image.astype(int) - gray).mean() < 3


def test_grayscale_jpeg_of_other_size(tmp_path: Path, gray: np.ndarray) -> None:
    # the original release: single-channel JPEGs of varying, non-square size
    wide = np.asarray(Image.fromarray(gray).resize((300, 200)))
    path = _save(Image.fromarray(wide), tmp_path / "orig.jpeg", "JPEG", quality=95)
    image = read_image(path)
    assert image.shape == (200, 300) and image.dtype == np.uint8
    assert load_image(path, 64).shape == (64, 64)


@pytest.mark.parametrize("mode", ["L", "RGB", "CMYK"])
def test_large_jpeg_reduced_decode_loses_nothing(tmp_path: Path, gray: np.ndarray, mode: str) -> None:
    # an original-release sized radiograph (1800 x 1400): the fast reduced-scale decode for a
    # 180 px model gives the same model input as decoding every pixel
    big = Image.fromarray(gray).resize((1800, 1400)).convert(mode)
    path = _save(big, tmp_path / f"big_{mode}.jpeg", "JPEG", quality=95)
    full = read_image(path)
    assert full.shape == (1400, 1800)
    reduced = read_image(path, size_hint=180)
    assert reduced.shape[0] >= 360 and reduced.shape[1] >= 360 and reduced.shape[0] < 1400
    fast, slow = load_image(path, 180).astype(int), resize_image(full, 180).astype(int)
    assert np.abs(fast - slow).mean() < 1.0
    assert np.abs(fast - slow).max() <= 16


# --- broken files ---------------------------------------------------------------------------------


def test_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "empty.jpeg"
    path.write_bytes(b"")
    with pytest.raises(PneumoError, match="empty") as err:
        read_image(path)
    assert str(path) in str(err.value)


@pytest.mark.parametrize("size_hint", [None, 64])
def test_truncated_jpeg(tmp_path: Path, real_jpeg: Path, size_hint: int | None) -> None:
    data = real_jpeg.read_bytes()
    path = tmp_path / "half.jpeg"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(PneumoError, match="truncated") as err:
        read_image(path, size_hint=size_hint)
    assert str(path) in str(err.value)


def test_random_bytes(tmp_path: Path) -> None:
    path = tmp_path / "noise.png"
    path.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    with pytest.raises(PneumoError, match="not a readable") as err:
        read_image(path)
    assert str(path) in str(err.value)


def test_directory(tmp_path: Path) -> None:
    folder = tmp_path / "looks_like.jpeg"
    folder.mkdir()
    with pytest.raises(PneumoError, match="folder") as err:
        read_image(folder)
    assert str(folder) in str(err.value)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(PneumoError, match="cannot read") as err:
        read_image(tmp_path / "gone.jpeg")
    assert "gone.jpeg" in str(err.value)


def test_decode_image_names_the_source() -> None:
    with pytest.raises(PneumoError, match="^upload.png: "):
        decode_image(b"\x89PNG\r\n\x1a\n not really", "upload.png")


# --- preprocess ---------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [32, 180, 224, 300])
def test_resize_image(gray: np.ndarray, size: int) -> None:
    out = resize_image(gray, size)
    assert out.shape == (size, size) and out.dtype == np.uint8
    # the mean brightness survives resampling
    assert abs(float(out.mean()) - float(gray.mean())) < 2


def test_resize_image_same_size_is_unchanged(gray: np.ndarray) -> None:
    assert np.array_equal(resize_image(gray, gray.shape[0]), gray)


def test_resize_image_non_square_constant() -> None:
    flat = np.full((120, 250), 77, dtype=np.uint8)
    out = resize_image(flat, 64)
    assert out.shape == (64, 64)
    assert (out == 77).all()


def test_load_image(real_jpeg: Path, gray: np.ndarray) -> None:
    out = load_image(real_jpeg, 180)
    assert out.shape == (180, 180) and out.dtype == np.uint8
    assert np.array_equal(out, resize_image(gray, 180))


def test_normalise_uint8() -> None:
    mean, std = 0.4, 0.25
    batch = torch.zeros((3, 8, 8), dtype=torch.uint8)
    batch[:, :4] = 255
    out = normalise(batch, mean, std)
    assert out.shape == (3, 1, 8, 8) and out.dtype == torch.float32
    assert torch.allclose(out[:, 0, :4], torch.full((3, 4, 8), (1 - mean) / std))
    assert torch.allclose(out[:, 0, 4:], torch.full((3, 4, 8), (0 - mean) / std))


def test_normalise_float_matches_uint8(gray: np.ndarray) -> None:
    u8 = torch.from_numpy(np.stack([gray, 255 - gray]))
    as_float = u8.float().div(255).unsqueeze(1)
    a, b = normalise(u8, 0.5, 0.2), normalise(as_float, 0.5, 0.2)
    assert a.shape == b.shape == (2, 1, *gray.shape)
    assert torch.allclose(a, b, atol=1e-6)
    assert a[0, 0, 10, 10].item() == pytest.approx((gray[10, 10] / 255 - 0.5) / 0.2, abs=1e-5)


def test_preprocess_imports_on_its_own() -> None:
    """`from pneumo.preprocess import load_image` must work as the first import of a program."""
    done = subprocess.run(
        [sys.executable, "-c", "import pneumo.preprocess"], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-500:]
