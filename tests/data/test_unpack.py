"""pneumo.data.unpack: hostile and damaged archives are refused and leave nothing behind.

Through `download`, from an HTTP server on 127.0.0.1 (tests/data/conftest.py); nothing here
reaches the internet.
"""

from __future__ import annotations

import io
import shutil
import stat
import tarfile
import uuid
import zipfile
from pathlib import Path
from typing import Callable

import pytest

from pneumo.data.download import download
from pneumo.errors import PneumoError
from tests.data.conftest import ARCHIVE, Mirror, quiet, sha, tree, zip_archive

pytestmark = pytest.mark.usefixtures("offline")


def _bomb() -> bytes:
    """200 MB of zeros in one entry, written in chunks so it never sits in memory unpacked."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as zf:
        with zf.open("chest_xray/train/NORMAL/IM-0001-0001.jpeg", "w", force_zip64=True) as fh:
            block = bytes(1 << 20)
            for _ in range(200):
                fh.write(block)
    return buf.getvalue()


def _symlink_zip(images: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in images.items():
            zf.writestr(name, data)
        link = zipfile.ZipInfo("chest_xray/train/NORMAL/link.jpeg")
        link.create_system = 3  # Unix: the high 16 bits of external_attr are the mode
        link.external_attr = (stat.S_IFLNK | 0o777) << 16
        zf.writestr(link, "../../../../../etc/passwd")
    return buf.getvalue()


def _tar(images: dict[str, bytes], extra: Callable[[tarfile.TarFile], None]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        for name, data in images.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
        extra(tf)
    return buf.getvalue()


def _tar_entry(name: str, kind: bytes, target: str = "", data: bytes = b"") -> Callable[[tarfile.TarFile], None]:
    def add(tf: tarfile.TarFile) -> None:
        info = tarfile.TarInfo(name)
        info.type, info.linkname, info.size = kind, target, len(data)
        tf.addfile(info, io.BytesIO(data) if data else None)

    return add


def _crc_damaged(images: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as zf:
        for name, data in images.items():
            zf.writestr(name, data)
    raw = bytearray(buf.getvalue())
    raw[200] ^= 0xFF  # inside the first image's stored bytes
    return bytes(raw)


ABSOLUTE = f"/tmp/pneumo-download-test-{uuid.uuid4().hex}.txt"


MALICIOUS: dict[str, tuple[str, Callable[[dict[str, bytes]], bytes], str]] = {
    "dot-dot": (ARCHIVE, lambda im: zip_archive({**im, "../evil.txt": b"pwned"}), "outside the target folder"),
    "dot-dot-nested": (ARCHIVE, lambda im: zip_archive({**im, "chest_xray/../../../evil.txt": b"pwned"}), "outside the target folder"),
    "absolute": (ARCHIVE, lambda im: zip_archive({**im, ABSOLUTE: b"pwned"}), "outside the target folder"),
    "drive-letter": (ARCHIVE, lambda im: zip_archive({**im, "C:\\evil.txt": b"pwned"}), "outside the target folder"),
    "backslashes": (ARCHIVE, lambda im: zip_archive({**im, "chest_xray\\..\\..\\evil.txt": b"pwned"}), "outside the target folder"),
    "zip-symlink": (ARCHIVE, _symlink_zip, "symbolic link"),
    "zip-bomb": (ARCHIVE, lambda im: _bomb(), "zip bomb"),
    "tar-symlink": (
        "ChestXRay2017.tar.gz",
        lambda im: _tar(im, _tar_entry("chest_xray/link.jpeg", tarfile.SYMTYPE, "/etc/passwd")),
        "is a link",
    ),
    "tar-hardlink": (
        "ChestXRay2017.tar.gz",
        lambda im: _tar(im, _tar_entry("chest_xray/hard.jpeg", tarfile.LNKTYPE, "/etc/passwd")),
        "is a link",
    ),
    "tar-device": ("ChestXRay2017.tar.gz", lambda im: _tar(im, _tar_entry("chest_xray/dev", tarfile.CHRTYPE)), "device or special file"),
    "tar-dot-dot": (
        "ChestXRay2017.tar.gz",
        lambda im: _tar(im, _tar_entry("../evil.txt", tarfile.REGTYPE, data=b"pwned")),
        "outside the target folder",
    ),
    "not-an-archive": (ARCHIVE, lambda im: b"<!DOCTYPE html><title>Sign in</title>" * 20, "neither a zip nor a tar"),
    "damaged": (ARCHIVE, _crc_damaged, "damaged"),
}


@pytest.fixture(scope="module")
def malicious(images: dict[str, bytes]) -> dict[str, tuple[str, bytes, str]]:
    return {case: (name, build(images), reason) for case, (name, build, reason) in MALICIOUS.items()}


@pytest.mark.parametrize("case", list(MALICIOUS))
def test_refused_archive_leaves_nothing(case: str, mirror: Mirror, malicious: dict[str, tuple[str, bytes, str]], tmp_path: Path) -> None:
    name, data, reason = malicious[case]
    url = mirror.serve(name, data)
    to = tmp_path / "work" / "data"
    to.parent.mkdir()
    before = tree(tmp_path)
    with pytest.raises(PneumoError, match=reason) as err:
        download(url=url, to=to, **quiet())
    assert "nothing was unpacked" in str(err.value) and "Deleted it" in str(err.value)
    assert tree(tmp_path) == before  # nothing outside `to`, and `to` itself gone again
    assert not to.exists()
    assert not Path(ABSOLUTE).exists()


def test_refusal_keeps_what_the_target_already_held(mirror: Mirror, malicious: dict[str, tuple[str, bytes, str]], tmp_path: Path) -> None:
    name, data, _ = malicious["dot-dot"]
    to = tmp_path / "data"
    to.mkdir()
    (to / "notes.txt").write_text("mine")
    with pytest.raises(PneumoError, match="outside the target folder"):
        download(url=mirror.serve(name, data), to=to, **quiet())
    assert tree(tmp_path) == {"data": -1, "data/notes.txt": 4}


def test_size_limit(mirror: Mirror, dataset_zip: bytes, tmp_path: Path) -> None:
    to = tmp_path / "data"
    with pytest.raises(PneumoError, match=r"more than 10.0 kB .*raise the limit"):
        download(url=mirror.serve(ARCHIVE, dataset_zip), to=to, max_bytes=10_000, **quiet())
    assert not to.exists()


def test_target_folder_taken_keeps_the_archive(mirror: Mirror, dataset_zip: bytes, tmp_path: Path) -> None:
    url = mirror.serve(ARCHIVE, dataset_zip)
    to = tmp_path / "data"
    (to / "chest_xray").mkdir(parents=True)
    (to / "chest_xray" / "mine.txt").write_text("mine")
    with pytest.raises(PneumoError, match="already exists; move it away"):
        download(url=url, to=to, **quiet())
    assert sorted(p.name for p in to.iterdir()) == sorted([ARCHIVE, f"{ARCHIVE}.sha256.json", "chest_xray"])
    assert [p.name for p in (to / "chest_xray").iterdir()] == ["mine.txt"]
    shutil.rmtree(to / "chest_xray")
    assert download(url=url, to=to, **quiet()).sha256 == sha(dataset_zip)
    assert mirror.ranges == [None]  # the kept archive was verified, not fetched again
