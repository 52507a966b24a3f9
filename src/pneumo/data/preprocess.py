"""The one preprocessing path shared by training, evaluation and prediction (no train/serve skew).

Stage 1, `resize_image`: decoded uint8 [H, W] -> black margin trimmed -> uint8 [S, S] (cached on disk for training).
Stage 2, `normalise`: a uint8 batch on any device -> float [B, 1, S, S] with the model's mean/std.

torch is imported inside `normalise` only, so stage 1 serves the torch-free ONNX runtime too.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

from pneumo.data.io import read_image_with_info
from pneumo.data.pixels import ImageInfo
from pneumo.errors import PneumoError

if TYPE_CHECKING:
    import torch

__all__ = [
    "MARGIN_LEVEL",
    "trim_black_margin",
    "resize_image",
    "load_image",
    "load_image_with_info",
    "check_image_batch",
    "normalise",
    "PREPROCESS_VERSION",
]

# Bump when stage 1 changes: it is part of the cache key. 2: the black margin is trimmed first.
PREPROCESS_VERSION = 2
# a row or column along an edge whose every pixel is at most this dark is margin, not film
MARGIN_LEVEL = 16


def trim_black_margin(image: np.ndarray) -> np.ndarray:
    """The film without the black rows and columns around it (padding to a square, a scanner's frame).

    Squashed to the model's square, a border shrinks the film by its width: at the model's size the
    content crop finds the box again but has fewer pixels of film to stretch back, so a padded film
    read differently from the same film unpadded. Trimmed here, at the decoded size, the same film
    gives the same pixels either way. An image that is mostly dark keeps its frame (at least half of
    each side must be left): it is not a film with a margin.
    """
    bright = image > MARGIN_LEVEL
    rows, cols = np.flatnonzero(bright.any(axis=1)), np.flatnonzero(bright.any(axis=0))
    if not rows.size:
        return image
    top, bottom, left, right = int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1
    if 2 * (bottom - top) < image.shape[0] or 2 * (right - left) < image.shape[1]:
        return image
    return image[top:bottom, left:right]


def resize_image(image: np.ndarray, size: int) -> np.ndarray:
    """Trim the black margin (`trim_black_margin`), then resize to size x size (aspect ratio not kept,
    as in the notebook), antialiased bilinear."""
    image = trim_black_margin(image)
    if image.shape == (size, size):
        return np.array(image, dtype=np.uint8)  # a writable copy, as below
    resized = Image.fromarray(image).resize((size, size), Image.Resampling.BILINEAR)
    return np.array(resized, dtype=np.uint8)  # a writable copy: torch refuses read-only arrays


def load_image(path: str | Path, size: int) -> np.ndarray:
    """A file as the model sees it before normalisation: uint8 [size, size]."""
    return load_image_with_info(path, size)[0]


def load_image_with_info(path: str | Path, size: int) -> tuple[np.ndarray, ImageInfo]:
    """`load_image`, with what the file was (format, original size, DICOM tags) for the input checks."""
    pixels, info = read_image_with_info(path, size_hint=size)
    return resize_image(pixels, size), info


def check_image_batch(
    images: object, size: int, what: str = "the model", allow_empty: bool = True, keep_tensors: bool = False
) -> np.ndarray:
    """`images` as the uint8 [N, size, size] array stage 2 takes, or a PneumoError saying how to make one.
    A torch tensor is checked where it is (on its device, not copied); with `keep_tensors` it is
    returned as it is, otherwise as an array."""
    tensor = type(images).__module__.split(".")[0] == "torch" and hasattr(images, "dim")
    if not tensor:
        images = np.asarray(images)
    dtype, shape = str(images.dtype).removeprefix("torch."), tuple(images.shape)  # type: ignore[union-attr]
    if len(shape) != 3 or shape[1:] != (size, size) or dtype != "uint8" or (not allow_empty and shape[0] == 0):
        least = "" if allow_empty else " with N >= 1"
        given = f"a {dtype} tensor" if tensor else dtype
        raise PneumoError(
            f"{what} needs uint8 images [N, {size}, {size}]{least}; got {given} {list(shape)}: "
            f"load them with pneumo.data.preprocess.load_image(path, {size})"
        )
    return images if keep_tensors or not tensor else np.asarray(images)  # type: ignore[return-value]


def normalise(batch: torch.Tensor, mean: float, std: float) -> torch.Tensor:
    """uint8 [B, S, S] (or float in [0, 1] [B, 1, S, S]) -> float [B, 1, S, S], (x/255 - mean) / std."""
    import torch

    if batch.dtype == torch.uint8:
        batch = batch.float().div_(255.0)
    if batch.dim() == 3:
        batch = batch.unsqueeze(1)
    return (batch - mean) / std
