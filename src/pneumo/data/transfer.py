"""Fetching the dataset archive to a .part file: resumed with HTTP Range requests after a dropped
connection, retried, and capped, so that a dropped line costs only what is missing and a wrong or
hostile address cannot fill the disk. http://, https:// and file:// addresses are read alike.

A server that announces more than the cap is refused before a byte is written; one that sends an
endless body (chunked, or without a length) is stopped there and its .part deleted. The messages
name the archive and `$PNEUMO_DATA_URL`, the mirror a user can point `pneumo data download` at.
"""

from __future__ import annotations

import hashlib
import http.client
import logging
import re
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any, BinaryIO, Iterator

from rich.progress import Progress, TaskID

from pneumo.errors import PneumoError, describe_size
from pneumo.utils.output_checks import need_space
from pneumo.utils.progress import make_progress
from pneumo.version import __version__

__all__ = ["MENDELEY_ARCHIVE", "URL_ENV", "MAX_DOWNLOAD_BYTES", "fetch"]

logger = logging.getLogger(__name__)

MENDELEY_ARCHIVE = "ChestXRay2017.zip"
URL_ENV = "PNEUMO_DATA_URL"
MAX_DOWNLOAD_BYTES = 3 * 10**9  # archive size accepted by default; ChestXRay2017.zip is about 1.2 GB
_CHUNK = 1024**2
_MB = 1e6
_CONTENT_RANGE = re.compile(r"bytes\s+(?:(\d+)-\d+|\*)/(\d+|\*)")


class _Dropped(Exception):
    """The transfer ended early; what came is kept in the .part file for the next try."""


class _Overflow(Exception):
    """The server sent more than the size limit, or more than it announced."""


def _continue_hash(path: Path, digest: Any) -> None:
    """Feed a partial download's bytes to the digest its resumed transfer goes on with."""
    with path.open("rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)


def fetch(url: str, part: Path, timeout: float, retries: int, progress: bool, max_download: int = MAX_DOWNLOAD_BYTES) -> tuple[str, int]:
    """Complete the .part file, resuming after dropped connections; its SHA-256 and size."""
    attempt = 0
    with make_progress(progress) as bar:
        task = bar.add_task(f"downloading {part.name.removesuffix('.part')}", total=None, info="MB")
        while True:
            try:
                return _transfer(url, part, timeout, bar, task, max_download)
            except _Dropped as exc:
                have = part.stat().st_size if part.exists() else 0
                if attempt >= retries:
                    if have:
                        raise PneumoError(
                            f"the download from {url} stopped ({exc}); {part} keeps the {describe_size(have)} that came: "
                            "run the same command again to resume"
                        ) from None
                    part.unlink(missing_ok=True)
                    raise PneumoError(
                        f"cannot download {url} ({exc}): check the network connection, or fetch the archive elsewhere and "
                        f"point the URL (or ${URL_ENV}) at it, e.g. file:///path/to/{MENDELEY_ARCHIVE}"
                    ) from None
                attempt += 1
                logger.info(f"the download stopped at {describe_size(have)} ({exc}); trying again in {attempt} s")
                time.sleep(attempt)


def _over_limit(url: str, announced: int | None, limit: int, part: Path) -> str:
    """Why a download was refused for its size, and what to do."""
    if announced is not None:
        what = f"{url} announces {describe_size(announced)}, over the download limit of {describe_size(limit)}"
        done = "nothing was kept"
    else:
        what = f"the download from {url} did not end within the download limit of {describe_size(limit)}"
        done = f"stopped and deleted {part}"
    return (
        f"{what} (the chest X-ray archive is about 1.2 GB); {done}. If the file is genuine, raise the limit "
        f"(--max-download-gb, or max_download in Python), else fix the URL (or ${URL_ENV})"
    )


def _transfer(url: str, part: Path, timeout: float, bar: Progress, task: TaskID, max_download: int = MAX_DOWNLOAD_BYTES) -> tuple[str, int]:
    """One request: append to the .part from where it ends (or start it over); its SHA-256 and size.

    At most `max_download` bytes (or the size the server announced, when it did) are written: past
    that the .part is deleted and the download refused, so an endless body cannot fill the disk.
    """
    have = part.stat().st_size if part.exists() else 0
    digest = hashlib.sha256()
    if have:  # before the request, so that the connection does not sit idle while a large .part is read
        _continue_hash(part, digest)
    stream, start, total = _open(url, have, timeout)
    if total is not None and total > max_download:
        if stream is not None:
            stream.close()
        part.unlink(missing_ok=True)
        raise PneumoError(_over_limit(url, total, max_download, part))
    if start:
        logger.info(f"resuming {part.name} at {describe_size(start)}")
    elif have:
        logger.info(f"the server cannot resume {part.name}; starting it over")
        digest = hashlib.sha256()
    bar.update(task, total=total / _MB if total is not None else None, completed=start / _MB)
    if stream is None:  # the .part already holds the whole file
        return digest.hexdigest(), start
    limit = total if total is not None else max_download  # a file:// source can grow while it is read
    received, began = start, time.monotonic()
    try:
        with stream:
            if total is not None:
                need_space(part.parent, total - start, "the download")
            with part.open("ab" if start else "wb") as out:
                for chunk in _chunks(stream):
                    if received + len(chunk) > limit:
                        raise _Overflow
                    out.write(chunk)
                    digest.update(chunk)
                    received += len(chunk)
                    rate = (received - start) / _MB / max(time.monotonic() - began, 1e-3)
                    bar.update(task, completed=received / _MB, info=f"MB  {rate:.1f} MB/s")
    except _Overflow:
        part.unlink(missing_ok=True)
        if total is None:
            raise PneumoError(_over_limit(url, None, max_download, part)) from None
        raise PneumoError(
            f"{url} sent more than the {describe_size(total)} it announced; stopped and deleted {part}: try again later or use another URL"
        ) from None
    except OSError as exc:
        raise PneumoError(f"cannot write {part}: {exc.strerror or exc}; free some space or choose another folder") from None
    if total is not None and received != total:
        raise _Dropped(f"{received} of {total} bytes came")
    return digest.hexdigest(), received


def _chunks(stream: BinaryIO) -> Iterator[bytes]:
    """The stream's chunks; a reset, a timeout or a short body is a dropped transfer."""
    while True:
        try:
            chunk = stream.read(_CHUNK)
        except (OSError, http.client.HTTPException) as exc:
            raise _Dropped(str(exc) or type(exc).__name__) from None
        if not chunk:
            return
        yield chunk


def _open(url: str, offset: int, timeout: float) -> tuple[BinaryIO | None, int, int | None]:
    """A stream of the file from `offset` (or from 0 where resuming is not possible), where it
    starts, and the file's size when known; no stream when the first `offset` bytes are the whole file."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme == "file":
        path = Path(urllib.request.url2pathname(parts.path))
        try:
            size = path.stat().st_size
            stream = path.open("rb")
        except OSError as exc:
            raise PneumoError(f"cannot read {path} (from {url}): {exc.strerror or exc}") from None
        if offset == size:
            stream.close()
            return None, size, size
        start = offset if offset < size else 0
        stream.seek(start)
        return stream, start, size
    headers = {"User-Agent": f"pneumo/{__version__}"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    try:
        response = urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout)
    except urllib.error.HTTPError as exc:
        with exc:
            if exc.code == 416 and offset:
                _, total = _content_range(exc.headers.get("Content-Range"))
                return (None, offset, offset) if total == offset else _open(url, 0, timeout)
            raise PneumoError(f"{url} answered HTTP {exc.code} {exc.reason}; check the URL (or ${URL_ENV}), or try again later") from None
    except (OSError, http.client.HTTPException) as exc:  # URLError is an OSError: no route, DNS, refused, timeout
        raise _Dropped(str(getattr(exc, "reason", None) or exc)) from None
    length_header = response.headers.get("Content-Length", "")
    length = int(length_header) if length_header.isdigit() else None
    if response.status != 206:
        return response, 0, length
    first, total = _content_range(response.headers.get("Content-Range"))
    if first != offset:
        response.close()
        if offset:  # not the range asked for: start over
            return _open(url, 0, timeout)
        raise PneumoError(f"{url} answered a request for the whole file with a part of it (HTTP 206); try again later or use another URL")
    return response, offset, total if total is not None else (offset + length if length is not None else None)


def _content_range(header: str | None) -> tuple[int | None, int | None]:
    """First byte and full size from a Content-Range header (None where absent or '*')."""
    m = _CONTENT_RANGE.fullmatch((header or "").strip())
    if not m:
        return None, None
    return (int(m.group(1)) if m.group(1) else None), (int(m.group(2)) if m.group(2) != "*" else None)
