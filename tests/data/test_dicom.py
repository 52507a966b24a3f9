"""pneumo.data.dicom: DICOM files recognised by content and displayed as a radiologist sees them."""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.encaps import encapsulate
from pydicom.pixels import get_decoder, set_pixel_data
from pydicom.uid import JPEGBaseline8Bit

from pneumo.data.io import read_image, read_image_with_info
from pneumo.data.pixels import ImageInfo
from pneumo.errors import PneumoError
from tests.conftest import SAMPLES
from tests.data.conftest import CR_MONO1, CR_MONO2, DX, OT, _dicom_bytes, _small_dicom, _stretched, _write_dicom


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


@pytest.mark.filterwarnings("ignore:Invalid value for VR DS")
@pytest.mark.parametrize(
    ("slope", "intercept", "message"),
    [
        (0, 0, "DICOM RescaleSlope is 0: the image would be blank; fix the file's RescaleSlope (usually 1)"),
        ("NaN", 0, "DICOM RescaleSlope is nan: the image cannot be rescaled; fix the file's RescaleSlope"),
        ("inf", 0, "DICOM RescaleSlope is inf: the image cannot be rescaled; fix the file's RescaleSlope"),
        ("-inf", 0, "DICOM RescaleSlope is -inf: the image cannot be rescaled; fix the file's RescaleSlope"),
        (1, "NaN", "DICOM RescaleIntercept is nan: the image cannot be rescaled; fix the file's RescaleIntercept"),
    ],
)
def test_dicom_rescale_that_would_wipe_the_film_is_refused(tmp_path: Path, slope: object, intercept: object, message: str) -> None:
    ds = pydicom.dcmread(DX)
    ds.RescaleSlope, ds.RescaleIntercept = slope, intercept
    path = _write_dicom(ds, tmp_path / "rescale.dcm")
    with pytest.raises(PneumoError) as err:
        read_image(path)
    assert str(err.value) == f"{path}: {message}"


def test_dicom_rescale_slope_that_is_not_a_number(tmp_path: Path) -> None:
    ds = pydicom.dcmread(DX)
    ds.RescaleSlope, ds.RescaleIntercept = "97531", 0
    path = tmp_path / "text.dcm"
    path.write_bytes(_dicom_bytes(ds).replace(b"97531", b"abc1x"))  # what pydicom itself would not write
    with pytest.raises(PneumoError, match=r"DICOM RescaleSlope is 'abc1x', not a number; fix the file's RescaleSlope") as err:
        read_image(path)
    assert str(path) in str(err.value)


def test_dicom_negative_rescale_slope_is_applied(tmp_path: Path) -> None:
    ds = pydicom.dcmread(DX)
    ds.RescaleSlope, ds.RescaleIntercept = -1, 255
    negative = read_image(_write_dicom(ds, tmp_path / "neg.dcm")).astype(int)
    assert np.abs(negative - (255 - read_image(DX).astype(int))).max() <= 1  # inverted; rounding ties may differ by 1


def _padded_film(padding_vr: str, padding: int, offset: int, photometric: str = "MONOCHROME2") -> tuple[pydicom.Dataset, np.ndarray]:
    """The DX film (stored + offset) inside a 40-pixel border of padding, 16-bit."""
    film = pydicom.dcmread(DX).pixel_array.astype(np.int32) + offset
    dtype = np.uint16 if padding_vr == "US" else np.int16
    stored = np.full((film.shape[0] + 80, film.shape[1] + 80), padding, dtype=dtype)
    stored[40:-40, 40:-40] = film
    ds = _small_dicom(stored, photometric, 16)
    ds.add_new(0x00280120, padding_vr, padding)  # PixelPaddingValue; its VR follows PixelRepresentation
    return ds, film


@pytest.mark.parametrize(("vr", "padding", "offset"), [("US", 0, 1000), ("US", 65535, 1000), ("SS", -2000, -1024)])
def test_dicom_padding_is_left_out_of_the_stretch_and_black(tmp_path: Path, vr: str, padding: int, offset: int) -> None:
    ds, _ = _padded_film(vr, padding, offset)
    image = read_image(_write_dicom(ds, tmp_path / "padded.dcm"))
    assert (image[:40] == 0).all() and (image[-40:] == 0).all() and (image[:, :40] == 0).all() and (image[:, -40:] == 0).all()
    assert np.array_equal(image[40:-40, 40:-40], read_image(DX))  # the film uses the whole 0..255 range, as without padding
    ds.PhotometricInterpretation = "MONOCHROME1"
    inverted = read_image(_write_dicom(ds, tmp_path / "padded1.dcm"))
    assert (inverted[:40] == 0).all()  # padding stays black after the inversion
    assert np.abs(inverted[40:-40, 40:-40].astype(int) - (255 - read_image(DX).astype(int))).max() <= 1  # rounding ties


def test_dicom_padding_range_limit(tmp_path: Path) -> None:
    ds, _ = _padded_film("US", 0, 1000)
    pixels = ds.pixel_array.copy()
    pixels[:20] = 7  # a second kind of padding, inside the declared range 0..9
    set_pixel_data(ds, pixels, "MONOCHROME2", 16)
    ds.add_new(0x00280121, "US", 9)  # PixelPaddingRangeLimit
    image = read_image(_write_dicom(ds, tmp_path / "range.dcm"))
    assert (image[:40] == 0).all()
    assert np.array_equal(image[40:-40, 40:-40], read_image(DX))


def test_dicom_that_is_all_padding_is_refused(tmp_path: Path) -> None:
    ds = _small_dicom(np.zeros((32, 32), np.uint16), "MONOCHROME2", 16)
    ds.add_new(0x00280120, "US", 0)
    with pytest.raises(PneumoError, match=r"image is blank: every pixel is padding \(PixelPaddingValue\)"):
        read_image(_write_dicom(ds, tmp_path / "pad.dcm"))


def _float_dicom(values: np.ndarray) -> pydicom.Dataset:
    ds = pydicom.dcmread(DX)
    del ds.PixelData
    for keyword in ("BitsStored", "HighBit", "PixelRepresentation"):
        if keyword in ds:
            delattr(ds, keyword)
    ds.FloatPixelData = values.astype(np.float32).tobytes()
    ds.Rows, ds.Columns = values.shape
    ds.BitsAllocated = 32
    return ds


def test_float_dicom_with_a_nan_pixel_keeps_the_film(tmp_path: Path, gray: np.ndarray) -> None:
    values = gray.astype(np.float32) / 100
    values[5, 7] = np.nan
    image = read_image(_write_dicom(_float_dicom(values), tmp_path / "float.dcm"))
    expected = _stretched(np.where(np.isnan(values), gray.min() / 100, values))
    expected[5, 7] = 0
    assert np.array_equal(image, expected)
    values[:20] = np.inf
    with pytest.raises(PneumoError, match=rf"{20 * gray.shape[1]} of {gray.size} pixels are NaN or infinite"):
        read_image(_write_dicom(_float_dicom(values), tmp_path / "inf.dcm"))


def test_blank_dicom_is_refused(tmp_path: Path) -> None:
    ds = _small_dicom(np.full((32, 32), 300, np.uint16), "MONOCHROME2", 12)
    with pytest.raises(PneumoError, match="image is blank: every pixel has the value 300"):
        read_image(_write_dicom(ds, tmp_path / "flat.dcm"))


def test_import_does_not_load_pydicom() -> None:
    code = "import sys, pneumo.data.io; assert 'pydicom' not in sys.modules, 'pydicom imported eagerly'"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-500:]


@pytest.mark.filterwarnings("ignore:Invalid value for VR AS")  # pydicom notes the non-standard ages we test
@pytest.mark.parametrize("stored, years", [("004Y", 4.0), ("018M", 1.5), ("026W", 26 / 52.18), ("062", 62.0), ("", None), ("old", None)])
def test_patient_age_is_read_in_years(stored: str, years: float | None, tmp_path: Path) -> None:
    ds = pydicom.dcmread(SAMPLES / "dicom" / "dx_chest_uncompressed.dcm")
    ds.PatientAge = stored
    ds.save_as(tmp_path / "aged.dcm")
    age = read_image_with_info(tmp_path / "aged.dcm")[1].patient_age_years
    assert age == (pytest.approx(years) if years is not None else None)
