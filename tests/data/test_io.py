"""pneumo.data.io and pneumo.preprocess: reading and decoding any image mode to uint8 gray, resizing, normalising."""

from __future__ import annotations

import copy
import io
import os
import socket
import subprocess
import sys
from functools import lru_cache
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image
from pydicom.encaps import encapsulate
from pydicom.uid import JPEGBaseline8Bit

import pneumo.data.io as image_io
from pneumo.data.io import (
    SUPPORTED_FORMATS,
    SUPPORTED_FORMATS_TEXT,
    check_image_file,
    decode_image,
    decode_image_with_info,
    read_image,
    read_image_bytes,
    read_image_with_info,
)
from pneumo.data.pixels import ImageInfo
from pneumo.data.preprocess import load_image, normalise, resize_image
from pneumo.errors import PneumoError
from tests.conftest import SAMPLES, deadline, pick
from tests.data.conftest import _dicom_bytes, _small_dicom, _stretched


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


def test_an_image_with_alpha_is_seen_as_a_viewer_on_black_shows_it(tmp_path: Path, gray: np.ndarray) -> None:
    alpha = np.tile(np.linspace(0, 255, gray.shape[1]).astype(np.uint8), (gray.shape[0], 1))
    rgba = np.stack([gray, gray, gray, alpha], axis=-1)
    image, info = read_image_with_info(_save(Image.fromarray(rgba, "RGBA"), tmp_path / "rgba.png", "PNG"))
    np.testing.assert_allclose(image, gray * (alpha / 255.0), atol=1.01)  # composited on black
    assert info.transparent == pytest.approx(0.5, abs=0.05)  # the left half is under alpha 128
    opaque = np.stack([gray, gray, gray, np.full_like(gray, 255)], axis=-1)
    image, info = read_image_with_info(_save(Image.fromarray(opaque, "RGBA"), tmp_path / "opaque.png", "PNG"))
    assert np.array_equal(image, gray) and info.transparent == 0.0


def test_a_transparent_film_is_black_and_says_so(tmp_path: Path, gray: np.ndarray) -> None:
    from pneumo.inference.checks import rule_warnings, warning_kind

    height, width = gray.shape
    mostly_clear = np.zeros_like(gray)
    mostly_clear[:, : width // 4] = 255  # three quarters transparent
    for mode, bands in (("RGBA", [gray, gray, gray]), ("LA", [gray])):
        clear = Image.merge(mode, [Image.fromarray(b) for b in bands] + [Image.new("L", (width, height), 0)])
        with pytest.raises(PneumoError, match="image is transparent: nothing is left of it"):
            read_image_with_info(_save(clear, tmp_path / f"clear-{mode}.png", "PNG"))
        mostly = Image.merge(mode, [Image.fromarray(b) for b in bands] + [Image.fromarray(mostly_clear)])
        image, info = read_image_with_info(_save(mostly, tmp_path / f"mostly-{mode}.png", "PNG"))
        assert image[:, width // 4 :].max() == 0 and np.array_equal(image[:, : width // 4], gray[:, : width // 4])
        assert info.transparent == pytest.approx(0.75, abs=0.03)
        assert [warning_kind(w) for w in rule_warnings(info)] == ["transparent image"]
    half = Image.merge("LA", [Image.fromarray(gray), Image.new("L", (gray.shape[1], gray.shape[0]), 128)])
    image, info = read_image_with_info(_save(half, tmp_path / "la.png", "PNG"))
    np.testing.assert_allclose(image, gray * (128 / 255), atol=1.01)
    assert info.transparent == 0.0 and rule_warnings(info) == []


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


# --- what is not a regular file, or far too large -------------------------------------------------


posix_only = pytest.mark.skipif(os.name != "posix", reason="FIFOs, devices and /proc are POSIX")


@posix_only
def test_fifo_named_like_an_image_is_refused_at_once(tmp_path: Path) -> None:
    fifo = tmp_path / "x.jpeg"
    os.mkfifo(fifo)  # no writer: opening it for reading would wait forever
    with deadline(5):
        for read in (read_image, read_image_with_info, read_image_bytes, check_image_file, lambda p: load_image(p, 64)):
            with pytest.raises(PneumoError, match=r"is a named pipe \(FIFO\), not an image file") as err:
                read(fifo)
            assert str(fifo) in str(err.value)


def test_check_image_file_reads_nothing_and_says_why(tmp_path: Path, real_jpeg: Path) -> None:
    assert check_image_file(real_jpeg) is None
    with pytest.raises(PneumoError, match=r"^cannot read .*gone.jpeg: No such file or directory$"):
        check_image_file(tmp_path / "gone.jpeg")
    with pytest.raises(PneumoError, match="is a folder, not an image file"):
        check_image_file(tmp_path)


@posix_only
@pytest.mark.parametrize("device", ["/dev/zero", "/dev/urandom", "/dev/null"])
def test_character_device_is_refused_without_reading(device: str) -> None:
    if not os.path.exists(device):
        pytest.skip(f"no {device} here")
    with deadline(5), pytest.raises(PneumoError, match=f"^{device} is a character device, not an image file"):
        read_image(device)


@posix_only
def test_symlink_to_a_device_is_refused(tmp_path: Path) -> None:
    link = tmp_path / "film.dcm"
    link.symlink_to("/dev/zero")
    with deadline(5), pytest.raises(PneumoError, match="is a character device") as err:
        read_image(link)
    assert str(link) in str(err.value)


@posix_only
def test_socket_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "s.png"
    with socket.socket(socket.AF_UNIX) as server:
        try:
            server.bind(str(path))
        except OSError:  # a temporary path too long for a socket address
            pytest.skip("cannot bind a socket here")
        with deadline(5), pytest.raises(PneumoError, match="is a socket, not an image file"):
            read_image(path)


def test_file_over_the_size_limit_is_refused_before_reading(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(image_io, "MAX_FILE_BYTES", 1000)
    path = tmp_path / "huge.png"
    path.write_bytes(bytes(1001))
    with pytest.raises(PneumoError, match=r"file is 0 MiB, over the limit of 0 MiB for one image") as err:
        read_image(path)
    assert str(path) in str(err.value)
    with pytest.raises(PneumoError, match="^upload.png: file is .* over the limit"):
        decode_image(bytes(1001), "upload.png")  # the same limit for bytes already in memory (an upload)


@posix_only
def test_file_larger_than_it_says_is_read_only_up_to_the_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    status = Path("/proc/self/status")
    if not status.exists() or status.stat().st_size != 0:
        pytest.skip("needs Linux /proc, whose files say they are empty")
    monkeypatch.setattr(image_io, "MAX_FILE_BYTES", 64)
    with pytest.raises(PneumoError, match="over the limit"):
        read_image_bytes(status)


def test_default_size_limit_fits_a_large_radiograph() -> None:
    # an uncompressed 16-bit 8000 x 8000 DICOM must pass; a gigabyte is no single film
    assert 8000 * 8000 * 2 < image_io.MAX_FILE_BYTES < 1024**3


# --- one list of supported formats; everything else refused by content -------------------------------


def test_supported_formats_are_listed_once() -> None:
    assert SUPPORTED_FORMATS == ("JPEG", "PNG", "DICOM", "TIFF", "BMP", "WebP", "GIF")
    assert SUPPORTED_FORMATS_TEXT == "JPEG, PNG or DICOM image (TIFF, BMP, WebP and GIF are read too)"


def _eps(gray: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(gray).save(buffer, "EPS")
    return buffer.getvalue()


def _pillow_bytes(fmt: str, **options: object):
    def make(gray: np.ndarray) -> bytes:
        buffer = io.BytesIO()
        Image.fromarray(gray).save(buffer, fmt, **options)
        return buffer.getvalue()

    return make


UNSUPPORTED = {
    "EPS": (_eps, "a PostScript/EPS file"),
    "PDF": (_pillow_bytes("PDF"), "a PDF document"),
    "ICO": (lambda g: _pillow_bytes("ICO")(g[:64, :64]), "an icon (ICO) file"),
    "JPEG 2000": (_pillow_bytes("JPEG2000"), "a JPEG 2000 file"),
    "PSD": (lambda g: b"8BPS\x00\x01" + bytes(200), "a Photoshop (PSD) file"),
    "HEIC": (lambda g: b"\x00\x00\x00\x18ftypheic" + bytes(200), "a HEIC photo"),
    "PPM": (_pillow_bytes("PPM"), None),
    "TGA": (_pillow_bytes("TGA"), None),
    "PCX": (_pillow_bytes("PCX"), None),
}


@pytest.mark.parametrize("case", list(UNSUPPORTED))
def test_unsupported_format_is_refused_naming_what_is_read(
    case: str, tmp_path: Path, gray: np.ndarray, monkeypatch: pytest.MonkeyPatch
) -> None:
    make, what = UNSUPPORTED[case]
    try:
        data = make(gray)
    except (OSError, KeyError) as exc:  # a Pillow built without that writer
        pytest.skip(f"cannot write {case} here: {exc}")

    def never(*_: object, **__: object) -> None:
        raise AssertionError("a Pillow plugin outside the supported formats was tried")

    Image.init()
    for fmt in ("EPS", "PPM", "TGA", "PCX", "ICO", "JPEG2000", "PSD"):
        if fmt in Image.OPEN:
            monkeypatch.setitem(Image.OPEN, fmt, (never, never))
    path = tmp_path / "film.jpeg"
    path.write_bytes(data)
    with pytest.raises(PneumoError) as err:
        read_image(path)
    message = str(err.value)
    assert message.startswith(f"{path}: not a readable {SUPPORTED_FORMATS_TEXT}")
    if what:
        assert f"it is {what}, which pneumo does not read" in message


@pytest.mark.parametrize(
    ("fmt", "options", "mode"),
    [
        ("TIFF", {}, "L"),
        ("TIFF", {"compression": "tiff_lzw"}, "L"),
        ("BMP", {}, "L"),
        ("WEBP", {"lossless": True}, "RGB"),
        ("GIF", {}, "L"),
    ],
)
def test_other_supported_formats_decode_exactly(tmp_path: Path, gray: np.ndarray, fmt: str, options: dict, mode: str) -> None:
    path = _save(Image.fromarray(gray).convert(mode), tmp_path / f"film.{fmt.lower()}", fmt, **options)
    image, info = read_image_with_info(path)
    assert np.array_equal(image, gray)
    assert info.format == fmt and info.frames == 1


# --- EXIF orientation --------------------------------------------------------------------------------

# the transpose that stores an upright picture so that orientation N shows it upright again
_STORE = {
    1: None,
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_90,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_270,
}


def _oriented(upright: np.ndarray, orientation: int, fmt: str, **options: object) -> bytes:
    image = Image.fromarray(upright)
    if _STORE[orientation] is not None:
        image = image.transpose(_STORE[orientation])
    exif = Image.Exif()
    exif[0x0112] = orientation
    buffer = io.BytesIO()
    image.save(buffer, fmt, exif=exif.tobytes(), **options)
    return buffer.getvalue()


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_shows_the_film_upright(gray: np.ndarray, orientation: int) -> None:
    upright = gray[:, :200]  # not square, so a quarter turn shows in the shape too
    image, info = decode_image_with_info(_oriented(upright, orientation, "PNG"), "film.png")
    assert np.array_equal(image, upright)
    assert (info.width, info.height) == (200, 224)


@pytest.mark.parametrize("fmt", ["TIFF", "WEBP"])
def test_exif_orientation_in_tiff_and_webp(gray: np.ndarray, fmt: str) -> None:
    options = {"lossless": True} if fmt == "WEBP" else {}
    assert np.array_equal(decode_image(_oriented(gray, 8, fmt, **options), "film"), gray)


@pytest.mark.parametrize("size_hint", [None, 64])
def test_sideways_jpeg_film_with_orientation_8_reads_as_the_upright_film(tmp_path: Path, real_jpeg: Path, size_hint: int | None) -> None:
    """The report: a real film stored sideways with orientation 8 must be the upright film to the model."""
    with Image.open(real_jpeg) as im:
        upright = np.asarray(im.convert("L"))
    path = tmp_path / "sideways.jpeg"
    path.write_bytes(_oriented(upright, 8, "JPEG", quality=95))
    with Image.open(path) as check:
        assert (
            np.abs(np.asarray(check.convert("L")).astype(int) - np.rot90(upright, -1)).mean() < 2
        )  # stored sideways (a quarter turn clockwise)
    assert np.abs(read_image(path, size_hint).astype(int) - read_image(real_jpeg, size_hint)).mean() < 2
    assert np.abs(load_image(path, 64).astype(int) - load_image(real_jpeg, 64)).max() <= 8


@pytest.mark.parametrize("orientation", [0, 9, 65535])
def test_invalid_exif_orientation_is_ignored(gray: np.ndarray, orientation: int) -> None:
    image = Image.fromarray(gray)
    exif = Image.Exif()
    exif[0x0112] = orientation
    buffer = io.BytesIO()
    image.save(buffer, "PNG", exif=exif.tobytes())
    assert np.array_equal(decode_image(buffer.getvalue(), "film.png"), gray)


# --- deep images: NaN and infinite pixels, blank images ---------------------------------------------------


def _float_tiff(values: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(values.astype(np.float32), "F").save(buffer, "TIFF")
    return buffer.getvalue()


def test_float_tiff_is_stretched(gray: np.ndarray) -> None:
    values = gray.astype(np.float32) / 255 * 3.5 - 1.0  # e.g. a log-attenuation map
    assert np.array_equal(decode_image(_float_tiff(values), "film.tif"), _stretched(gray))


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_float_tiff_with_one_non_finite_pixel_keeps_the_film(gray: np.ndarray, bad: float) -> None:
    values = gray.astype(np.float32)
    values[100, 100] = bad
    image = decode_image(_float_tiff(values), "film.tif")
    expected = _stretched(np.where(np.isfinite(values), values, gray.min()))
    expected[100, 100] = 0  # left out of the stretch, shown black
    assert np.array_equal(image, expected)


def test_float_tiff_with_many_non_finite_pixels_is_refused(gray: np.ndarray) -> None:
    values = gray.astype(np.float32)
    values[:10] = np.nan
    values[10, :5] = np.inf
    n = 10 * gray.shape[1] + 5
    with pytest.raises(PneumoError, match=rf"^film.tif: {n} of {gray.size} pixels are NaN or infinite \(more than 0.1% of the image\)"):
        decode_image(_float_tiff(values), "film.tif")


def test_all_nan_float_tiff_is_refused() -> None:
    with pytest.raises(PneumoError, match="pixels are NaN or infinite"):
        decode_image(_float_tiff(np.full((32, 32), np.nan)), "nan.tif")


@pytest.mark.parametrize(
    ("make", "value"),
    [
        (lambda: Image.new("L", (64, 48), 0), "0"),
        (lambda: Image.new("RGB", (64, 48), (200, 200, 200)), "200"),
        (lambda: Image.fromarray(np.full((48, 64), 1234, np.uint16)), "1234"),
        (lambda: Image.fromarray(np.full((48, 64), 0.25, np.float32), "F"), "0.25"),
    ],
    ids=["black", "gray-rgb", "16-bit", "float"],
)
def test_blank_image_is_refused(make, value: str) -> None:
    buffer = io.BytesIO()
    make().save(buffer, "TIFF")
    with pytest.raises(PneumoError, match=rf"^blank.tif: image is blank: every pixel has the value {value}; check"):
        decode_image(buffer.getvalue(), "blank.tif")


def test_nearly_blank_image_is_read() -> None:
    pixels = np.full((48, 64), 10, np.uint8)
    pixels[0, 0] = 11
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "PNG")
    assert np.array_equal(decode_image(buffer.getvalue(), "dim.png"), pixels)


# --- ImageInfo for JPEG and PNG -------------------------------------------------------------------


def test_rgb_sample_colourfulness(shared_data: Path) -> None:
    path = SAMPLES / "other" / "adult_rgb_2373px.jpg"
    with Image.open(path) as im:
        rgb = np.asarray(im)
    assert np.array_equal(rgb[..., 0], rgb[..., 1]) and np.array_equal(rgb[..., 0], rgb[..., 2])
    for size_hint in (None, 224):
        image, info = read_image_with_info(path, size_hint=size_hint)
        print(f"adult_rgb_2373px.jpg size_hint={size_hint}: colourfulness {info.colourfulness}")
        assert info.colourfulness == 0.0  # an X-ray stored as RGB with identical channels
        # the original size, also when the pixels were decoded at a reduced scale
        assert (info.format, info.mode, info.width, info.height, info.frames) == ("JPEG", "RGB", 2373, 2373, 1)
        assert (info.modality, info.body_part, info.view_position) == (None, None, None)
    assert image.shape[0] < 2373


def test_training_jpeg_info(shared_data: Path) -> None:
    for path in pick("NORMAL", 3, 2) + pick("PNEUMONIA", 3, 2):
        for size_hint in (None, 224, 64):
            image, info = read_image_with_info(path, size_hint=size_hint)
            assert np.array_equal(image, read_image(path, size_hint=size_hint))
            assert (info.format, info.width, info.height, info.mode) == ("JPEG", 224, 224, "RGB")
            assert info.colourfulness < 1.0


@pytest.mark.parametrize("size_hint", [None, 100])
def test_colourful_jpeg(tmp_path: Path, gray: np.ndarray, size_hint: int | None) -> None:
    # large enough for the reduced-scale decode, which decodes luma only: colour is measured apart
    rgb = np.stack([gray, 255 - gray, np.full_like(gray, 40)], axis=-1).astype(np.uint8)
    path = _save(Image.fromarray(rgb).resize((900, 700)), tmp_path / "photo.jpeg", "JPEG", quality=90)
    image, info = read_image_with_info(path, size_hint=size_hint)
    assert info.colourfulness > 20
    assert (info.width, info.height, info.mode) == (900, 700, "RGB")
    assert image.shape == ((700, 900) if size_hint is None else (350, 450))


def test_colourful_png_and_gray_png(tmp_path: Path, gray: np.ndarray) -> None:
    noise = np.random.default_rng(0).integers(0, 256, (*gray.shape, 3), dtype=np.uint8)
    colour = read_image_with_info(_save(Image.fromarray(noise), tmp_path / "c.png", "PNG"))[1]
    assert colour.colourfulness > 20 and colour.mode == "RGB" and colour.format == "PNG"
    grey = read_image_with_info(_save(Image.fromarray(gray), tmp_path / "g.png", "PNG"))[1]
    assert grey == ImageInfo("PNG", gray.shape[1], gray.shape[0], "L", 0.0)
    rgb_grey = read_image_with_info(_save(Image.fromarray(np.stack([gray] * 3, -1)), tmp_path / "rg.png", "PNG"))[1]
    assert rgb_grey.colourfulness == 0.0 and rgb_grey.mode == "RGB"


def test_non_square_info(tmp_path: Path, gray: np.ndarray) -> None:
    path = _save(Image.fromarray(gray).resize((300, 200)), tmp_path / "wide.png", "PNG")
    image, info = read_image_with_info(path)
    assert image.shape == (200, 300) and (info.width, info.height) == (300, 200)


# --- any bytes: an image or a PneumoError -----------------------------------------------------------


@lru_cache(maxsize=1)
def _seed_files() -> tuple[bytes, ...]:
    """Small valid files of each kind, for the property test to cut and damage."""
    with Image.open(pick("NORMAL", 1)[0]) as im:
        small = im.convert("L").resize((32, 24))
    png, jpeg = io.BytesIO(), io.BytesIO()
    small.save(png, "PNG")
    small.convert("RGB").save(jpeg, "JPEG")
    uncompressed = _small_dicom(np.asarray(small), "MONOCHROME1")
    baseline = copy.deepcopy(uncompressed)
    baseline.file_meta.TransferSyntaxUID = JPEGBaseline8Bit
    baseline.PixelData = encapsulate([jpeg.getvalue()])
    baseline.PhotometricInterpretation, baseline.SamplesPerPixel = "YBR_FULL_422", 3
    baseline.PlanarConfiguration = 0
    return png.getvalue(), jpeg.getvalue(), _dicom_bytes(uncompressed), _dicom_bytes(baseline)


@st.composite
def _damaged_files(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(st.sampled_from(_seed_files())))
    data = data[: draw(st.integers(1, len(data)))]
    # most of the structure a parser trusts is near the start
    for _ in range(draw(st.integers(0, 6))):
        data[draw(st.integers(0, min(len(data), 1500) - 1))] = draw(st.integers(0, 255))
    return bytes(data)


_ANY_BYTES = st.one_of(
    st.binary(max_size=2048),
    st.binary(max_size=1024).map(lambda tail: bytes(128) + b"DICM" + tail),
    _damaged_files(),
)


def test_seed_files_decode(shared_data: Path) -> None:
    for data in _seed_files():
        image, _ = decode_image_with_info(data)
        assert image.shape == (24, 32)


@pytest.mark.filterwarnings("ignore::UserWarning")
@settings(max_examples=200, deadline=None)
@given(data=_ANY_BYTES)
def test_any_bytes_give_an_image_or_a_pneumo_error(data: bytes) -> None:
    try:
        image, info = decode_image_with_info(data, "fuzz.dcm", size_hint=16)
    except PneumoError as exc:
        assert str(exc).startswith("fuzz.dcm")
        return
    assert image.dtype == np.uint8 and image.ndim == 2 and image.size > 0
    assert isinstance(info, ImageInfo) and info.width > 0 and info.height > 0


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
    """`from pneumo.data.preprocess import load_image` must work as the first import of a program."""
    done = subprocess.run([sys.executable, "-c", "import pneumo.data.preprocess"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-500:]
