"""`pneumo data download`: fetch the chest X-ray dataset, check it, unpack it safely.

Sources:
- "mendeley" (default): the original release, Kermany et al., "Labeled Optical Coherence
  Tomography (OCT) and Chest X-Ray Images for Classification", Mendeley Data V2,
  doi:10.17632/rscbjbr9sj.2, CC BY 4.0: the archive ChestXRay2017.zip (about 1.2 GB). `url=` or
  $PNEUMO_DATA_URL replace its address with a mirror's (http://, https:// or file://), for sites
  without internet access.
- "kaggle": the Kaggle copy through the official `kagglehub` client, with the user's API token.

This module runs the steps in order and keeps what a run leaves: the archive is fetched to
`<to>/<name>.part` (`transfer`: resumed, retried, capped at `MAX_DOWNLOAD_BYTES` or
`max_download`) and renamed only once complete. Mendeley publishes no checksum, so the SHA-256 of
the first complete download is recorded beside the archive (`<name>.sha256.json`) and later runs
check against it (or against one given). Then it is unpacked (`unpack`: unsafe entries and sizes no
real dataset has are refused, and a refusal leaves nothing behind) and summarized. The Kaggle copy
comes through `kaggle`.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shlex
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from pneumo.data.kaggle import KAGGLE_HANDLE, download_from_kaggle
from pneumo.data.layout import discover
from pneumo.data.summary import summarize
from pneumo.data.transfer import MAX_DOWNLOAD_BYTES, MENDELEY_ARCHIVE, URL_ENV, fetch
from pneumo.data.unpack import MAX_BYTES, MAX_RATIO, RefusedArchive, remove_interrupted_unpacking, unpack
from pneumo.errors import PneumoError
from pneumo.utils.atomic import atomic_write
from pneumo.utils.logs import deprecated_log
from pneumo.utils.hashing import sha256_file

__all__ = [
    "SOURCES",
    "MENDELEY_URL",
    "MENDELEY_ARCHIVE",
    "KAGGLE_HANDLE",
    "URL_ENV",
    "MAX_BYTES",
    "MAX_DOWNLOAD_BYTES",
    "MAX_RATIO",
    "DownloadResult",
    "download",
]

logger = logging.getLogger(__name__)

SOURCES = ("mendeley", "kaggle")
MENDELEY_URL = "https://data.mendeley.com/public-files/datasets/rscbjbr9sj/files/f12eaf6d-6023-432f-acc9-80c9d7393433/file_downloaded"
_ARCHIVE_SUFFIXES = (".zip", ".tar.gz", ".tgz", ".tar")


@dataclass(frozen=True)
class DownloadResult:
    """Where the data is, what was downloaded, and what the data holds."""

    path: Path  # the dataset root, as `pneumo.data.layout.discover` takes it
    archive: Path | None  # the archive kept beside it (None for Kaggle, whose client unpacks and removes it)
    sha256: str | None  # the archive's verified SHA-256 (None for Kaggle)
    bytes: int | None  # the archive's size (None for Kaggle)
    summary: dict[str, Any]  # `pneumo.data.summary.summarize(path)`
    reused: bool  # True when an earlier run had downloaded, verified and unpacked everything already

    @property
    def next_command(self) -> str:
        """The command that trains on this data with the CPU recipe."""
        return f"pneumo train --config configs/cpu.yaml --set {shlex.quote(f'data={self.path}')} --out runs/cpu"


def download(
    source: str = "mendeley",
    to: str | Path = "data",
    url: str | None = None,
    sha256: str | None = None,
    progress: bool = True,
    max_bytes: int = MAX_BYTES,
    *,
    check_images: bool = True,
    timeout: float = 60.0,
    retries: int = 3,
    max_download: int = MAX_DOWNLOAD_BYTES,
    log: Callable[[str], None] | None = None,
) -> DownloadResult:
    """Download the dataset into `to`, verify and unpack it, and summarize it like `pneumo data summary`.

    `url` (else $PNEUMO_DATA_URL, else Mendeley's address) is where the archive comes from;
    `sha256` the hash it must have (else the one recorded at the first download). `max_bytes`
    bounds the unpacked size, `max_download` the archive's (the transfer stops there, deleting
    what came, when a server sends more). A dropped connection is resumed up to `retries` times, and an
    interrupted run (Ctrl-C) resumes on the next call. `timeout` is in seconds per socket
    operation. Running again once everything is in place only summarizes, without decoding.
    What it does is logged (logger `pneumo.data`, INFO); `log`, a function given each line instead, is
    deprecated and goes in the next release.

    Example:
        >>> result = download(to="data")  # doctest: +SKIP
        >>> result.path, result.next_command  # doctest: +SKIP
    """
    if source not in SOURCES:
        raise PneumoError(f"unknown source {source!r}; choose one of: {', '.join(SOURCES)}")
    folder = Path(to).expanduser()
    with deprecated_log(log, "download"):
        return _download(source, folder, url, sha256, progress, max_bytes, check_images, timeout, retries, max_download)


def _download(
    source: str,
    folder: Path,
    url: str | None,
    sha256: str | None,
    progress: bool,
    max_bytes: int,
    check_images: bool,
    timeout: float,
    retries: int,
    max_download: int,
) -> DownloadResult:
    """`download` into `folder`, its source known."""
    if source == "kaggle":
        if url is not None:
            raise PneumoError(
                "a URL names a copy of the Mendeley archive: leave out the URL to use Kaggle, or the kaggle source to use the URL"
            )
        return _result(download_from_kaggle(folder), None, None, None, progress, check_images, reused=False)
    if max_download <= 0:
        raise PneumoError(f"max_download must be a positive number of bytes, not {max_download}")
    return _from_archive(
        folder,
        url or os.environ.get(URL_ENV) or MENDELEY_URL,
        given=_given_hash(sha256),
        progress=progress,
        max_bytes=max_bytes,
        check_images=check_images,
        timeout=timeout,
        retries=retries,
        max_download=max_download,
    )


def _from_archive(
    folder: Path,
    url: str,
    *,
    given: str | None,
    progress: bool,
    max_bytes: int,
    check_images: bool,
    timeout: float,
    retries: int,
    max_download: int,
) -> DownloadResult:
    """The archive at `url` into `folder`: fetched or resumed, checked against `given` (else the
    recorded SHA-256), unpacked; the options are `download`'s."""
    name = _archive_name(url)
    archive, part, record_file = folder / name, folder / f"{name}.part", folder / f"{name}.sha256.json"
    record = _read_record(record_file)
    unpacked = record.get("extracted")
    if unpacked and (folder / unpacked).is_dir() and given in (None, record["sha256"]):
        logger.info(f"{folder / unpacked} is already downloaded, verified and unpacked; nothing to do")
        kept = archive if archive.exists() else None  # the archive may have been deleted to save space
        return _result(folder / unpacked, kept, record["sha256"], record.get("bytes"), progress, check_images=False, reused=True)
    created = [p for p in (folder, *folder.parents) if not p.exists()]  # deepest first
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise PneumoError(f"cannot create {folder}: {exc.strerror or exc}; choose another folder") from None
    try:
        remove_interrupted_unpacking(folder)  # left by a run that was killed while unpacking
        if archive.exists():
            logger.info(f"verifying {archive}")
            candidate, digest, size = archive, sha256_file(archive), archive.stat().st_size
        else:
            candidate = part
            digest, size = fetch(url, part, timeout, retries, progress, max_download)
        expected = given or record.get("sha256")
        if expected and digest != expected:
            bad = folder / f"{name}.bad"
            os.replace(candidate, bad)
            fix = (
                "check the SHA-256 you gave"
                if given
                else f"if the file changed at the source on purpose, delete {record_file} to accept the new one"
            )
            raise PneumoError(
                f"{name} from {url} has SHA-256 {digest}, but {expected} was expected "
                f"({'as given' if given else f'as recorded in {record_file} at the first download'}); "
                f"moved it to {bad}, nothing was unpacked. Run again to download it anew; {fix}"
            )
        if candidate == part:
            os.replace(part, archive)
        _write_record(record_file, {"archive": name, "url": url, "sha256": digest, "bytes": size})
        if not expected:
            logger.info(f"recorded SHA-256 {digest} in {record_file}; later runs check {name} against it")
        try:
            root = unpack(archive, folder, max_bytes, progress)
        except RefusedArchive as exc:
            archive.unlink()
            record_file.unlink()
            raise PneumoError(
                f"refused to unpack {archive}: {exc}. Deleted it and its recorded SHA-256; nothing was unpacked. "
                f"If {url} is not the chest X-ray archive, fix the URL (or ${URL_ENV})"
            ) from None
        _write_record(record_file, {"archive": name, "url": url, "sha256": digest, "bytes": size, "extracted": root.name})
    finally:
        for empty in created:  # a failure before anything was kept leaves no new folder behind
            try:
                empty.rmdir()
            except OSError:
                break
    return _result(root, archive, digest, size, progress, check_images, reused=False)


def _result(
    where: Path, archive: Path | None, digest: str | None, size: int | None, progress: bool, check_images: bool, reused: bool
) -> DownloadResult:
    try:
        root = discover(where).root
    except PneumoError as exc:
        raise PneumoError(f"{where} holds no dataset pneumo can read ({exc}); check that the download is the chest X-ray archive") from None
    return DownloadResult(root, archive, digest, size, summarize(root, check_images=check_images, progress=progress), reused)


def _given_hash(sha256: str | None) -> str | None:
    if sha256 is None:
        return None
    value = sha256.strip().lower()
    if not re.fullmatch(r"[0-9a-f]{64}", value):
        raise PneumoError(f"{sha256!r} is not a SHA-256: give its 64 hexadecimal digits")
    return value


def _archive_name(url: str) -> str:
    """The archive's file name: the URL's, when it names an archive, else Mendeley's."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https", "file"):
        hint = f", e.g. {Path(url).expanduser().absolute().as_uri()} for a file on this machine" if not parts.scheme else ""
        raise PneumoError(f"cannot download {url!r}: give an http://, https:// or file:// URL{hint}")
    if parts.scheme == "file" and parts.netloc not in ("", "localhost"):
        raise PneumoError(f"{url} names a file on another host ({parts.netloc}); use file:///path for a file on this machine")
    name = urllib.parse.unquote(parts.path).rsplit("/", 1)[-1]
    return name if name.lower().endswith(_ARCHIVE_SUFFIXES) else MENDELEY_ARCHIVE


def _read_record(path: Path) -> dict[str, Any]:
    if not path.exists():
        return {}
    try:
        record = json.loads(path.read_text())
        if re.fullmatch(r"[0-9a-f]{64}", record["sha256"]) and "/" not in record.get("extracted", ""):
            return record
    except (OSError, ValueError, KeyError, TypeError):
        pass
    raise PneumoError(f"{path} is not a SHA-256 record written by pneumo; delete it (the archive's hash is then recorded anew)")


def _write_record(path: Path, record: dict[str, Any]) -> None:
    atomic_write(path, json.dumps(record, indent=2) + "\n")
