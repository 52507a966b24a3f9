"""pneumo.data.io and pneumo.preprocess: decoding any image mode to uint8 gray, resizing, normalising."""
from __future__ import annotations

import copy
import io
import json
import subprocess
import sys
from functools import lru_cache
from pathlib import Path

import numpy as np
import pydicom
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image
from pydicom.encaps import encapsulate
from pydicom.pixels import get_decoder, set_pixel_data
from pydicom.uid import JPEGBaseline8Bit

from pneumo.data.io import ImageInfo, decode_image, decode_image_with_info, read_image, read_image_with_info
from pneumo.data.preprocess import load_image, normalise, resize_image
from pneumo.errors import PneumoError
from tests.conftest import SAMPLES, pick


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


# --- DICOM ---------------------------------------------------------------------------------------

DICOM = SAMPLES / "dicom"
CR_MONO2 = DICOM / "cr_chest_pa_jpeg_baseline.dcm"
CR_MONO1 = DICOM / "cr_chest_pa_monochrome1.dcm"
DX = DICOM / "dx_chest_uncompressed.dcm"
OT = DICOM / "not_a_chest_ot.dcm"


def _dicom_bytes(ds: pydicom.Dataset) -> bytes:
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def _write_dicom(ds: pydicom.Dataset, path: Path) -> Path:
    path.write_bytes(_dicom_bytes(ds))
    return path


def _small_dicom(pixels: np.ndarray, photometric: str, bits: int = 8) -> pydicom.Dataset:
    """The DX sample's header around other (uncompressed) pixels."""
    ds = pydicom.dcmread(DX)
    set_pixel_data(ds, pixels, photometric, bits)
    return ds


@pytest.mark.parametrize(
    ("path", "mode", "modality", "body_part", "view", "side", "age"),
    [
        (CR_MONO2, "MONOCHROME2", "CR", "CHEST", "PA", 1024, 62.0),
        (CR_MONO1, "MONOCHROME1", "CR", "CHEST", "PA", 1024, 62.0),
        (DX, "MONOCHROME2", "DX", None, None, 1024, 81.0),
        (OT, "MONOCHROME2", "OT", None, None, 512, None),
    ],
)
def test_sample_dicoms_decode_with_info(
    shared_data: Path, path: Path, mode: str, modality: str, body_part: str | None, view: str | None, side: int, age: float | None
) -> None:
    image, info = read_image_with_info(path)
    assert image.dtype == np.uint8 and image.shape == (side, side)
    assert image.min() == 0 and image.max() == 255 and image.std() > 10
    assert info == ImageInfo("DICOM", side, side, mode, 0.0, 1, modality, body_part, view, age)
    # the array-only reader and a size hint (JPEG-only) change nothing
    assert np.array_equal(read_image(path), image)
    assert np.array_equal(read_image(path, size_hint=224), image)


def test_dicom_monochrome1_is_inverted(shared_data: Path) -> None:
    mono1, mono2 = read_image(CR_MONO1).astype(float), read_image(CR_MONO2).astype(float)
    assert np.corrcoef(mono1.ravel(), mono2.ravel())[0, 1] < -0.99
    assert np.abs(mono1 - (255 - mono2)).mean() < 2


def test_uncompressed_dicom_is_stretched_stored_pixels(shared_data: Path) -> None:
    stored = pydicom.dcmread(DX).pixel_array.astype(float)
    expected = np.round((stored - stored.min()) / (stored.max() - stored.min()) * 255)
    assert np.array_equal(read_image(DX), expected.astype(np.uint8))


def test_dicom_rescale_and_window(tmp_path: Path) -> None:
    # a 12-bit detector: stored 0..4095, rescaled to -1024..7166, shown through a 0..2000 window
    stored = np.tile(np.arange(0, 4096, 16, dtype=np.uint16), (64, 1))
    ds = _small_dicom(stored, "MONOCHROME2", 12)
    ds.RescaleSlope, ds.RescaleIntercept, ds.WindowCenter, ds.WindowWidth = 2, -1024, 1000, 2000
    mono2, info = read_image_with_info(_write_dicom(ds, tmp_path / "w2.dcm"))
    value = stored[0].astype(float) * 2 - 1024
    assert (mono2[:, value <= 0] == 0).all() and (mono2[:, value >= 2000] == 255).all()
    inside = mono2[0, (value > 100) & (value < 1900)].astype(float)
    assert (np.diff(inside) > 0).all()  # a ramp inside the window
    assert info.width == 256 and info.height == 64
    ds.PhotometricInterpretation = "MONOCHROME1"
    mono1 = read_image(_write_dicom(ds, tmp_path / "w1.dcm"))
    assert np.array_equal(mono1, 255 - mono2)


@pytest.mark.parametrize("photometric", ["RGB", "YBR_FULL"])
def test_colour_dicom_goes_to_luma(tmp_path: Path, gray: np.ndarray, photometric: str) -> None:
    rgb = np.stack([gray, 255 - gray, gray // 2], axis=-1).astype(np.uint8)
    stored = rgb if photometric == "RGB" else pydicom.pixels.convert_color_space(rgb, "RGB", "YBR_FULL")
    image, info = read_image_with_info(_write_dicom(_small_dicom(stored, photometric), tmp_path / "c.dcm"))
    luma = np.asarray(Image.fromarray(rgb).convert("L")).astype(int)
    assert image.shape == gray.shape and np.abs(image.astype(int) - luma).max() <= 2
    assert info.mode == photometric and info.colourfulness > 20


def test_dicom_without_pixel_data(tmp_path: Path) -> None:
    ds = pydicom.dcmread(DX)
    del ds.PixelData
    path = _write_dicom(ds, tmp_path / "report.dcm")
    with pytest.raises(PneumoError, match="no Pixel Data element") as err:
        read_image(path)
    assert str(path) in str(err.value)


def test_multi_frame_dicom(tmp_path: Path) -> None:
    ds = pydicom.dcmread(DX)
    ds.NumberOfFrames = 2
    ds.PixelData = ds.PixelData * 2
    path = _write_dicom(ds, tmp_path / "cine.dcm")
    with pytest.raises(PneumoError, match=r"multi-frame DICOM \(2 frames\) is not supported; export a single frame") as err:
        read_image(path)
    assert str(path) in str(err.value)


@pytest.mark.filterwarnings("ignore:End of file reached")
@pytest.mark.parametrize("source", [CR_MONO2, DX])
@pytest.mark.parametrize("fraction", [0.3, 0.7, 0.99])
def test_truncated_dicom(tmp_path: Path, source: Path, fraction: float) -> None:
    data = source.read_bytes()
    path = tmp_path / "cut.dcm"
    path.write_bytes(data[: int(len(data) * fraction)])
    with pytest.raises(PneumoError, match="truncated") as err:
        read_image(path)
    assert str(path) in str(err.value)


@pytest.mark.parametrize("cut", [132, 300, 1000])
def test_dicom_cut_in_its_header(tmp_path: Path, cut: int) -> None:
    path = tmp_path / "head.dcm"
    path.write_bytes(DX.read_bytes()[:cut])
    with pytest.raises(PneumoError) as err:
        read_image(path)
    assert str(path) in str(err.value)


@pytest.mark.parametrize("uid", ["1.2.840.10008.1.2.4.90", "1.2.840.10008.1.2.4.80"])  # JPEG 2000, JPEG-LS
def test_undecodable_transfer_syntax(tmp_path: Path, uid: str) -> None:
    ds = pydicom.dcmread(DX)
    ds.file_meta.TransferSyntaxUID = uid
    ds.PixelData = encapsulate([b"\x00not really compressed\xff" * 40])
    path = _write_dicom(ds, tmp_path / "compressed.dcm")
    with pytest.raises(PneumoError) as err:
        read_image(path)
    message = str(err.value)
    assert str(path) in message and uid in message
    if not get_decoder(pydicom.uid.UID(uid)).is_available:  # JPEG-LS, unless pylibjpeg is installed
        assert "cannot be decoded with the installed packages" in message and "pylibjpeg" in message


def test_jpeg_baseline_dicom_built_here(tmp_path: Path, gray: np.ndarray) -> None:
    """A JPEG Baseline DICOM decodes to what PIL makes of the same JPEG stream."""
    jpeg = io.BytesIO()
    Image.fromarray(gray).save(jpeg, "JPEG", quality=90)
    ds = _small_dicom(gray, "MONOCHROME2")
    ds.file_meta.TransferSyntaxUID = JPEGBaseline8Bit
    ds.PixelData = encapsulate([jpeg.getvalue()])
    image = read_image(_write_dicom(ds, tmp_path / "jb.dcm"))
    decoded = np.asarray(Image.open(jpeg)).astype(float)
    expected = np.round((decoded - decoded.min()) / (decoded.max() - decoded.min()) * 255)
    assert np.array_equal(image, expected.astype(np.uint8))


def test_dicom_decompression_bomb_refused_before_decoding(tmp_path: Path) -> None:
    ds = pydicom.dcmread(DX)
    ds.Rows = ds.Columns = 20000  # 400 Mpx, over 2 * Image.MAX_IMAGE_PIXELS; the pixel bytes are far too few
    path = _write_dicom(ds, tmp_path / "bomb.dcm")
    with pytest.raises(PneumoError, match="too many pixels") as err:
        read_image(path)
    assert str(path) in str(err.value)


def test_dicom_is_recognised_by_content_not_name(tmp_path: Path, real_jpeg: Path) -> None:
    as_dcm = tmp_path / "scan.dcm"
    as_dcm.write_bytes(real_jpeg.read_bytes())
    image, info = read_image_with_info(as_dcm)
    assert info.format == "JPEG" and np.array_equal(image, read_image(real_jpeg))
    as_png = tmp_path / "scan.png"
    as_png.write_bytes(DX.read_bytes())
    assert read_image_with_info(as_png)[1].format == "DICOM"


def test_dicom_without_preamble_is_refused_with_a_hint(tmp_path: Path) -> None:
    path = tmp_path / "bare.dcm"
    path.write_bytes(DX.read_bytes()[132:])
    with pytest.raises(PneumoError, match="not a readable JPEG, PNG or DICOM image.*preamble") as err:
        read_image(path)
    assert str(path) in str(err.value)


def test_import_does_not_load_pydicom() -> None:
    code = "import sys, pneumo.data.io; assert 'pydicom' not in sys.modules, 'pydicom imported eagerly'"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-500:]


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


@pytest.mark.filterwarnings("ignore:Invalid value for VR AS")  # pydicom notes the non-standard ages we test
@pytest.mark.parametrize("stored, years", [("004Y", 4.0), ("018M", 1.5), ("026W", 26 / 52.18), ("062", 62.0), ("", None), ("old", None)])
def test_patient_age_is_read_in_years(stored: str, years: float | None, tmp_path: Path) -> None:
    ds = pydicom.dcmread(SAMPLES / "dicom" / "dx_chest_uncompressed.dcm")
    ds.PatientAge = stored
    ds.save_as(tmp_path / "aged.dcm")
    age = read_image_with_info(tmp_path / "aged.dcm")[1].patient_age_years
    assert age == (pytest.approx(years) if years is not None else None)


def test_image_info_to_dict_is_json() -> None:
    info = ImageInfo("DICOM", 10, 20, "MONOCHROME1", 0.0, 1, "CR", "CHEST", "AP")
    as_dict = info.to_dict()
    assert list(as_dict) == [
        "format", "width", "height", "mode", "colourfulness", "frames", "modality", "body_part", "view_position",
        "patient_age_years",
    ]
    assert json.loads(json.dumps(as_dict)) == as_dict
    assert ImageInfo(**as_dict) == info


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
    done = subprocess.run(
        [sys.executable, "-c", "import pneumo.data.preprocess"], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-500:]
