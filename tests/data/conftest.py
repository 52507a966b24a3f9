"""Images shared by the data tests: a real radiograph, and DICOM files built around it."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.pixels import set_pixel_data

from tests.conftest import SAMPLES, pick


@pytest.fixture(scope="module")
def real_jpeg(shared_data: Path) -> Path:
    return pick("PNEUMONIA", 1, offset=7)[0]


@pytest.fixture(scope="module")
def gray(real_jpeg: Path) -> np.ndarray:
    """A real radiograph as PIL decodes it, first channel (the three are identical)."""
    with Image.open(real_jpeg) as im:
        return np.asarray(im.convert("RGB"))[..., 0].copy()


def _stretched(pixels: np.ndarray) -> np.ndarray:
    lo, hi = float(pixels.min()), float(pixels.max())
    return np.round((pixels.astype(float) - lo) / (hi - lo) * 255).astype(np.uint8)


DICOM = SAMPLES / "dicom"
CR_MONO2 = DICOM / "cr_chest_pa_jpeg_baseline.dcm"
CR_MONO1 = DICOM / "cr_chest_pa_monochrome1.dcm"
DX = DICOM / "dx_chest_uncompressed.dcm"
OT = DICOM / "not_a_chest_ot.dcm"


def _dicom_bytes(ds: pydicom.Dataset) -> bytes:
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def _write_dicom(ds: pydicom.Dataset, path: Path) -> Path:
    path.write_bytes(_dicom_bytes(ds))
    return path


def _small_dicom(pixels: np.ndarray, photometric: str, bits: int = 8) -> pydicom.Dataset:
    """The DX sample's header around other (uncompressed) pixels."""
    ds = pydicom.dcmread(DX)
    set_pixel_data(ds, pixels, photometric, bits)
    return ds
