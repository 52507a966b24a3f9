"""Images a notebook already holds (numpy arrays, PIL images, torch tensors, encoded bytes) as
the same grey uint8 pixels and `ImageInfo` a file would give, so `predict` treats them alike.

Accepted: a PIL image in any mode (through the file path's own conversion); encoded bytes of any
format pneumo reads; an array or tensor 2-D grey [H, W], or 3-D colour [H, W, C] (numpy's order)
or [C, H, W] (torch's), C = 1, 3 or 4, of bool, integers or floats. uint8 is taken as it is;
floats within [0, 1] are scaled by 255; other numbers are stretched from their own min..max, as
deep files are. From there an image goes the way a file of its mode goes
(`pneumo.data.pixels.to_uint8_gray`: ITU-R 601 luma, alpha composited on black). Non-finite values, empty or
one-value images and anything else are refused with a PneumoError that names what was given and
what is accepted.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from PIL import Image

from pneumo.data.io import decode_image_with_info
from pneumo.data.pixels import ImageInfo, pil_colourfulness, to_uint8_gray, transparent_share
from pneumo.errors import PneumoError

__all__ = ["ACCEPTED", "image_from_object", "is_in_memory_image"]

ACCEPTED = (
    "image files, folders or glob patterns (str or Path), or images in memory: numpy arrays or torch tensors "
    "[H, W] grey or [H, W, C] / [C, H, W] colour, PIL images, or encoded bytes"
)


def _max_pixels() -> int:
    return Image.MAX_IMAGE_PIXELS or 2**31  # the limit files are decoded under, so an array is not a way around it


def _is_tensor(obj: object) -> bool:
    return type(obj).__module__.split(".")[0] == "torch" and hasattr(obj, "detach")


def is_in_memory_image(obj: object) -> bool:
    """Whether `obj` is an image in memory (not a path)."""
    return isinstance(obj, (np.ndarray, Image.Image, bytes, bytearray, memoryview)) or _is_tensor(obj)


def _channels_last(pixels: np.ndarray, name: str, tensor: bool) -> np.ndarray:
    if pixels.ndim == 2:
        return pixels
    if pixels.ndim == 3:
        if tensor and pixels.shape[0] in (1, 3, 4) and pixels.shape[-1] not in (1, 3, 4):
            pixels = np.moveaxis(pixels, 0, -1)
        if pixels.shape[-1] in (1, 3, 4):
            return pixels
    raise PneumoError(f"{name}: an image array must be [H, W] grey or [H, W, C] colour with C = 1, 3 or 4; got shape {list(pixels.shape)}")


def _to_uint8(pixels: np.ndarray, name: str) -> np.ndarray:
    if pixels.dtype == np.uint8:
        return pixels
    if pixels.dtype == bool:
        return pixels.astype(np.uint8) * 255
    if not (np.issubdtype(pixels.dtype, np.integer) or np.issubdtype(pixels.dtype, np.floating)):
        raise PneumoError(f"{name}: image values must be numbers (bool, integers or floats); got {pixels.dtype}")
    values = pixels.astype(np.float64)
    if not np.isfinite(values).all():
        raise PneumoError(f"{name}: the image holds NaN or infinite values")
    low, high = float(values.min()), float(values.max())
    if low >= 0.0 and high <= 1.0 and np.issubdtype(pixels.dtype, np.floating):
        return np.rint(values * 255.0).astype(np.uint8)
    if high == low:
        raise PneumoError(f"{name}: every pixel of the image has the same value ({low:g}); there is no picture to judge")
    return np.rint((values - low) / (high - low) * 255.0).astype(np.uint8)


def _from_array(pixels: np.ndarray, name: str, tensor: bool) -> tuple[np.ndarray, ImageInfo]:
    pixels = _channels_last(pixels, name, tensor)
    height, width = pixels.shape[:2]
    if height == 0 or width == 0:
        raise PneumoError(f"{name}: the image is empty (shape {list(pixels.shape)})")
    if height * width > _max_pixels():
        raise PneumoError(f"{name}: {width} x {height} pixels is more than pneumo decodes ({_max_pixels():,}); downscale it first")
    pixels = _to_uint8(pixels, name)
    if pixels.ndim == 3 and pixels.shape[-1] == 1:
        pixels = pixels[..., 0]
    image = Image.fromarray(np.ascontiguousarray(pixels))  # L, RGB or RGBA: then the way a file of that mode goes
    info = ImageInfo("array", int(width), int(height), image.mode, pil_colourfulness(image), transparent=transparent_share(image))
    return to_uint8_gray(image, name), info


def image_from_object(obj: Any, name: str) -> tuple[np.ndarray, ImageInfo]:
    """An in-memory image as grey uint8 [H, W] and what it was; a PneumoError naming `name` otherwise."""
    if isinstance(obj, (bytes, bytearray, memoryview)):
        return decode_image_with_info(bytes(obj), name)
    if isinstance(obj, Image.Image):
        width, height = obj.size
        if width * height > _max_pixels():
            raise PneumoError(f"{name}: {width} x {height} pixels is more than pneumo decodes ({_max_pixels():,}); downscale it first")
        info = ImageInfo("PIL", width, height, obj.mode, pil_colourfulness(obj), transparent=transparent_share(obj))
        return to_uint8_gray(obj, name), info
    if _is_tensor(obj):
        return _from_array(obj.detach().cpu().numpy(), name, tensor=True)
    if isinstance(obj, np.ndarray):
        return _from_array(obj, name, tensor=False)
    raise PneumoError(f"{name}: a {type(obj).__name__} is not an image; give {ACCEPTED}")
