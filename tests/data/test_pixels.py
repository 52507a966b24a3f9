"""pneumo.data.pixels: pixels to single-channel uint8, and the record of what that throws away."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from pneumo.data.pixels import ImageInfo, stretch_to_uint8, to_uint8_gray
from pneumo.errors import PneumoError


def test_to_uint8_gray_names_the_image_in_its_errors() -> None:
    with pytest.raises(PneumoError, match="^scan: image is blank"):
        to_uint8_gray(Image.fromarray(np.zeros((4, 4), np.float32), "F"), "scan")


def test_image_info_to_dict_is_json() -> None:
    info = ImageInfo("DICOM", 10, 20, "MONOCHROME1", 0.0, 1, "CR", "CHEST", "AP")
    as_dict = info.to_dict()
    assert list(as_dict) == [
        "format",
        "width",
        "height",
        "mode",
        "colourfulness",
        "frames",
        "modality",
        "body_part",
        "view_position",
        "patient_age_years",
        "transparent",
    ]
    assert json.loads(json.dumps(as_dict)) == as_dict
    assert ImageInfo(**as_dict) == info


def test_a_large_deep_image_is_stretched_without_a_float_copy_of_it() -> None:
    import tracemalloc

    deep = np.random.default_rng(0).integers(100, 4000, (4000, 4000), dtype=np.uint16)
    tracemalloc.start()
    try:
        out = stretch_to_uint8(deep, "big.png")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 3 * deep.size  # the 8-bit result and a few chunks; a float64 copy alone would be 8 bytes a pixel
    lo, hi = int(deep.min()), int(deep.max())
    np.testing.assert_array_equal(out[:50], np.round((deep[:50].astype(np.float64) - lo) / (hi - lo) * 255).astype(np.uint8))
