"""From decoded pixels to a single-channel uint8 array, and the record of what that throws away.

Deep images (16-bit, float, DICOM) are stretched over their own range, a chunk at a time, with
excluded pixels (DICOM padding) and a few non-finite pixels left out of that range and shown
black; colour is reduced to luma, alpha composited on black. `ImageInfo` keeps the colour,
transparency and size that the gray array no longer shows, so callers can warn about inputs the
model cannot judge. Shared by the Pillow formats (`pneumo.data.io`) and DICOM (`pneumo.data.dicom`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from PIL import Image

from pneumo.errors import PneumoError

__all__ = [
    "COLOUR_MODES",
    "ImageInfo",
    "MAX_NON_FINITE_FRACTION",
    "check_pixel_count",
    "pil_colourfulness",
    "rgb_colourfulness",
    "stretch_to_uint8",
    "to_uint8_gray",
    "transparent_share",
]

# Deep images may hold a few NaN or infinite pixels (dead detector pixels, a division by zero in a
# processing step): up to this fraction they are left out of the stretch and shown black; more, and
# the image is refused, since what the film shows can no longer be trusted.
MAX_NON_FINITE_FRACTION = 0.001
# PIL modes whose channels can differ; colourfulness is measured on an RGB copy of these.
COLOUR_MODES = frozenset({"RGB", "RGBA", "RGBa", "RGBX", "CMYK", "YCbCr", "P", "PA"})
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


def stretch_to_uint8(pixels: np.ndarray, name: str = "<image>", exclude: np.ndarray | None = None) -> np.ndarray:
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
    """`stretch_to_uint8` of a deep PIL image (16-bit, 32-bit or float), read a strip of rows at a
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
    if image.mode not in COLOUR_MODES:
        return 0.0
    return rgb_colourfulness(np.asarray(_small_copy(image).convert("RGB")))


def check_pixel_count(name: str, width: int, height: int, max_pixels: int | None) -> None:
    """Refuse an image of more than `max_pixels` (a service's guard), judged from its header before decoding."""
    if max_pixels is not None and width * height > max_pixels:
        raise PneumoError(
            f"{name}: image is {width}x{height} ({width * height / 1e6:.0f} megapixels), over the limit of "
            f"{max_pixels / 1e6:g} megapixels; send a smaller copy (the model sees it at a few hundred pixels a side)"
        )
