"""DICOM files: recognised by content, checked from the header, displayed as a radiologist sees them.

pydicom is imported only when a DICOM file is read, so other inputs never pay for it.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
from PIL import Image

from pneumo.data.pixels import ImageInfo, check_pixel_count, rgb_colourfulness, stretch_to_uint8, to_uint8_gray
from pneumo.errors import PneumoError

__all__ = ["DICOM_SUFFIXES", "decode_dicom", "dicom_pixel_count", "is_dicom"]

# DICOM PS3.10 7.1: a 128-byte preamble, then "DICM". Files are recognised by this, not by name.
_DICOM_MAGIC = b"DICM"
_DICOM_MAGIC_AT = 128
DICOM_SUFFIXES = (".dcm", ".dicom")
# The (7FE0,0010) Pixel Data tag as it appears in little- and big-endian files.
_PIXEL_DATA_TAG = b"\xe0\x7f\x10\x00"
_PIXEL_DATA_TAG_BIG_ENDIAN = b"\x7f\xe0\x00\x10"


def is_dicom(data: bytes) -> bool:
    """Whether the bytes are a DICOM file: the standard preamble followed by 'DICM', whatever the file is called."""
    return data[_DICOM_MAGIC_AT : _DICOM_MAGIC_AT + len(_DICOM_MAGIC)] == _DICOM_MAGIC


def dicom_pixel_count(data: bytes) -> int:
    """Rows x columns x frames from a DICOM header, without its pixels; any error is the caller's to catch."""
    import pydicom

    ds = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True)
    return int(ds.get("Rows") or 0) * int(ds.get("Columns") or 0) * int(ds.get("NumberOfFrames") or 1)


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
        has_pixels = any(k in ds for k in ("PixelData", "FloatPixelData", "DoubleFloatPixelData"))
        header = _DicomHeader(has_pixels, photometric, rows, columns, int(ds.get("NumberOfFrames") or 1), samples, syntax, info)
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
    check_pixel_count(name, columns, rows, max_pixels)
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


def _number(ds: Any, keyword: str, name: str) -> float | None:
    """A numeric DICOM element as a float (None when absent); a PneumoError when it is not a finite number."""
    if keyword not in ds:
        return None
    try:
        raw = ds[keyword].value  # pydicom converts the stored text on first access, and may fail there
        if raw is None or raw == "":
            return None
        value = float(raw)
    except (TypeError, ValueError, OverflowError):  # text that is no number, or several values where one belongs
        stored = getattr(ds.get_item(keyword), "value", None) if hasattr(ds, "get_item") else None
        shown = stored.decode("latin-1", "replace").strip() if isinstance(stored, bytes) else str(stored if stored is not None else "?")
        raise PneumoError(f"{name}: DICOM {keyword} is {shown!r}, not a number; fix the file's {keyword}") from None
    if not math.isfinite(value):
        raise PneumoError(f"{name}: DICOM {keyword} is {value}: the image cannot be rescaled; fix the file's {keyword}")
    return value


def _check_rescale(ds: Any, name: str) -> None:
    """Refuse a modality rescale that would wipe out or garble the image (a slope of 0, NaN or infinite)."""
    if "ModalityLUTSequence" in ds:
        return  # a lookup table replaces the rescale
    slope = _number(ds, "RescaleSlope", name)
    _number(ds, "RescaleIntercept", name)
    if slope == 0:
        raise PneumoError(f"{name}: DICOM RescaleSlope is 0: the image would be blank; fix the file's RescaleSlope (usually 1)")


def _padding_mask(ds: Any, stored: np.ndarray, name: str) -> np.ndarray | None:
    """Where the stored pixels are padding (PixelPaddingValue, up to PixelPaddingRangeLimit if given):
    the area outside the film that holds no data; None when the file declares none."""
    value = _number(ds, "PixelPaddingValue", name)
    if value is None:
        return None
    limit = _number(ds, "PixelPaddingRangeLimit", name)
    if limit is None:
        return stored == value
    low, high = min(value, limit), max(value, limit)
    return (stored >= low) & (stored <= high)


def decode_dicom(data: bytes, name: str, max_pixels: int | None = None) -> tuple[np.ndarray, ImageInfo]:
    """A single-frame DICOM image, displayed as a radiologist would see it, bone bright.

    Modality LUT (rescale) then VOI LUT or window, as the file asks; MONOCHROME1 is inverted;
    the result is stretched over its own min..max like other deep images. Padding pixels
    (PixelPaddingValue, PixelPaddingRangeLimit) and a few NaN or infinite values are left out of
    that range and shown black; a rescale slope of 0, NaN or infinity is refused.
    """
    try:  # imported here: only DICOM inputs pay for importing pydicom
        from pydicom.pixels import apply_modality_lut, apply_voi_lut
    except ImportError:  # pydicom missing, or 2.x without pydicom.pixels
        raise PneumoError(f"{name}: reading DICOM files needs pydicom 3 or later: pip install 'pydicom>=3'") from None

    ds, header = _read_dicom(data, name)
    syntax_text = _refuse_unsupported(header, data, name, max_pixels)
    samples = header.samples
    if samples == 1:
        _check_rescale(ds, name)
    try:
        stored = ds.pixel_array
    except Exception as exc:  # decoder plugins raise anything from ValueError to RuntimeError
        raise PneumoError(
            f"{name}: cannot decode the DICOM pixel data ({syntax_text}): {exc}; the file may be damaged"
            " or truncated, or convert it to an uncompressed DICOM"
        ) from None
    expected = (header.rows, header.columns) if samples == 1 else (header.rows, header.columns, samples)
    if stored.shape != expected:
        raise PneumoError(f"{name}: DICOM file is damaged or truncated (decoded pixels of shape {stored.shape}, expected {expected})")

    if samples == 1:
        padding = _padding_mask(ds, stored, name)
        try:
            values = apply_modality_lut(stored, ds)
            finite = np.isfinite(values)
            all_finite = bool(finite.all())
            if not all_finite:  # float pixel data with NaN or inf: the window must not see them
                values = np.where(finite, values, 0.0)
            values = np.asarray(apply_voi_lut(values, ds), dtype=np.float64)  # an integer LUT wants the integers
            if not all_finite:
                values[~finite] = np.nan  # counted, and left out, by the stretch
        except Exception as exc:  # a malformed LUT or window
            raise PneumoError(
                f"{name}: cannot apply the DICOM file's rescale or window ({type(exc).__name__}: {exc}); fix or remove them"
            ) from None
        if header.photometric == "MONOCHROME1":
            values = -values
        return stretch_to_uint8(values, name, padding), header.info
    rgb = stored if stored.dtype == np.uint8 else stretch_to_uint8(stored, name)
    gray = to_uint8_gray(Image.fromarray(np.ascontiguousarray(rgb), "RGB"), name)
    return gray, replace(header.info, colourfulness=rgb_colourfulness(rgb))
