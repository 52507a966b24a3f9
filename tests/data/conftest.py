"""What the data tests share: a real radiograph and DICOM files built around it; the dataset archive
(real images laid out like ChestXRay2017.zip) and the HTTP server on 127.0.0.1 that serves it to
the download tests, with Range support and switches that hang up mid-file or stall."""

from __future__ import annotations

import hashlib
import io
import re
import socket
import threading
import time
import zipfile
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.pixels import set_pixel_data

import pneumo.data.download as download
from pneumo.data.layout import discover
from pneumo.data.transfer import URL_ENV
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


# --- the dataset archive and the loopback mirror that the download tests share ---

ARCHIVE = "ChestXRay2017.zip"


PICKS = {("train", "NORMAL"): (3, 0), ("train", "PNEUMONIA"): (3, 0), ("test", "NORMAL"): (2, 7), ("test", "PNEUMONIA"): (2, 7)}


class Mirror:
    """An HTTP server on 127.0.0.1 serving bytes from memory, with Range requests and failure switches."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.ranges: list[str | None] = []  # the Range header of every request, in order
        self.drops = 0  # how many of the next responses hang up after `drop_after` bytes of body
        self.drop_after = 0
        self.ignore_range = False  # answer 200 with the whole file, as servers without Range support do
        self.stall = 0.0  # seconds to wait before answering
        mirror = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (the http.server API)
                try:
                    mirror.answer(self)
                except ConnectionError:  # the client gave up first (the timeout test)
                    pass

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def serve(self, path: str, data: bytes) -> str:
        self.files[path] = data
        return f"http://127.0.0.1:{self.server.server_port}/{path}"

    def answer(self, h: BaseHTTPRequestHandler) -> None:
        asked = h.headers.get("Range")
        self.ranges.append(asked)
        time.sleep(self.stall)
        body = self.files.get(h.path.lstrip("/"))
        if body is None:
            h.send_error(404)
            return
        start = 0
        m = re.fullmatch(r"bytes=(\d+)-", asked or "")
        if m and not self.ignore_range:
            start = int(m.group(1))
            if start >= len(body):
                h.send_response(416)
                h.send_header("Content-Range", f"bytes */{len(body)}")
                h.send_header("Content-Length", "0")
                h.end_headers()
                return
            h.send_response(206)
            h.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        else:
            h.send_response(200)
        h.send_header("Content-Length", str(len(body) - start))
        h.end_headers()
        rest = body[start:]
        if self.drops:
            self.drops -= 1
            rest = rest[: self.drop_after]  # then the connection closes (HTTP/1.0) short of Content-Length
        h.wfile.write(rest)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def offline(monkeypatch: pytest.MonkeyPatch) -> None:
    """No proxy, no mirror from the environment, and a default address that is a closed loopback port."""
    for var in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "all_proxy", "ALL_PROXY", URL_ENV):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(download, "MENDELEY_URL", f"http://127.0.0.1:{closed_port()}/file_downloaded")


@pytest.fixture
def mirror() -> Iterator[Mirror]:
    server = Mirror()
    yield server
    server.close()


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def zip_archive(entries: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in entries.items():
            zf.writestr(name, data)
    return buf.getvalue()


@pytest.fixture(scope="module")
def images() -> dict[str, bytes]:
    """Ten real images as ChestXRay2017.zip lays them out, plus the macOS junk it carries."""
    entries = {
        f"chest_xray/{split}/{label}/{f.name}": f.read_bytes()
        for (split, label), (n, offset) in PICKS.items()
        for f in pick(label, n, offset)
    }
    first = next(iter(entries))
    return {
        **entries,
        f"__MACOSX/{first.rsplit('/', 1)[0]}/._{first.rsplit('/', 1)[1]}": b"\x00\x05\x16\x07junk",
        "chest_xray/.DS_Store": b"\x00\x00\x00\x01Bud1",
    }


@pytest.fixture(scope="module")
def dataset_zip(images: dict[str, bytes]) -> bytes:
    return zip_archive(images)


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def tree(folder: Path) -> dict[str, int]:
    """Every path under a folder with its size (-1 for folders), to compare before and after."""
    return {str(p.relative_to(folder)): (p.stat().st_size if p.is_file() else -1) for p in folder.rglob("*")}


def quiet(**kwargs: object) -> dict[str, object]:
    return {"progress": False, **kwargs}


def check_dataset(root: Path, images: dict[str, bytes]) -> None:
    """The unpacked folder holds exactly the archive's images, byte for byte, and discover finds them."""
    expected = {
        name.removeprefix("chest_xray/"): data for name, data in images.items() if name.endswith(".jpeg") and name.startswith("chest_xray/")
    }
    found = {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}
    assert found == expected  # __MACOSX and .DS_Store left out
    dataset = discover(root)
    assert dataset.layout == "kaggle" and list(dataset.splits) == ["train", "test"]
    for (split, label), (n, _) in PICKS.items():
        assert sum(r.label == label for r in dataset.splits[split]) == n
