"""Decode image files to single-channel uint8 arrays, and record what each file was: the entry
points (`read_image*`, `decode_image*`), which format a file is, and the Pillow formats.

Supported formats (`SUPPORTED_FORMATS`): JPEG, PNG and DICOM, plus TIFF, BMP, WebP and GIF.
Everything else (EPS/PostScript, PDF, PSD, ICO, JPEG 2000, HEIC...) is refused by content, whatever
the file is called: Pillow is only allowed to try the plugins of the supported formats, so its
other readers (EPS runs Ghostscript) are never reached from a file or an upload.

Files are read only when they are regular files (never a FIFO, a device or a socket, which would
hang or never end) of at most `MAX_FILE_BYTES` (`pneumo.utils.reading`). Pixels are oriented as
the file's EXIF says; deep images are stretched over their own range (`pneumo.data.pixels`), DICOM
decoded by `pneumo.data.dicom`; blank images are refused.

The record (`pneumo.data.pixels.ImageInfo`) keeps what decoding to gray throws away (colour,
original size, DICOM modality and body part), so callers can warn about inputs the model cannot judge.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from pneumo.data.dicom import DICOM_SUFFIXES, decode_dicom, dicom_pixel_count, is_dicom
from pneumo.data.pixels import COLOUR_MODES, ImageInfo, check_pixel_count, pil_colourfulness, to_uint8_gray, transparent_share
from pneumo.errors import PneumoError
from pneumo.utils.reading import Refusals, file_kind, open_regular, os_reason, read_regular

__all__ = [
    "MAX_FILE_BYTES",
    "SUPPORTED_FORMATS",
    "SUPPORTED_FORMATS_TEXT",
    "check_image_file",
    "read_image",
    "read_image_bytes",
    "read_image_with_info",
    "decode_image",
    "decode_image_with_info",
    "pixel_count",
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


def _jpeg_colourfulness(data: bytes) -> float:
    """Colourfulness of a colour JPEG whose main decode was drafted to gray, from a 1/8-scale decode."""
    with Image.open(io.BytesIO(data), formats=_PIL_FORMATS) as image:
        image.draft("RGB", (max(1, image.width // 8), max(1, image.height // 8)))
        image.load()
        return pil_colourfulness(image)


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
    elif Path(name).suffix.lower() in DICOM_SUFFIXES:
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
            check_pixel_count(name, width, height, max_pixels)  # from the header, before decoding a byte of pixels
            if size_hint and image.format == "JPEG":
                image.draft("L", (2 * size_hint, 2 * size_hint))
            image.load()
            frames = int(getattr(image, "n_frames", 1))
            if mode in COLOUR_MODES and image.mode not in COLOUR_MODES:
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
    if is_dicom(data):
        pixels, info = decode_dicom(data, name, max_pixels)
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
        if is_dicom(data):
            return dicom_pixel_count(data)
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
