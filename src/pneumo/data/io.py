"""Decode image files to single-channel uint8 arrays, and record what each file was.

Supported formats (`SUPPORTED_FORMATS`): JPEG, PNG and DICOM, plus TIFF, BMP, WebP and GIF.
Everything else (EPS/PostScript, PDF, PSD, ICO, JPEG 2000, HEIC...) is refused by content, whatever
the file is called: Pillow is only allowed to try the plugins of the supported formats, so its
other readers (EPS runs Ghostscript) are never reached from a file or an upload.

Files are read only when they are regular files (never a FIFO, a device or a socket, which would
hang or never end) of at most `MAX_FILE_BYTES`. Pixels are oriented as the file's EXIF says; deep
images (16-bit, float, DICOM) are stretched over their own range, with DICOM padding pixels and a
few non-finite pixels left out of that range and shown black; blank images are refused.

The record (`ImageInfo`) keeps what decoding to gray throws away (colour, original size, DICOM
modality and body part), so callers can warn about inputs the model cannot judge.
"""

from __future__ import annotations

import io
import math
import os
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError

from pneumo.errors import PneumoError
from pneumo.utils.reading import Refusals, file_kind, open_regular, os_reason, read_regular

__all__ = [
    "ImageInfo",
    "MAX_FILE_BYTES",
    "MAX_NON_FINITE_FRACTION",
    "SUPPORTED_FORMATS",
    "SUPPORTED_FORMATS_TEXT",
    "check_image_file",
    "read_image",
    "read_image_bytes",
    "read_image_with_info",
    "decode_image",
    "decode_image_with_info",
    "pixel_count",
    "to_uint8_gray",
]

# The formats pneumo reads, the usual three first; every message that lists formats uses these.
SUPPORTED_FORMATS = ("JPEG", "PNG", "DICOM", "TIFF", "BMP", "WebP", "GIF")
SUPPORTED_FORMATS_TEXT = (
    f"{', '.join(SUPPORTED_FORMATS[:2])} or {SUPPORTED_FORMATS[2]} image"
    f" ({', '.join(SUPPORTED_FORMATS[3:-1])} and {SUPPORTED_FORMATS[-1]} are read too)"
)
# Pillow's plugin names for the supported formats other than DICOM (read with pydicom): the only
# plugins Image.open may try. MPO is what Pillow's JPEG plugin calls a JPEG with extra pictures.
_PIL_FORMATS = ("JPEG", "PNG", "TIFF", "BMP", "WEBP", "GIF")
_PIL_OPENED = frozenset({*_PIL_FORMATS, "MPO"})
# Files that are not supported, named by their first bytes so the refusal says what the file is.
_REFUSED_MAGIC = (
    (0, b"%PDF", "a PDF document"),
    (0, b"%!PS", "a PostScript/EPS file"),
    (0, b"\xc5\xd0\xd3\xc6", "an EPS file"),
    (0, b"8BPS", "a Photoshop (PSD) file"),
    (0, b"\x00\x00\x01\x00", "an icon (ICO) file"),
    (0, b"\x00\x00\x00\x0cjP  \r\n\x87\n", "a JPEG 2000 file"),
    (0, b"\xffO\xffQ", "a JPEG 2000 file"),
    (4, b"ftypheic", "a HEIC photo"),
    (4, b"ftypheix", "a HEIC photo"),
    (4, b"ftypmif1", "a HEIF photo"),
    (4, b"ftypavif", "an AVIF image"),
    (0, b"PK\x03\x04", "a zip archive"),
    (0, b"\x1f\x8b", "a gzip archive"),
)
# A file larger than this is not one radiograph (an uncompressed 16-bit 8000 x 8000 DICOM is 128 MB).
MAX_FILE_BYTES = 512 * 1024**2
# Deep images may hold a few NaN or infinite pixels (dead detector pixels, a division by zero in a
# processing step): up to this fraction they are left out of the stretch and shown black; more, and
# the image is refused, since what the film shows can no longer be trusted.
MAX_NON_FINITE_FRACTION = 0.001
# EXIF orientation (tag 274) -> the transpose that shows the picture upright.
_EXIF_ORIENTATION = 0x0112
_ORIENT = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}

# DICOM PS3.10 7.1: a 128-byte preamble, then "DICM". Files are recognised by this, not by name.
_DICOM_MAGIC = b"DICM"
_DICOM_MAGIC_AT = 128
_DICOM_SUFFIXES = (".dcm", ".dicom")
# The (7FE0,0010) Pixel Data tag as it appears in little- and big-endian files.
_PIXEL_DATA_TAG = b"\xe0\x7f\x10\x00"
_PIXEL_DATA_TAG_BIG_ENDIAN = b"\x7f\xe0\x00\x10"
# PIL modes whose channels can differ; colourfulness is measured on an RGB copy of these.
_COLOUR_MODES = frozenset({"RGB", "RGBA", "RGBa", "RGBX", "CMYK", "YCbCr", "P", "PA"})
# PIL modes with an alpha channel (a palette image may have one too: its "transparency" entry).
_ALPHA_MODES = frozenset({"RGBA", "RGBa", "LA", "La", "PA"})
# Colourfulness is a mean over the image: a copy at most this many pixels a side estimates it well.
_COLOUR_SIDE = 64


@dataclass(frozen=True)
class ImageInfo:
    """What an input file was before it became a gray array.

    `colourfulness` is the mean absolute difference between colour channels (0-255 scale) on a
    downscaled copy: about 0 for a radiograph, even one stored as RGB or with JPEG chroma noise;
    tens for a photograph or a screenshot. `mode` is PIL's mode, or the DICOM
    PhotometricInterpretation. `width`/`height` are the picture's own pixel size as shown upright
    (a quarter-turn EXIF orientation swaps the stored ones), before any reduced-scale decode.
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
    transparent: float = 0.0  # share of the picture at least half transparent (alpha below 128); it is judged as shown on black

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-serialisable fields, for reports."""
        return asdict(self)


_STRETCH_CHUNK = 1 << 20  # pixels stretched at a time: a deep image is never copied whole as float64


Part = tuple[Any, np.ndarray, "np.ndarray | None"]  # where in the result, the values there, which of them are excluded


def _stretch(parts: Callable[[], Iterator[Part]], out: np.ndarray, size: int, floating: bool, name: str) -> np.ndarray:
    """`out` filled with the parts' values mapped from their own min..max to 0..255, excluded and
    non-finite values left out of the range and shown black; two passes over `parts()`, a part at a time."""

    def kept(values: np.ndarray, excluded: np.ndarray | None) -> np.ndarray | None:
        keep = np.isfinite(values) if floating else None
        if excluded is not None:
            keep = ~excluded if keep is None else keep & ~excluded
        return keep

    n_bad, lo, hi = 0, np.inf, -np.inf
    for _, values, excluded in parts():
        if floating:
            n_bad += int(np.count_nonzero(~np.isfinite(values)))
        keep = kept(values, excluded)
        chosen = values if keep is None else values[keep]
        if chosen.size:
            lo, hi = min(lo, float(chosen.min())), max(hi, float(chosen.max()))
    if n_bad > MAX_NON_FINITE_FRACTION * size:
        raise PneumoError(
            f"{name}: {n_bad} of {size} pixels are NaN or infinite (more than"
            f" {MAX_NON_FINITE_FRACTION:.1%} of the image): the picture cannot be trusted; re-export the image"
            " from its source"
        )
    if lo > hi:
        what = "every pixel is padding (PixelPaddingValue)" if n_bad == 0 else "no pixel has a finite value"
        raise PneumoError(f"{name}: image is blank: {what}; check that the right image was exported")
    if hi <= lo:
        raise PneumoError(f"{name}: image is blank: every pixel has the value {lo:g}; check that the right image was exported")
    for where, values, excluded in parts():
        with np.errstate(invalid="ignore", over="ignore"):
            scaled = np.round((values.astype(np.float64) - lo) / (hi - lo) * 255.0)
        keep = kept(values, excluded)
        if keep is not None:
            scaled[~keep] = 0.0
        out[where] = scaled.astype(np.uint8)
    return out


def _stretch_to_uint8(pixels: np.ndarray, name: str = "<image>", exclude: np.ndarray | None = None) -> np.ndarray:
    """Map the array's own min..max to 0..255, leaving out (and showing black) `exclude`d pixels
    (DICOM padding) and NaN or infinite ones. Done a chunk at a time, so a large deep image takes
    little more memory than itself and its 8-bit result.

    Refused with a PneumoError naming `name`: more than `MAX_NON_FINITE_FRACTION` of the pixels
    non-finite, and a blank image (no pixel left, or every pixel the same value), which a stretch
    would only turn into an arbitrary flat gray.
    """
    values = np.asarray(pixels)
    flat = values.reshape(-1)
    mask = None if exclude is None else np.asarray(exclude, dtype=bool).reshape(-1)

    def parts() -> Iterator[Part]:
        for start in range(0, flat.size, _STRETCH_CHUNK):
            where = slice(start, start + _STRETCH_CHUNK)
            yield where, flat[where], None if mask is None else mask[where]

    out = np.empty(flat.size, dtype=np.uint8)
    return _stretch(parts, out, flat.size, not np.issubdtype(values.dtype, np.integer), name).reshape(values.shape)


def _stretch_pil(image: Image.Image, name: str) -> np.ndarray:
    """`_stretch_to_uint8` of a deep PIL image (16-bit, 32-bit or float), read a strip of rows at a
    time: its pixels are never all copied into an array, only into the 8-bit result."""
    width, height = image.size
    rows = max(1, _STRETCH_CHUNK // max(1, width))

    def parts() -> Iterator[Part]:
        for top in range(0, height, rows):
            bottom = min(top + rows, height)
            yield slice(top, bottom), np.asarray(image.crop((0, top, width, bottom))), None

    return _stretch(parts, np.empty((height, width), dtype=np.uint8), width * height, image.mode.startswith("F"), name)


def to_uint8_gray(image: Image.Image, name: str = "<image>") -> np.ndarray:
    """Single-channel uint8 from any PIL mode.

    Colour is reduced with ITU-R 601 luma (identical channels stay as they are); an image with
    alpha is composited on black first, as a viewer on a dark background shows it (the pixels
    under a transparent area are not part of the picture); 16-bit, 32-bit and float images are stretched from their own min..max, because
    their bit depth in use (often 10-12 bits) is not recorded in the file; a few NaN or infinite
    float pixels are left out of the stretch and shown black, more are refused (see
    `MAX_NON_FINITE_FRACTION`), as is a deep image whose pixels are all the same. `name` is
    shown in those errors.
    """
    if image.mode.startswith(("I", "F")):  # I, I;16, I;16B, I;16L, I;16N, I;16S, F...
        return _stretch_pil(image, name)
    if image.mode == "L":
        return np.asarray(image, dtype=np.uint8)
    if image.mode == "1":
        image = image.convert("L")
    elif _has_alpha(image):
        image = Image.alpha_composite(Image.new("RGBA", image.size, (0, 0, 0, 255)), image.convert("RGBA")).convert("RGB")
    elif image.mode != "RGB":
        image = image.convert("RGB")  # RGBA, LA, PA, P, CMYK, YCbCr, La, RGBa, LAB, HSV...
    return np.asarray(image.convert("L"), dtype=np.uint8)


def _small_copy(image: Image.Image) -> Image.Image:
    """A strided copy at most _COLOUR_SIDE pixels a side: whole-image means (colour, transparency) need no more."""
    width, height = image.size
    step = max(1, -(-max(width, height) // _COLOUR_SIDE))
    return image.resize((max(1, width // step), max(1, height // step)), Image.Resampling.NEAREST) if step > 1 else image


def _has_alpha(image: Image.Image) -> bool:
    return image.mode in _ALPHA_MODES or (image.mode == "P" and "transparency" in image.info)


def transparent_share(image: Image.Image) -> float:
    """The share of the picture at least half transparent, on a strided copy; 0.0 for an image without alpha."""
    if not _has_alpha(image):
        return 0.0
    alpha = np.asarray(_small_copy(image).convert("RGBA").getchannel("A"))
    return float((alpha < 128).mean()) if alpha.size else 0.0


def rgb_colourfulness(rgb: np.ndarray) -> float:
    """Mean absolute difference between the channels of a uint8 [H, W, 3] array, on a strided copy."""
    step = max(1, -(-max(rgb.shape[:2]) // _COLOUR_SIDE))
    small = rgb[::step, ::step].astype(np.int16)
    r, g, b = small[..., 0], small[..., 1], small[..., 2]
    return float((np.abs(r - g) + np.abs(g - b) + np.abs(r - b)).mean() / 3.0)


def pil_colourfulness(image: Image.Image) -> float:
    """Colourfulness of a loaded PIL image; 0.0 for modes without colour channels."""
    if image.mode not in _COLOUR_MODES:
        return 0.0
    return rgb_colourfulness(np.asarray(_small_copy(image).convert("RGB")))


def _jpeg_colourfulness(data: bytes) -> float:
    """Colourfulness of a colour JPEG whose main decode was drafted to gray, from a 1/8-scale decode."""
    with Image.open(io.BytesIO(data), formats=_PIL_FORMATS) as image:
        image.draft("RGB", (max(1, image.width // 8), max(1, image.height // 8)))
        image.load()
        return pil_colourfulness(image)


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


def _not_supported(data: bytes, name: str) -> PneumoError:
    """The error for bytes that are none of the supported formats, saying what they are where that is known."""
    what = next((kind for at, magic, kind in _REFUSED_MAGIC if data[at : at + len(magic)] == magic), None)
    if what:
        hint = f"; it is {what}, which pneumo does not read: export the radiograph itself in one of these formats"
    elif _looks_like_text(data):
        hint = "; it holds text, not pixels: check that the right file was saved"
    elif Path(name).suffix.lower() in _DICOM_SUFFIXES:
        hint = (
            "; DICOM files are recognised by the 128-byte preamble followed by 'DICM', which this"
            " file lacks: re-export it as a standard DICOM file"
        )
    else:
        hint = ""
    return PneumoError(f"{name}: not a readable {SUPPORTED_FORMATS_TEXT}{hint}")


def _exif_orientation(image: Image.Image) -> int:
    """The EXIF Orientation (1-8) of a JPEG, PNG, TIFF or WebP; 1 when absent, unknown or unreadable."""
    try:
        value = image.getexif().get(_EXIF_ORIENTATION, 1)
    except Exception:  # a damaged EXIF block: the pixels may still be fine, and upright is the usual case
        return 1
    return value if isinstance(value, int) and value in _ORIENT else 1


def _decode_pil(data: bytes, name: str, size_hint: int | None, max_pixels: int | None = None) -> tuple[np.ndarray, ImageInfo]:
    """JPEG, PNG, TIFF, BMP, WebP and GIF; only those plugins of Pillow are tried."""
    try:
        with Image.open(io.BytesIO(data), formats=_PIL_FORMATS) as image:
            fmt, mode, (width, height) = image.format or "unknown", image.mode, image.size
            if fmt not in _PIL_OPENED:  # cannot happen with `formats`; a guard should a plugin hand over another class
                raise _not_supported(data, name)
            _check_pixels(name, width, height, max_pixels)  # from the header, before decoding a byte of pixels
            if size_hint and image.format == "JPEG":
                image.draft("L", (2 * size_hint, 2 * size_hint))
            image.load()
            frames = int(getattr(image, "n_frames", 1))
            if mode in _COLOUR_MODES and image.mode not in _COLOUR_MODES:
                colourfulness = _jpeg_colourfulness(data)  # the draft decoded luma only
            else:
                colourfulness = pil_colourfulness(image)
            transparent = transparent_share(image)
            orientation = _exif_orientation(image)
            if orientation != 1:  # a film stored sideways or mirrored, shown upright by any viewer
                image = image.transpose(_ORIENT[orientation])
                if orientation >= 5:  # a quarter turn: the picture's width is the file's height
                    width, height = height, width
            pixels = to_uint8_gray(image, name)
    except Image.DecompressionBombError as exc:
        raise PneumoError(
            f"{name}: image has too many pixels to decode safely ({exc}); if it is a real radiograph, send a copy"
            " a few thousand pixels a side at most"
        ) from None
    except UnidentifiedImageError:
        raise _not_supported(data, name) from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise PneumoError(f"{name}: image is damaged or truncated ({exc})") from None
    return pixels, ImageInfo(fmt, width, height, mode, colourfulness, frames, transparent=transparent)


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


def _decode_dicom(data: bytes, name: str, max_pixels: int | None = None) -> tuple[np.ndarray, ImageInfo]:
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
        return _stretch_to_uint8(values, name, padding), header.info
    rgb = stored if stored.dtype == np.uint8 else _stretch_to_uint8(stored, name)
    gray = to_uint8_gray(Image.fromarray(np.ascontiguousarray(rgb), "RGB"), name)
    return gray, replace(header.info, colourfulness=rgb_colourfulness(rgb))


def _too_large(name: str, size: int) -> PneumoError:
    return PneumoError(
        f"{name}: file is {size / 1024**2:.0f} MiB, over the limit of {MAX_FILE_BYTES / 1024**2:.0f} MiB for one image;"
        " a chest radiograph is rarely over 100 MiB: check that this is the right file"
    )


def decode_image_with_info(
    data: bytes, name: str = "<bytes>", size_hint: int | None = None, max_pixels: int | None = None
) -> tuple[np.ndarray, ImageInfo]:
    """Decode encoded image bytes to a uint8 [H, W] array and a record of what the file was.

    Args:
        data: the file's bytes: JPEG, PNG or DICOM (TIFF, BMP, WebP and GIF are read too;
            see `SUPPORTED_FORMATS`), recognised by content whatever the file is called (DICOM
            by its standard preamble); any other format is refused.
        name: shown in error messages.
        size_hint: the side the image will be resized to; JPEGs much larger than this are
            decoded at a reduced scale, which is several times faster and loses nothing.
        max_pixels: refuse images with more pixels than this, judged from the header before
            decoding (a service's guard); None keeps PIL's own decompression-bomb limit.

    Raises:
        PneumoError: naming `name`, for bytes that are empty, over `MAX_FILE_BYTES`, not a
            supported format, damaged, or a blank image (every pixel the same).

    Example:
        >>> pixels, info = decode_image_with_info(open("film.jpeg", "rb").read(), "film.jpeg")  # doctest: +SKIP
    """
    if not data:
        raise PneumoError(f"{name}: file is empty (0 bytes)")
    if len(data) > MAX_FILE_BYTES:
        raise _too_large(name, len(data))
    if data[_DICOM_MAGIC_AT : _DICOM_MAGIC_AT + len(_DICOM_MAGIC)] == _DICOM_MAGIC:
        pixels, info = _decode_dicom(data, name, max_pixels)
    else:
        pixels, info = _decode_pil(data, name, size_hint, max_pixels)
    if pixels.size and pixels.min() == pixels.max():  # deep images were refused so by the stretch already
        if info.transparent > 0.5:
            raise PneumoError(f"{name}: image is transparent: nothing is left of it on a black background; export the film without alpha")
        raise PneumoError(f"{name}: image is blank: every pixel has the value {pixels.flat[0]}; check that the right image was exported")
    return pixels, info


def pixel_count(data: bytes) -> int:
    """How many pixels the bytes say they hold, from the header alone (0 when it cannot be told:
    decoding will say why): what a decode is about to need, before it needs it."""
    try:
        if data[_DICOM_MAGIC_AT : _DICOM_MAGIC_AT + len(_DICOM_MAGIC)] == _DICOM_MAGIC:
            import pydicom

            ds = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True)
            return int(ds.get("Rows") or 0) * int(ds.get("Columns") or 0) * int(ds.get("NumberOfFrames") or 1)
        with Image.open(io.BytesIO(data), formats=_PIL_FORMATS) as image:
            return image.width * image.height
    except Exception:  # anything unreadable is refused by the decode itself, with its reason
        return 0


def decode_image(data: bytes, name: str = "<bytes>", size_hint: int | None = None) -> np.ndarray:
    """Decode encoded image bytes to a uint8 [H, W] array (see `decode_image_with_info`)."""
    return decode_image_with_info(data, name, size_hint)[0]


def _image_refusals(path: Path) -> Refusals:
    return Refusals(
        unreadable=lambda exc, _: PneumoError(f"cannot read {path}: {os_reason(exc)}"),
        not_regular=lambda mode: PneumoError(
            f"{path} is {file_kind(mode, detailed=True)}, not an image file; give the path of an image file"
        ),
        too_large=lambda size, _: _too_large(str(path), size),
    )


def check_image_file(path: str | Path) -> None:
    """Raise a PneumoError naming `path` unless it is a regular file that can be opened for reading
    (never a folder, FIFO, device or socket, which are not opened at all); reads nothing.

    For listings that only need to know a file is there (`pneumo data summary`), without waiting
    on a FIFO the way `open()` would.
    """
    path = Path(path)
    os.close(open_regular(path, _image_refusals(path)))


def read_image_bytes(path: str | Path) -> bytes:
    """The bytes of an image file, refusing anything that is not a regular file (before opening
    it) and files over `MAX_FILE_BYTES` (never reading more than that, whatever the file claims).

    Use this, not `Path.read_bytes`, wherever a user-given path is read: a FIFO named `x.jpeg`
    would hang `read_bytes` and `/dev/zero` would fill the memory.

    Raises:
        PneumoError: naming the path, for a missing or unreadable file, a folder, a FIFO, a
            device or a socket, or a file over the size limit.
    """
    path = Path(path)
    return read_regular(path, MAX_FILE_BYTES, _image_refusals(path))


def read_image_with_info(path: str | Path, size_hint: int | None = None) -> tuple[np.ndarray, ImageInfo]:
    """Read an image file as a uint8 [H, W] array and a record of what it was (see
    `read_image_bytes` for which files are read, `decode_image_with_info` for how)."""
    path = Path(path)
    return decode_image_with_info(read_image_bytes(path), str(path), size_hint)


def read_image(path: str | Path, size_hint: int | None = None) -> np.ndarray:
    """Read an image file as a uint8 [H, W] array (see `read_image_with_info`)."""
    return read_image_with_info(path, size_hint)[0]
