"""Decode image files to single-channel uint8 arrays, whatever their mode or bit depth."""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from pneumo.errors import PneumoError

__all__ = ["read_image", "decode_image", "to_uint8_gray"]


def to_uint8_gray(image: Image.Image) -> np.ndarray:
    """Single-channel uint8 from any PIL mode.

    Colour is reduced with ITU-R 601 luma (identical channels stay as they are); alpha is
    dropped; 16-bit and float images are stretched from their own min..max, because their
    bit depth in use (often 10-12 bits) is not recorded in the file.
    """
    if image.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        pixels = np.asarray(image, dtype=np.float64)
        lo, hi = float(pixels.min()), float(pixels.max())
        scaled = (pixels - lo) / (hi - lo) * 255.0 if hi > lo else np.zeros_like(pixels)
        return np.round(scaled).astype(np.uint8)
    if image.mode == "L":
        return np.asarray(image, dtype=np.uint8)
    if image.mode in ("RGBA", "LA", "PA", "P", "CMYK", "YCbCr", "1", "La", "RGBa"):
        image = image.convert("RGB") if image.mode != "1" else image.convert("L")
    return np.asarray(image.convert("L"), dtype=np.uint8)


def decode_image(data: bytes, name: str = "<bytes>", size_hint: int | None = None) -> np.ndarray:
    """Decode encoded image bytes to a uint8 [H, W] array.

    Args:
        data: the file's bytes (JPEG or PNG).
        name: shown in error messages.
        size_hint: the side the image will be resized to; JPEGs much larger than this are
            decoded at a reduced scale, which is several times faster and loses nothing.
    """
    if not data:
        raise PneumoError(f"{name}: file is empty (0 bytes)")
    try:
        with Image.open(io.BytesIO(data)) as image:
            if size_hint and image.format == "JPEG":
                image.draft("L", (2 * size_hint, 2 * size_hint))
            image.load()
            return to_uint8_gray(image)
    except Image.DecompressionBombError:
        raise PneumoError(f"{name}: image has too many pixels to decode safely") from None
    except UnidentifiedImageError:
        raise PneumoError(f"{name}: not a readable JPEG or PNG image") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise PneumoError(f"{name}: image is damaged or truncated ({exc})") from None


def read_image(path: str | Path, size_hint: int | None = None) -> np.ndarray:
    """Read an image file as a uint8 [H, W] array (see `decode_image`)."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except IsADirectoryError:
        raise PneumoError(f"{path} is a folder, not an image file") from None
    except OSError as exc:
        raise PneumoError(f"cannot read {path}: {exc.strerror or exc}") from None
    return decode_image(data, str(path), size_hint)
