"""pneumo.data.download: streaming, resuming, verifying and safely unpacking the dataset archive.

The archives are built from real images of ../shared/data, laid out like ChestXRay2017.zip, and
served by an HTTP server on 127.0.0.1 that this file starts (with Range support and a switch that
hangs up mid-file), or read through file:// URLs. Nothing here reaches the internet or Kaggle.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import shutil
import socket
import stat
import sys
import tarfile
import threading
import time
import types
import uuid
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Callable, Iterator

import pytest

import pneumo.data.download as dl
from pneumo.data.download import KAGGLE_HANDLE, MAX_DOWNLOAD_BYTES, URL_ENV, download
from pneumo.data.layout import discover
from pneumo.errors import PneumoError
from tests.conftest import pick

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


@pytest.fixture(autouse=True)
def _offline(monkeypatch: pytest.MonkeyPatch) -> None:
    """No proxy, no mirror from the environment, and a default address that is a closed loopback port."""
    for var in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "all_proxy", "ALL_PROXY", URL_ENV):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(dl, "MENDELEY_URL", f"http://127.0.0.1:{_closed_port()}/file_downloaded")


@pytest.fixture
def mirror() -> Iterator[Mirror]:
    server = Mirror()
    yield server
    server.close()


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _zip(entries: dict[str, bytes]) -> bytes:
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
    return _zip(images)


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _tree(folder: Path) -> dict[str, int]:
    """Every path under a folder with its size (-1 for folders), to compare before and after."""
    return {str(p.relative_to(folder)): (p.stat().st_size if p.is_file() else -1) for p in folder.rglob("*")}


def _quiet(**kwargs: object) -> dict[str, object]:
    return {"progress": False, "log": lambda _: None, **kwargs}


def _check_dataset(root: Path, images: dict[str, bytes]) -> None:
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


def test_clean_download_then_quick_no_op(mirror: Mirror, dataset_zip: bytes, images: dict[str, bytes], tmp_path: Path) -> None:
    url = mirror.serve(ARCHIVE, dataset_zip)
    to = tmp_path / "data"
    logs: list[str] = []
    result = download(url=url, to=to, progress=False, log=logs.append)

    assert result.path == to / "chest_xray" and not result.reused
    _check_dataset(result.path, images)
    assert result.archive == to / ARCHIVE and result.archive.read_bytes() == dataset_zip
    assert result.sha256 == _sha(dataset_zip) and result.bytes == len(dataset_zip)
    record = json.loads((to / f"{ARCHIVE}.sha256.json").read_text())
    assert record["sha256"] == _sha(dataset_zip) and record["extracted"] == "chest_xray"
    assert any("recorded SHA-256" in line for line in logs)
    summary = result.summary
    assert summary["splits"]["train"]["classes"] == {"NORMAL": 3, "PNEUMONIA": 3}
    assert summary["splits"]["test"]["classes"] == {"NORMAL": 2, "PNEUMONIA": 2}
    assert summary["unreadable"] == []  # every image was decoded
    assert sorted(p.name for p in to.iterdir()) == sorted([ARCHIVE, f"{ARCHIVE}.sha256.json", "chest_xray"])  # no .part, no temp folder
    assert result.next_command == f"pneumo train --config configs/cpu.yaml --set data={to / 'chest_xray'} --out runs/cpu"
    assert mirror.ranges == [None]

    logs.clear()
    start = time.monotonic()
    again = download(url=url, to=to, progress=False, log=logs.append)
    assert again.reused and again.path == result.path and again.sha256 == result.sha256
    assert mirror.ranges == [None]  # nothing fetched
    assert any("nothing to do" in line for line in logs)
    assert "unreadable" not in again.summary  # counted, not decoded again
    assert time.monotonic() - start < 5


def test_dropped_connection_resumes_with_range(mirror: Mirror, dataset_zip: bytes, images: dict[str, bytes], tmp_path: Path) -> None:
    url = mirror.serve(ARCHIVE, dataset_zip)
    to = tmp_path / "data"
    cut = len(dataset_zip) // 3
    mirror.drops, mirror.drop_after = 1, cut
    with pytest.raises(PneumoError, match="run the same command again to resume"):
        download(url=url, to=to, **_quiet(retries=0))
    part = to / f"{ARCHIVE}.part"
    assert part.read_bytes() == dataset_zip[:cut]
    assert not (to / ARCHIVE).exists() and not (to / "chest_xray").exists()

    result = download(url=url, to=to, **_quiet())
    assert mirror.ranges == [None, f"bytes={cut}-"]
    assert result.sha256 == _sha(dataset_zip) == _sha((to / ARCHIVE).read_bytes())
    assert not part.exists()
    _check_dataset(result.path, images)


def test_dropped_connection_retried_within_one_call(mirror: Mirror, dataset_zip: bytes, tmp_path: Path) -> None:
    url = mirror.serve(ARCHIVE, dataset_zip)
    mirror.drops, mirror.drop_after = 1, 1000
    logs: list[str] = []
    result = download(url=url, to=tmp_path / "data", progress=False, log=logs.append, retries=1)
    assert mirror.ranges == [None, "bytes=1000-"]
    assert result.sha256 == _sha(dataset_zip)
    assert any("trying again" in line for line in logs) and any("resuming" in line for line in logs)


def test_ctrl_c_keeps_the_part_for_the_next_run(
    mirror: Mirror, dataset_zip: bytes, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = mirror.serve(ARCHIVE, dataset_zip)
    to = tmp_path / "data"
    real_chunks = dl._chunks

    def interrupted(stream: io.BufferedIOBase) -> Iterator[bytes]:
        yield next(real_chunks(stream))
        raise KeyboardInterrupt

    with monkeypatch.context() as m:
        m.setattr(dl, "_CHUNK", 4096)
        m.setattr(dl, "_chunks", interrupted)
        with pytest.raises(KeyboardInterrupt):
            download(url=url, to=to, **_quiet())
    assert (to / f"{ARCHIVE}.part").read_bytes() == dataset_zip[:4096]
    assert download(url=url, to=to, **_quiet()).sha256 == _sha(dataset_zip)
    assert mirror.ranges == [None, "bytes=4096-"]


def test_server_that_ignores_range_restarts_cleanly(mirror: Mirror, dataset_zip: bytes, tmp_path: Path) -> None:
    url = mirror.serve(ARCHIVE, dataset_zip)
    to = tmp_path / "data"
    to.mkdir()
    (to / f"{ARCHIVE}.part").write_bytes(b"stale bytes from another file" * 50)
    mirror.ignore_range = True
    logs: list[str] = []
    result = download(url=url, to=to, progress=False, log=logs.append)
    assert mirror.ranges == [f"bytes={len(b'stale bytes from another file') * 50}-"]  # asked to resume, got 200
    assert any("starting it over" in line for line in logs)
    assert result.sha256 == _sha(dataset_zip) and (to / ARCHIVE).read_bytes() == dataset_zip


def test_complete_part_answered_416(mirror: Mirror, dataset_zip: bytes, tmp_path: Path) -> None:
    url = mirror.serve(ARCHIVE, dataset_zip)
    to = tmp_path / "data"
    to.mkdir()
    (to / f"{ARCHIVE}.part").write_bytes(dataset_zip)  # e.g. stopped between the last byte and the rename
    result = download(url=url, to=to, **_quiet())
    assert mirror.ranges == [f"bytes={len(dataset_zip)}-"]
    assert result.sha256 == _sha(dataset_zip) and not (to / f"{ARCHIVE}.part").exists()


def test_given_checksum_mismatch_moves_the_file_aside(mirror: Mirror, dataset_zip: bytes, tmp_path: Path) -> None:
    url = mirror.serve(ARCHIVE, dataset_zip)
    to = tmp_path / "data"
    wrong = "ab" * 32
    with pytest.raises(PneumoError) as err:
        download(url=url, to=to, sha256=wrong.upper(), **_quiet())
    message = str(err.value)
    assert wrong in message and _sha(dataset_zip) in message and "nothing was unpacked" in message
    assert f"moved it to {to / (ARCHIVE + '.bad')}" in message
    assert sorted(p.name for p in to.iterdir()) == [f"{ARCHIVE}.bad"]  # kept aside, not extracted, not recorded
    assert (to / f"{ARCHIVE}.bad").read_bytes() == dataset_zip

    result = download(url=url, to=to, sha256=_sha(dataset_zip), **_quiet())  # the right hash: downloads anew
    assert result.sha256 == _sha(dataset_zip)


def test_recorded_checksum_catches_a_changed_file(mirror: Mirror, dataset_zip: bytes, images: dict[str, bytes], tmp_path: Path) -> None:
    url = mirror.serve(ARCHIVE, dataset_zip)
    to = tmp_path / "data"
    first = download(url=url, to=to, **_quiet())
    shutil.rmtree(first.path)
    (to / ARCHIVE).unlink()
    changed = _zip({**images, "chest_xray/train/NORMAL/IM-9999-0001.jpeg": b"not the same file"})
    mirror.files[ARCHIVE] = changed
    with pytest.raises(PneumoError) as err:
        download(url=url, to=to, **_quiet())
    message = str(err.value)
    assert _sha(changed) in message and _sha(dataset_zip) in message
    assert f"delete {to / (ARCHIVE + '.sha256.json')}" in message
    assert not (to / "chest_xray").exists() and not (to / ARCHIVE).exists()
    assert json.loads((to / f"{ARCHIVE}.sha256.json").read_text())["sha256"] == _sha(dataset_zip)  # the record stays


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
    "dot-dot": (ARCHIVE, lambda im: _zip({**im, "../evil.txt": b"pwned"}), "outside the target folder"),
    "dot-dot-nested": (ARCHIVE, lambda im: _zip({**im, "chest_xray/../../../evil.txt": b"pwned"}), "outside the target folder"),
    "absolute": (ARCHIVE, lambda im: _zip({**im, ABSOLUTE: b"pwned"}), "outside the target folder"),
    "drive-letter": (ARCHIVE, lambda im: _zip({**im, "C:\\evil.txt": b"pwned"}), "outside the target folder"),
    "backslashes": (ARCHIVE, lambda im: _zip({**im, "chest_xray\\..\\..\\evil.txt": b"pwned"}), "outside the target folder"),
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
    before = _tree(tmp_path)
    with pytest.raises(PneumoError, match=reason) as err:
        download(url=url, to=to, **_quiet())
    assert "nothing was unpacked" in str(err.value) and "Deleted it" in str(err.value)
    assert _tree(tmp_path) == before  # nothing outside `to`, and `to` itself gone again
    assert not to.exists()
    assert not Path(ABSOLUTE).exists()


def test_refusal_keeps_what_the_target_already_held(mirror: Mirror, malicious: dict[str, tuple[str, bytes, str]], tmp_path: Path) -> None:
    name, data, _ = malicious["dot-dot"]
    to = tmp_path / "data"
    to.mkdir()
    (to / "notes.txt").write_text("mine")
    with pytest.raises(PneumoError, match="outside the target folder"):
        download(url=mirror.serve(name, data), to=to, **_quiet())
    assert _tree(tmp_path) == {"data": -1, "data/notes.txt": 4}


def test_size_limit(mirror: Mirror, dataset_zip: bytes, tmp_path: Path) -> None:
    to = tmp_path / "data"
    with pytest.raises(PneumoError, match=r"more than 10.0 kB .*raise the limit"):
        download(url=mirror.serve(ARCHIVE, dataset_zip), to=to, max_bytes=10_000, **_quiet())
    assert not to.exists()


def test_target_folder_taken_keeps_the_archive(mirror: Mirror, dataset_zip: bytes, tmp_path: Path) -> None:
    url = mirror.serve(ARCHIVE, dataset_zip)
    to = tmp_path / "data"
    (to / "chest_xray").mkdir(parents=True)
    (to / "chest_xray" / "mine.txt").write_text("mine")
    with pytest.raises(PneumoError, match="already exists; move it away"):
        download(url=url, to=to, **_quiet())
    assert sorted(p.name for p in to.iterdir()) == sorted([ARCHIVE, f"{ARCHIVE}.sha256.json", "chest_xray"])
    assert [p.name for p in (to / "chest_xray").iterdir()] == ["mine.txt"]
    shutil.rmtree(to / "chest_xray")
    assert download(url=url, to=to, **_quiet()).sha256 == _sha(dataset_zip)
    assert mirror.ranges == [None]  # the kept archive was verified, not fetched again


def test_env_mirror_and_argument_precedence(mirror: Mirror, dataset_zip: bytes, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(URL_ENV, mirror.serve(f"mirror/{ARCHIVE}", dataset_zip))
    assert download(to=tmp_path / "a", **_quiet()).sha256 == _sha(dataset_zip)
    assert mirror.ranges == [None]

    monkeypatch.setenv(URL_ENV, (tmp_path / "nowhere.zip").as_uri())
    result = download(url=mirror.serve("other/ChestXRay2017.zip", dataset_zip), to=tmp_path / "b", **_quiet())
    assert result.sha256 == _sha(dataset_zip) and len(mirror.ranges) == 2


def test_default_address_names_the_archive(mirror: Mirror, dataset_zip: bytes, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Mendeley's address ends in file_downloaded; the archive still gets its own name."""
    monkeypatch.setattr(dl, "MENDELEY_URL", mirror.serve("public-files/datasets/x/files/y/file_downloaded", dataset_zip))
    result = download(to=tmp_path / "data", **_quiet())
    assert result.archive == tmp_path / "data" / ARCHIVE


def test_file_url_and_resume(dataset_zip: bytes, images: dict[str, bytes], tmp_path: Path) -> None:
    source = tmp_path / "mirror dir" / ARCHIVE
    source.parent.mkdir()
    source.write_bytes(dataset_zip)
    to = tmp_path / "data"
    to.mkdir()
    (to / f"{ARCHIVE}.part").write_bytes(dataset_zip[:5000])
    logs: list[str] = []
    result = download(url=source.as_uri(), to=to, progress=False, log=logs.append)
    assert any("resuming" in line for line in logs)
    assert result.sha256 == _sha(dataset_zip)
    _check_dataset(result.path, images)

    with pytest.raises(PneumoError, match="cannot read"):
        download(url=(tmp_path / "missing.zip").as_uri(), to=tmp_path / "other", **_quiet())


def test_http_errors_and_bad_arguments(mirror: Mirror, tmp_path: Path) -> None:
    to = tmp_path / "data"
    with pytest.raises(PneumoError, match="HTTP 404"):
        download(url=mirror.serve("x", b"") + "/missing.zip", to=to, **_quiet())
    with pytest.raises(PneumoError, match="cannot download .*check the network connection"):
        download(url=f"http://127.0.0.1:{_closed_port()}/{ARCHIVE}", to=to, **_quiet(retries=0))
    mirror.stall = 2.0
    with pytest.raises(PneumoError, match="timed out"):
        download(url=mirror.serve(ARCHIVE, b"late"), to=to, **_quiet(retries=0, timeout=0.3))
    assert not to.exists()  # failed downloads leave no empty folder behind
    with pytest.raises(PneumoError, match="http://, https:// or file://"):
        download(url="ftp://127.0.0.1/x.zip", to=to, **_quiet())
    with pytest.raises(PneumoError, match="e.g. file:///"):
        download(url="ChestXRay2017.zip", to=to, **_quiet())
    with pytest.raises(PneumoError, match="not a SHA-256"):
        download(url=mirror.serve(ARCHIVE, b""), to=to, sha256="1234", **_quiet())
    with pytest.raises(PneumoError, match="unknown source 'zenodo'"):
        download(source="zenodo", to=to, **_quiet())
    with pytest.raises(PneumoError, match="leave out the URL"):
        download(source="kaggle", url=mirror.serve(ARCHIVE, b""), to=to, **_quiet())


class EndlessServer:
    """An HTTP server on 127.0.0.1 whose one file never ends: a chunked HTTP/1.1 body, or an HTTP/1.0
    body without a length. It stops by itself after `give_up` bytes, so that a regression fails the
    test instead of filling the disk."""

    def __init__(self, chunked: bool, give_up: int = 64 * 1024**2) -> None:
        self.sent = 0
        endless = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1" if chunked else "HTTP/1.0"

            def do_GET(self) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "application/zip")
                if chunked:
                    self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                block = b"PK\x03\x04" + bytes(64 * 1024 - 4)
                try:
                    while endless.sent < give_up:
                        self.wfile.write(b"%x\r\n%s\r\n" % (len(block), block) if chunked else block)
                        endless.sent += len(block)
                except (ConnectionError, OSError):  # the client hung up: what the test wants
                    pass
                self.close_connection = True

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/{ARCHIVE}"
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.mark.parametrize("chunked", [True, False], ids=["chunked", "no-length"])
def test_endless_body_is_stopped_at_the_limit_and_the_part_deleted(chunked: bool, tmp_path: Path) -> None:
    server = EndlessServer(chunked)
    to = tmp_path / "data"
    try:
        with pytest.raises(PneumoError) as err:
            download(url=server.url, to=to, **_quiet(max_download=2_000_000, retries=0))
    finally:
        server.close()
    message = str(err.value)
    assert message == (
        f"the download from {server.url} did not end within the download limit of 2.0 MB (the chest X-ray archive is"
        f" about 1.2 GB); stopped and deleted {to / (ARCHIVE + '.part')}. If the file is genuine, raise the limit"
        f" (--max-download-gb, or max_download in Python), else fix the URL (or ${URL_ENV})"
    )
    assert not to.exists()  # no .part, and the folder made for it removed again
    assert server.sent < 16 * 1024**2  # stopped near the limit, long before the server's own end


def test_announced_size_over_the_limit_is_refused_before_writing(mirror: Mirror, dataset_zip: bytes, tmp_path: Path) -> None:
    url = mirror.serve(ARCHIVE, dataset_zip)
    to = tmp_path / "data"
    with pytest.raises(
        PneumoError,
        match=rf"^{re.escape(url)} announces .*, over the download limit of 1.0 kB .*; nothing was kept\. If the file is genuine",
    ):
        download(url=url, to=to, **_quiet(max_download=1000))
    assert not to.exists() and mirror.ranges == [None]
    source = tmp_path / ARCHIVE
    source.write_bytes(dataset_zip)  # a file:// source's size is known too
    with pytest.raises(PneumoError, match="announces .* over the download limit"):
        download(url=source.as_uri(), to=to, **_quiet(max_download=1000))
    assert not to.exists()


def test_stale_part_over_the_limit_is_not_kept(mirror: Mirror, dataset_zip: bytes, tmp_path: Path) -> None:
    url = mirror.serve(ARCHIVE, dataset_zip)
    to = tmp_path / "data"
    to.mkdir()
    (to / f"{ARCHIVE}.part").write_bytes(bytes(5000))
    with pytest.raises(PneumoError, match="over the download limit"):
        download(url=url, to=to, **_quiet(max_download=4000))
    assert not (to / f"{ARCHIVE}.part").exists()


def test_a_file_exactly_at_the_limit_downloads(mirror: Mirror, dataset_zip: bytes, tmp_path: Path) -> None:
    result = download(
        url=mirror.serve(ARCHIVE, dataset_zip), to=tmp_path / "data", **_quiet(max_download=len(dataset_zip), check_images=False)
    )
    assert result.sha256 == _sha(dataset_zip)


def test_default_download_limit_and_bad_limits(tmp_path: Path) -> None:
    assert 2.4e9 <= MAX_DOWNLOAD_BYTES <= 5e9  # the archive is about 1.2 GB: room to spare, not a disk's worth
    with pytest.raises(PneumoError, match="max_download must be a positive number of bytes"):
        download(to=tmp_path / "data", **_quiet(max_download=0))


def test_no_space_left(mirror: Mirror, dataset_zip: bytes, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(shutil, "disk_usage", lambda _: types.SimpleNamespace(total=100, used=90, free=10))
    with pytest.raises(PneumoError, match="needs .* but .* has 10 bytes free"):
        download(url=mirror.serve(ARCHIVE, dataset_zip), to=tmp_path / "data", **_quiet())
    assert not (tmp_path / "data").exists()  # checked before writing anything


def _fake_kagglehub(monkeypatch: pytest.MonkeyPatch, credentials: Callable[[], object], fetch: Callable[..., str]) -> list[tuple[str, str]]:
    """A stand-in for kagglehub with its credential lookup and dataset_download(handle, output_dir=)."""
    calls: list[tuple[str, str]] = []
    hub = types.ModuleType("kagglehub")
    config = types.ModuleType("kagglehub.config")
    config.get_kaggle_credentials = credentials  # type: ignore[attr-defined]

    def dataset_download(handle: str, path: str | None = None, *, force_download: bool = False, output_dir: str | None = None) -> str:
        calls.append((handle, str(output_dir)))
        return fetch(handle, output_dir)

    hub.config = config  # type: ignore[attr-defined]
    hub.dataset_download = dataset_download  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "kagglehub", hub)
    monkeypatch.setitem(sys.modules, "kagglehub.config", config)
    return calls


def test_kaggle_without_the_package(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setitem(sys.modules, "kagglehub", None)  # makes `import kagglehub` fail
    with pytest.raises(PneumoError, match="pip install kagglehub"):
        download(source="kaggle", to=tmp_path, **_quiet())


def test_kaggle_without_credentials(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    calls = _fake_kagglehub(monkeypatch, lambda: None, lambda *_: pytest.fail("no download without a token"))
    with pytest.raises(PneumoError) as err:
        download(source="kaggle", to=tmp_path, **_quiet())
    message = str(err.value)
    for needed in ("kaggle.com → Settings → API", "~/.kaggle/kaggle.json", "KAGGLE_USERNAME", "KAGGLE_KEY"):
        assert needed in message
    assert calls == []

    def broken_file() -> object:
        raise ValueError("Kaggle credentials file at ~/.kaggle/kaggle.json is missing 'key' key")

    _fake_kagglehub(monkeypatch, broken_file, lambda *_: pytest.fail("no download without a token"))
    with pytest.raises(PneumoError, match="missing 'key' key: create an API token"):
        download(source="kaggle", to=tmp_path, **_quiet())


def test_kaggle_download_and_its_errors(monkeypatch: pytest.MonkeyPatch, images: dict[str, bytes], tmp_path: Path) -> None:
    def fetch(handle: str, output_dir: str) -> str:
        for name, data in images.items():  # Kaggle's copy nests chest_xray/chest_xray/ and adds val/
            for top in ("chest_xray/", "chest_xray/chest_xray/"):
                file = Path(output_dir) / (top + name.removeprefix("chest_xray/"))
                file.parent.mkdir(parents=True, exist_ok=True)
                file.write_bytes(data)
        return output_dir

    calls = _fake_kagglehub(monkeypatch, lambda: object(), fetch)
    result = download(source="kaggle", to=tmp_path / "data", **_quiet())
    assert calls == [(KAGGLE_HANDLE, str(tmp_path / "data" / "chest-xray-pneumonia"))]
    assert result.path == tmp_path / "data" / "chest-xray-pneumonia" / "chest_xray"
    assert result.archive is None and result.sha256 is None
    assert result.summary["splits"]["train"]["classes"] == {"NORMAL": 3, "PNEUMONIA": 3}

    def forbidden(*_: object) -> str:
        raise RuntimeError("403 Client Error: Forbidden")

    _fake_kagglehub(monkeypatch, lambda: object(), forbidden)
    with pytest.raises(PneumoError, match="403 Client Error.*API token"):
        download(source="kaggle", to=tmp_path / "data2", **_quiet())


def test_the_command_line_downloads_from_a_loopback_mirror_and_refuses_a_hostile_archive(
    mirror: Mirror, dataset_zip: bytes, malicious: dict[str, tuple[str, bytes, str]], tmp_path: Path
) -> None:
    import os
    import subprocess

    def pneumo(*args: object) -> subprocess.CompletedProcess:
        env = {**os.environ, "COLUMNS": "200", URL_ENV: ""}
        return subprocess.run([sys.executable, "-m", "pneumo", *map(str, args)], capture_output=True, text=True, env=env, timeout=300)

    good = pneumo("data", "download", "--url", mirror.serve("ChestXRay2017.zip", dataset_zip), "--to", tmp_path / "data", "--quiet")
    assert good.returncode == 0, good.stderr
    assert "next: pneumo train --config configs/cpu.yaml --set data=" in good.stdout and "sha256" in good.stdout
    assert len(discover(tmp_path / "data" / "chest_xray").split("train")) > 0
    name, data, _ = next(iter(malicious.values()))
    bad = pneumo("data", "download", "--url", mirror.serve(name, data), "--to", tmp_path / "hostile", "--quiet")
    assert bad.returncode == 2 and "\nerror:" in "\n" + bad.stderr and "Traceback" not in bad.stderr
    assert not (tmp_path / "hostile").exists()
