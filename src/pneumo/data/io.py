"""Decode image files (JPEG, PNG, DICOM) to single-channel uint8 arrays, and record what each file was.

The record (`ImageInfo`) keeps what decoding to gray throws away (colour, original size, DICOM
modality and body part), so callers can warn about inputs the model cannot judge.
"""
from __future__ import annotations

import io
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError

from pneumo.errors import PneumoError

__all__ = [
    "ImageInfo",
    "read_image",
    "read_image_with_info",
    "decode_image",
    "decode_image_with_info",
    "to_uint8_gray",
]

# DICOM PS3.10 7.1: a 128-byte preamble, then "DICM". Files are recognised by this, not by name.
_DICOM_MAGIC = b"DICM"
_DICOM_MAGIC_AT = 128
_DICOM_SUFFIXES = (".dcm", ".dicom")
# The (7FE0,0010) Pixel Data tag as it appears in little- and big-endian files.
_PIXEL_DATA_TAG = b"\xe0\x7f\x10\x00"
_PIXEL_DATA_TAG_BIG_ENDIAN = b"\x7f\xe0\x00\x10"
# PIL modes whose channels can differ; colourfulness is measured on an RGB copy of these.
_COLOUR_MODES = frozenset({"RGB", "RGBA", "RGBa", "RGBX", "CMYK", "YCbCr", "P", "PA"})
# Colourfulness is a mean over the image: a copy at most this many pixels a side estimates it well.
_COLOUR_SIDE = 64


@dataclass(frozen=True)
class ImageInfo:
    """What an input file was before it became a gray array.

    `colourfulness` is the mean absolute difference between colour channels (0-255 scale) on a
    downscaled copy: about 0 for a radiograph, even one stored as RGB or with JPEG chroma noise;
    tens for a photograph or a screenshot. `mode` is PIL's mode, or the DICOM
    PhotometricInterpretation. `width`/`height` are the file's own pixel size, before any
    reduced-scale decode.
    """

    format: str
    width: int
    height: int
    mode: str
    colourfulness: float
    frames: int = 1
    modality: str | None = None
    body_part: str | None = None
    view_position: str | None = None
    patient_age_years: float | None = None  # DICOM (0010,1010), e.g. "004Y", "018M"; "62" read as years

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-serialisable fields, for reports."""
        return asdict(self)


def _stretch_to_uint8(pixels: np.ndarray) -> np.ndarray:
    """Map the array's own min..max to 0..255 (all zeros if it is constant)."""
    pixels = np.asarray(pixels, dtype=np.float64)
    lo, hi = float(pixels.min()), float(pixels.max())
    scaled = (pixels - lo) / (hi - lo) * 255.0 if hi > lo else np.zeros_like(pixels)
    return np.round(scaled).astype(np.uint8)


def to_uint8_gray(image: Image.Image) -> np.ndarray:
    """Single-channel uint8 from any PIL mode.

    Colour is reduced with ITU-R 601 luma (identical channels stay as they are); alpha is
    dropped; 16-bit and float images are stretched from their own min..max, because their
    bit depth in use (often 10-12 bits) is not recorded in the file.
    """
    if image.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        return _stretch_to_uint8(np.asarray(image))
    if image.mode == "L":
        return np.asarray(image, dtype=np.uint8)
    if image.mode in ("RGBA", "LA", "PA", "P", "CMYK", "YCbCr", "1", "La", "RGBa"):
        image = image.convert("RGB") if image.mode != "1" else image.convert("L")
    return np.asarray(image.convert("L"), dtype=np.uint8)


def _colourfulness(rgb: np.ndarray) -> float:
    """Mean absolute difference between the channels of a uint8 [H, W, 3] array, on a strided copy."""
    step = max(1, -(-max(rgb.shape[:2]) // _COLOUR_SIDE))
    small = rgb[::step, ::step].astype(np.int16)
    r, g, b = small[..., 0], small[..., 1], small[..., 2]
    return float((np.abs(r - g) + np.abs(g - b) + np.abs(r - b)).mean() / 3.0)


def _pil_colourfulness(image: Image.Image) -> float:
    """Colourfulness of a loaded PIL image; 0.0 for modes without colour channels."""
    if image.mode not in _COLOUR_MODES:
        return 0.0
    width, height = image.size
    step = max(1, -(-max(width, height) // _COLOUR_SIDE))
    if step > 1:
        image = image.resize((max(1, width // step), max(1, height // step)), Image.Resampling.NEAREST)
    return _colourfulness(np.asarray(image.convert("RGB")))


def _jpeg_colourfulness(data: bytes) -> float:
    """Colourfulness of a colour JPEG whose main decode was drafted to gray, from a 1/8-scale decode."""
    with Image.open(io.BytesIO(data)) as image:
        image.draft("RGB", (max(1, image.width // 8), max(1, image.height // 8)))
        image.load()
        return _pil_colourfulness(image)


def _check_pixels(name: str, width: int, height: int, max_pixels: int | None) -> None:
    if max_pixels is not None and width * height > max_pixels:
        raise PneumoError(
            f"{name}: image is {width}x{height} ({width * height / 1e6:.0f} megapixels), over the limit of "
            f"{max_pixels / 1e6:g} megapixels; send a smaller copy (the model sees it at a few hundred pixels a side)"
        )


def _looks_like_text(data: bytes) -> bool:
    """Whether the start of a file reads as UTF-8 text (a note, a CSV, an HTML error page)."""
    head = data[:512]
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError as exc:
        if len(data) == len(head) or exc.start < len(head) - 3:  # more than a character cut at byte 512
            return False
        text = head[: exc.start].decode("utf-8")
    return bool(text) and all(c.isprintable() or c in "\t\r\n" for c in text)


def _decode_pil(data: bytes, name: str, size_hint: int | None, max_pixels: int | None = None) -> tuple[np.ndarray, ImageInfo]:
    """JPEG, PNG and whatever else PIL opens."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            fmt, mode, (width, height) = image.format or "unknown", image.mode, image.size
            _check_pixels(name, width, height, max_pixels)  # from the header, before decoding a byte of pixels
            if size_hint and image.format == "JPEG":
                image.draft("L", (2 * size_hint, 2 * size_hint))
            image.load()
            pixels = to_uint8_gray(image)
            if mode in _COLOUR_MODES and image.mode not in _COLOUR_MODES:
                colourfulness = _jpeg_colourfulness(data)  # the draft decoded luma only
            else:
                colourfulness = _pil_colourfulness(image)
            frames = int(getattr(image, "n_frames", 1))
    except Image.DecompressionBombError as exc:
        raise PneumoError(
            f"{name}: image has too many pixels to decode safely ({exc}); if it is a real radiograph, send a copy"
            " a few thousand pixels a side at most"
        ) from None
    except UnidentifiedImageError:
        hint = ""
        if _looks_like_text(data):
            hint = " (it holds text, not pixels: check that the right file was saved)"
        elif Path(name).suffix.lower() in _DICOM_SUFFIXES:
            hint = (
                " (DICOM files are recognised by the 128-byte preamble followed by 'DICM', which this"
                " file lacks; re-export it as a standard DICOM file)"
            )
        raise PneumoError(f"{name}: not a readable JPEG, PNG or DICOM image{hint}") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise PneumoError(f"{name}: image is damaged or truncated ({exc})") from None
    return pixels, ImageInfo(fmt, width, height, mode, colourfulness, frames)


def _tag_text(value: object) -> str | None:
    """A DICOM string element as plain text; None when absent or blank."""
    text = "" if value is None else str(value).strip()
    return text or None


def _age_in_years(value: object) -> float | None:
    """DICOM Age String ("nnnD", "nnnW", "nnnM", "nnnY") in years; a bare number, as some systems
    write it, is taken as years; anything else as unknown."""
    text = _tag_text(value)
    if not text:
        return None
    text = text.upper()
    per_year = {"D": 365.25, "W": 52.18, "M": 12.0, "Y": 1.0}.get(text[-1], None)
    number = text[:-1] if per_year else text
    try:
        return float(number) / (per_year or 1.0)
    except ValueError:
        return None


@dataclass(frozen=True)
class _DicomHeader:
    """What a DICOM file says about its image, read before any pixel is decoded."""

    has_pixels: bool
    photometric: str
    rows: int
    columns: int
    frames: int
    samples: int
    syntax: Any  # pydicom.uid.UID
    info: ImageInfo


def _read_dicom(data: bytes, name: str) -> tuple[Any, _DicomHeader]:
    """The parsed dataset and its header, or a PneumoError for bytes pydicom cannot parse."""
    import pydicom
    from pydicom.uid import UID

    try:
        ds = pydicom.dcmread(io.BytesIO(data))
        photometric = str(ds.get("PhotometricInterpretation") or "").strip().upper()
        rows, columns = int(ds.get("Rows") or 0), int(ds.get("Columns") or 0)
        samples = int(ds.get("SamplesPerPixel") or 1)
        syntax = UID(str(ds.file_meta.get("TransferSyntaxUID") or "").strip())
        modality, body_part, view = (_tag_text(ds.get(k)) for k in ("Modality", "BodyPartExamined", "ViewPosition"))
        info = ImageInfo("DICOM", columns, rows, photometric, 0.0, 1, modality, body_part, view, _age_in_years(ds.get("PatientAge")))
        header = _DicomHeader("PixelData" in ds, photometric, rows, columns, int(ds.get("NumberOfFrames") or 1), samples, syntax, info)
    except Exception as exc:  # pydicom raises many types (struct.error, KeyError, EOFError...) on bad bytes
        raise PneumoError(f"{name}: DICOM file is damaged or truncated ({type(exc).__name__}: {exc})") from None
    return ds, header


def _refuse_unsupported(header: _DicomHeader, data: bytes, name: str, max_pixels: int | None) -> str:
    """A PneumoError for a DICOM pneumo cannot read (no image, several frames, too large, an
    undecodable syntax or colour model); otherwise the transfer syntax's name for later messages."""
    from pydicom.pixels import get_decoder

    damaged = f"{name}: DICOM file is damaged or truncated"
    if not header.has_pixels:
        if _PIXEL_DATA_TAG in data or _PIXEL_DATA_TAG_BIG_ENDIAN in data:
            # pydicom drops an encapsulated Pixel Data element cut off before its end, silently
            raise PneumoError(f"{damaged} (its Pixel Data element is cut off or unreadable)")
        raise PneumoError(
            f"{name}: DICOM file contains no image (no Pixel Data element); export the image itself,"
            " or check that the file was copied completely"
        )
    if header.frames > 1:
        raise PneumoError(f"{name}: multi-frame DICOM ({header.frames} frames) is not supported; export a single frame")
    rows, columns, syntax = header.rows, header.columns, header.syntax
    if rows <= 0 or columns <= 0:
        raise PneumoError(f"{damaged} (image size {columns}x{rows})")
    limit = Image.MAX_IMAGE_PIXELS
    if limit is not None and rows * columns > 2 * limit:  # where PIL raises DecompressionBombError
        raise PneumoError(f"{name}: image has too many pixels to decode safely ({columns}x{rows})")
    _check_pixels(name, columns, rows, max_pixels)
    if not syntax:
        raise PneumoError(f"{damaged} (its file meta has no Transfer Syntax UID)")
    syntax_text = f"{syntax.name} ({syntax})" if syntax.name != syntax else str(syntax)
    try:
        decodable = get_decoder(syntax).is_available
    except NotImplementedError:  # a syntax pydicom has no decoder for at all
        decodable = False
    if not decodable:
        raise PneumoError(
            f"{name}: DICOM transfer syntax {syntax_text} cannot be decoded with the installed packages;"
            " convert the file to an uncompressed or JPEG Baseline DICOM (e.g. `gdcmconv --raw`),"
            " or install pylibjpeg: pip install pylibjpeg pylibjpeg-libjpeg pylibjpeg-openjpeg"
        )
    monochrome = header.samples == 1 and header.photometric in ("MONOCHROME1", "MONOCHROME2")
    if not monochrome and header.samples != 3:
        raise PneumoError(
            f"{name}: DICOM PhotometricInterpretation {header.photometric or '(missing)'} with {header.samples} sample(s)"
            " per pixel is not supported; export the image as MONOCHROME2 or RGB"
        )
    return syntax_text


def _decode_dicom(data: bytes, name: str, max_pixels: int | None = None) -> tuple[np.ndarray, ImageInfo]:
    """A single-frame DICOM image, displayed as a radiologist would see it, bone bright.

    Modality LUT (rescale) then VOI LUT or window, as the file asks; MONOCHROME1 is inverted;
    the result is stretched over its own min..max like other deep images.
    """
    try:  # imported here: only DICOM inputs pay for importing pydicom
        from pydicom.pixels import apply_modality_lut, apply_voi_lut
    except ImportError:  # pydicom missing, or 2.x without pydicom.pixels
        raise PneumoError(f"{name}: reading DICOM files needs pydicom 3 or later: pip install 'pydicom>=3'") from None

    ds, header = _read_dicom(data, name)
    syntax_text = _refuse_unsupported(header, data, name, max_pixels)
    samples = header.samples
    try:
        pixels = ds.pixel_array
        if samples == 1:
            pixels = apply_voi_lut(apply_modality_lut(pixels, ds), ds)
    except Exception as exc:  # decoder plugins raise anything from ValueError to RuntimeError
        raise PneumoError(
            f"{name}: cannot decode the DICOM pixel data ({syntax_text}): {exc}; the file may be damaged"
            " or truncated, or convert it to an uncompressed DICOM"
        ) from None
    expected = (header.rows, header.columns) if samples == 1 else (header.rows, header.columns, samples)
    if pixels.shape != expected or not np.isfinite(pixels).all():
        raise PneumoError(f"{name}: DICOM file is damaged or truncated (decoded pixels of shape {pixels.shape}, expected {expected})")

    if samples == 1:
        return _stretch_to_uint8(-pixels.astype(np.float64) if header.photometric == "MONOCHROME1" else pixels), header.info
    rgb = pixels if pixels.dtype == np.uint8 else _stretch_to_uint8(pixels)
    gray = to_uint8_gray(Image.fromarray(np.ascontiguousarray(rgb), "RGB"))
    return gray, replace(header.info, colourfulness=_colourfulness(rgb))


def decode_image_with_info(
    data: bytes, name: str = "<bytes>", size_hint: int | None = None, max_pixels: int | None = None
) -> tuple[np.ndarray, ImageInfo]:
    """Decode encoded image bytes to a uint8 [H, W] array and a record of what the file was.

    Args:
        data: the file's bytes: JPEG, PNG (or another format PIL reads), or DICOM with its
            standard preamble (recognised by content, whatever the file is called).
        name: shown in error messages.
        size_hint: the side the image will be resized to; JPEGs much larger than this are
            decoded at a reduced scale, which is several times faster and loses nothing.
        max_pixels: refuse images with more pixels than this, judged from the header before
            decoding (a service's guard); None keeps PIL's own decompression-bomb limit.
    """
    if not data:
        raise PneumoError(f"{name}: file is empty (0 bytes)")
    if data[_DICOM_MAGIC_AT : _DICOM_MAGIC_AT + len(_DICOM_MAGIC)] == _DICOM_MAGIC:
        return _decode_dicom(data, name, max_pixels)
    return _decode_pil(data, name, size_hint, max_pixels)


def decode_image(data: bytes, name: str = "<bytes>", size_hint: int | None = None) -> np.ndarray:
    """Decode encoded image bytes to a uint8 [H, W] array (see `decode_image_with_info`)."""
    return decode_image_with_info(data, name, size_hint)[0]


def read_image_with_info(path: str | Path, size_hint: int | None = None) -> tuple[np.ndarray, ImageInfo]:
    """Read an image file as a uint8 [H, W] array and a record of what it was (see `decode_image_with_info`)."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except IsADirectoryError:
        raise PneumoError(f"{path} is a folder, not an image file") from None
    except OSError as exc:
        raise PneumoError(f"cannot read {path}: {exc.strerror or exc}") from None
    return decode_image_with_info(data, str(path), size_hint)


def read_image(path: str | Path, size_hint: int | None = None) -> np.ndarray:
    """Read an image file as a uint8 [H, W] array (see `decode_image_with_info`)."""
    return read_image_with_info(path, size_hint)[0]
