"""The one preprocessing path shared by training, evaluation and prediction (no train/serve skew).

Stage 1, `resize_image`: decoded uint8 [H, W] -> uint8 [S, S] (cached on disk for training).
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

__all__ = ["resize_image", "load_image", "load_image_with_info", "check_image_batch", "normalise", "PREPROCESS_VERSION"]

# Bump when stage 1 changes: it is part of the cache key.
PREPROCESS_VERSION = 1


def resize_image(image: np.ndarray, size: int) -> np.ndarray:
    """Resize to size x size (aspect ratio not kept, as in the notebook), antialiased bilinear."""
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
