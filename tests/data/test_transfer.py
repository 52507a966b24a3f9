"""pneumo.data.transfer: streaming and resuming the archive, and the cap on what a server may send.

Through `download`, from an HTTP server on 127.0.0.1 (with Range support and a switch that hangs
up mid-file, tests/data/conftest.py) or file:// URLs; nothing here reaches the internet.
"""

from __future__ import annotations

import io
import re
import shutil
import threading
import types
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Iterator

import pytest

import pneumo.data.transfer as transfer
from pneumo.data.download import download
from pneumo.data.transfer import MAX_DOWNLOAD_BYTES, URL_ENV
from pneumo.errors import PneumoError
from tests.data.conftest import ARCHIVE, Mirror, check_dataset, quiet, sha

pytestmark = pytest.mark.usefixtures("offline")


def test_dropped_connection_resumes_with_range(mirror: Mirror, dataset_zip: bytes, images: dict[str, bytes], tmp_path: Path) -> None:
    url = mirror.serve(ARCHIVE, dataset_zip)
    to = tmp_path / "data"
    cut = len(dataset_zip) // 3
    mirror.drops, mirror.drop_after = 1, cut
    with pytest.raises(PneumoError, match="run the same command again to resume"):
        download(url=url, to=to, **quiet(retries=0))
    part = to / f"{ARCHIVE}.part"
    assert part.read_bytes() == dataset_zip[:cut]
    assert not (to / ARCHIVE).exists() and not (to / "chest_xray").exists()

    result = download(url=url, to=to, **quiet())
    assert mirror.ranges == [None, f"bytes={cut}-"]
    assert result.sha256 == sha(dataset_zip) == sha((to / ARCHIVE).read_bytes())
    assert not part.exists()
    check_dataset(result.path, images)


def test_dropped_connection_retried_within_one_call(
    mirror: Mirror, dataset_zip: bytes, tmp_path: Path, pneumo_log: pytest.LogCaptureFixture
) -> None:
    url = mirror.serve(ARCHIVE, dataset_zip)
    mirror.drops, mirror.drop_after = 1, 1000
    result = download(url=url, to=tmp_path / "data", progress=False, retries=1)
    assert mirror.ranges == [None, "bytes=1000-"]
    assert result.sha256 == sha(dataset_zip)
    assert any("trying again" in line for line in pneumo_log.messages) and any("resuming" in line for line in pneumo_log.messages)


def test_ctrl_c_keeps_the_part_for_the_next_run(
    mirror: Mirror, dataset_zip: bytes, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = mirror.serve(ARCHIVE, dataset_zip)
    to = tmp_path / "data"
    real_chunks = transfer._chunks

    def interrupted(stream: io.BufferedIOBase) -> Iterator[bytes]:
        yield next(real_chunks(stream))
        raise KeyboardInterrupt

    with monkeypatch.context() as m:
        m.setattr(transfer, "_CHUNK", 4096)
        m.setattr(transfer, "_chunks", interrupted)
        with pytest.raises(KeyboardInterrupt):
            download(url=url, to=to, **quiet())
    assert (to / f"{ARCHIVE}.part").read_bytes() == dataset_zip[:4096]
    assert download(url=url, to=to, **quiet()).sha256 == sha(dataset_zip)
    assert mirror.ranges == [None, "bytes=4096-"]


def test_server_that_ignores_range_restarts_cleanly(
    mirror: Mirror, dataset_zip: bytes, tmp_path: Path, pneumo_log: pytest.LogCaptureFixture
) -> None:
    url = mirror.serve(ARCHIVE, dataset_zip)
    to = tmp_path / "data"
    to.mkdir()
    (to / f"{ARCHIVE}.part").write_bytes(b"stale bytes from another file" * 50)
    mirror.ignore_range = True
    result = download(url=url, to=to, progress=False)
    assert mirror.ranges == [f"bytes={len(b'stale bytes from another file') * 50}-"]  # asked to resume, got 200
    assert any("starting it over" in line for line in pneumo_log.messages)
    assert result.sha256 == sha(dataset_zip) and (to / ARCHIVE).read_bytes() == dataset_zip


def test_complete_part_answered_416(mirror: Mirror, dataset_zip: bytes, tmp_path: Path) -> None:
    url = mirror.serve(ARCHIVE, dataset_zip)
    to = tmp_path / "data"
    to.mkdir()
    (to / f"{ARCHIVE}.part").write_bytes(dataset_zip)  # e.g. stopped between the last byte and the rename
    result = download(url=url, to=to, **quiet())
    assert mirror.ranges == [f"bytes={len(dataset_zip)}-"]
    assert result.sha256 == sha(dataset_zip) and not (to / f"{ARCHIVE}.part").exists()


def test_file_url_and_resume(dataset_zip: bytes, images: dict[str, bytes], tmp_path: Path, pneumo_log: pytest.LogCaptureFixture) -> None:
    source = tmp_path / "mirror dir" / ARCHIVE
    source.parent.mkdir()
    source.write_bytes(dataset_zip)
    to = tmp_path / "data"
    to.mkdir()
    (to / f"{ARCHIVE}.part").write_bytes(dataset_zip[:5000])
    result = download(url=source.as_uri(), to=to, progress=False)
    assert any("resuming" in line for line in pneumo_log.messages)
    assert result.sha256 == sha(dataset_zip)
    check_dataset(result.path, images)

    with pytest.raises(PneumoError, match="cannot read"):
        download(url=(tmp_path / "missing.zip").as_uri(), to=tmp_path / "other", **quiet())


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
            download(url=server.url, to=to, **quiet(max_download=2_000_000, retries=0))
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
        download(url=url, to=to, **quiet(max_download=1000))
    assert not to.exists() and mirror.ranges == [None]
    source = tmp_path / ARCHIVE
    source.write_bytes(dataset_zip)  # a file:// source's size is known too
    with pytest.raises(PneumoError, match="announces .* over the download limit"):
        download(url=source.as_uri(), to=to, **quiet(max_download=1000))
    assert not to.exists()


def test_stale_part_over_the_limit_is_not_kept(mirror: Mirror, dataset_zip: bytes, tmp_path: Path) -> None:
    url = mirror.serve(ARCHIVE, dataset_zip)
    to = tmp_path / "data"
    to.mkdir()
    (to / f"{ARCHIVE}.part").write_bytes(bytes(5000))
    with pytest.raises(PneumoError, match="over the download limit"):
        download(url=url, to=to, **quiet(max_download=4000))
    assert not (to / f"{ARCHIVE}.part").exists()


def test_a_file_exactly_at_the_limit_downloads(mirror: Mirror, dataset_zip: bytes, tmp_path: Path) -> None:
    result = download(
        url=mirror.serve(ARCHIVE, dataset_zip), to=tmp_path / "data", **quiet(max_download=len(dataset_zip), check_images=False)
    )
    assert result.sha256 == sha(dataset_zip)


def test_default_download_limit_and_bad_limits(tmp_path: Path) -> None:
    assert 2.4e9 <= MAX_DOWNLOAD_BYTES <= 5e9  # the archive is about 1.2 GB: room to spare, not a disk's worth
    with pytest.raises(PneumoError, match="max_download must be a positive number of bytes"):
        download(to=tmp_path / "data", **quiet(max_download=0))


def test_no_space_left(mirror: Mirror, dataset_zip: bytes, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(shutil, "disk_usage", lambda _: types.SimpleNamespace(total=100, used=90, free=10))
    with pytest.raises(PneumoError, match="needs .* but .* has 10 bytes free"):
        download(url=mirror.serve(ARCHIVE, dataset_zip), to=tmp_path / "data", **quiet())
    assert not (tmp_path / "data").exists()  # checked before writing anything
