"""`pneumo data download`: fetch the chest X-ray dataset, check it, unpack it safely.

Sources:
- "mendeley" (default): the original release, Kermany et al., "Labeled Optical Coherence
  Tomography (OCT) and Chest X-Ray Images for Classification", Mendeley Data V2,
  doi:10.17632/rscbjbr9sj.2, CC BY 4.0: the archive ChestXRay2017.zip (about 1.2 GB). `url=` or
  $PNEUMO_DATA_URL replace its address with a mirror's (http://, https:// or file://), for sites
  without internet access.
- "kaggle": the Kaggle copy through the official `kagglehub` client, with the user's API token.

The archive is streamed to `<to>/<name>.part`, resumed with HTTP Range requests after a dropped
connection, and renamed only once complete. The transfer is capped (`MAX_DOWNLOAD_BYTES`, or
`max_download`): a server that announces more is refused before a byte is written, and one that
sends an endless body (chunked, or without a length) is stopped there and its .part deleted, so
a wrong or hostile address cannot fill the disk. Mendeley publishes no checksum, so the SHA-256 of the
first complete download is recorded beside the archive (`<name>.sha256.json`) and later runs check
against it (or against one given). Unpacking refuses entries that would land outside the target,
links and special files, and sizes no real dataset has; it works in a temporary folder inside `to`
and moves the result into place only when everything succeeded, so a refused archive leaves
nothing behind.
"""

from __future__ import annotations

import hashlib
import http.client
import inspect
import json
import os
import re
import shlex
import shutil
import stat
import tarfile
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Callable, Iterator

from rich.progress import Progress, TaskID

from pneumo.data.layout import discover
from pneumo.data.summary import summarize
from pneumo.errors import PneumoError, describe_size
from pneumo.utils.atomic import atomic_write
from pneumo.utils.hashing import sha256_file
from pneumo.utils.progress import make_progress
from pneumo.version import __version__

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

SOURCES = ("mendeley", "kaggle")
MENDELEY_URL = "https://data.mendeley.com/public-files/datasets/rscbjbr9sj/files/f12eaf6d-6023-432f-acc9-80c9d7393433/file_downloaded"
MENDELEY_ARCHIVE = "ChestXRay2017.zip"
KAGGLE_HANDLE = "paultimothymooney/chest-xray-pneumonia"
URL_ENV = "PNEUMO_DATA_URL"
MAX_BYTES = 10 * 1024**3  # unpacked size accepted by default; the real archive unpacks to about 1.2 GB
MAX_DOWNLOAD_BYTES = 3 * 10**9  # archive size accepted by default; ChestXRay2017.zip is about 1.2 GB
MAX_RATIO = 200  # unpacked : packed; X-ray JPEGs barely compress, so only a bomb comes near this
_RATIO_FLOOR = 1024**2  # entries smaller than this cannot fill a disk, whatever their ratio
_CHUNK = 1024**2
_MB = 1e6
_ARCHIVE_SUFFIXES = (".zip", ".tar.gz", ".tgz", ".tar")
_TEMP_PREFIX = ".pneumo-unpack-"
_CONTENT_RANGE = re.compile(r"bytes\s+(?:(\d+)-\d+|\*)/(\d+|\*)")
_KAGGLE_TOKEN_HELP = (
    "create an API token at kaggle.com → Settings → API and put it in ~/.kaggle/kaggle.json, or set KAGGLE_USERNAME and KAGGLE_KEY"
)


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


class _Dropped(Exception):
    """The transfer ended early; what came is kept in the .part file for the next try."""


class _Refused(Exception):
    """The archive must not be unpacked: unsafe, damaged, or not an archive."""


class _Overflow(Exception):
    """The server sent more than the size limit, or more than it announced."""


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
    log: Callable[[str], None] = print,
) -> DownloadResult:
    """Download the dataset into `to`, verify and unpack it, and summarize it like `pneumo data summary`.

    `url` (else $PNEUMO_DATA_URL, else Mendeley's address) is where the archive comes from;
    `sha256` the hash it must have (else the one recorded at the first download). `max_bytes`
    bounds the unpacked size, `max_download` the archive's (the transfer stops there, deleting
    what came, when a server sends more). A dropped connection is resumed up to `retries` times, and an
    interrupted run (Ctrl-C) resumes on the next call. `timeout` is in seconds per socket
    operation. Running again once everything is in place only summarizes, without decoding.

    Example:
        >>> result = download(to="data")  # doctest: +SKIP
        >>> result.path, result.next_command  # doctest: +SKIP
    """
    if source not in SOURCES:
        raise PneumoError(f"unknown source {source!r}; choose one of: {', '.join(SOURCES)}")
    folder = Path(to).expanduser()
    if source == "kaggle":
        if url is not None:
            raise PneumoError(
                "a URL names a copy of the Mendeley archive: leave out the URL to use Kaggle, or the kaggle source to use the URL"
            )
        return _from_kaggle(folder, progress, check_images, log)
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
        log=log,
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
    log: Callable[[str], None],
    max_download: int,
) -> DownloadResult:
    """The archive at `url` into `folder`: fetched or resumed, checked against `given` (else the
    recorded SHA-256), unpacked; the options are `download`'s."""
    name = _archive_name(url)
    archive, part, record_file = folder / name, folder / f"{name}.part", folder / f"{name}.sha256.json"
    record = _read_record(record_file)
    unpacked = record.get("extracted")
    if unpacked and (folder / unpacked).is_dir() and given in (None, record["sha256"]):
        log(f"{folder / unpacked} is already downloaded, verified and unpacked; nothing to do")
        kept = archive if archive.exists() else None  # the archive may have been deleted to save space
        return _result(folder / unpacked, kept, record["sha256"], record.get("bytes"), progress, check_images=False, reused=True)
    created = [p for p in (folder, *folder.parents) if not p.exists()]  # deepest first
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise PneumoError(f"cannot create {folder}: {exc.strerror or exc}; choose another folder") from None
    try:
        for stale in folder.glob(f"{_TEMP_PREFIX}*"):  # left by a run that was killed while unpacking
            shutil.rmtree(stale, ignore_errors=True)
        if archive.exists():
            log(f"verifying {archive}")
            candidate, digest, size = archive, sha256_file(archive), archive.stat().st_size
        else:
            candidate = part
            digest, size = _fetch(url, part, timeout, retries, progress, log, max_download)
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
            log(f"recorded SHA-256 {digest} in {record_file}; later runs check {name} against it")
        try:
            root = _unpack(archive, folder, max_bytes, progress, log)
        except _Refused as exc:
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


def _continue_hash(path: Path, digest: Any) -> None:
    """Feed a partial download's bytes to the digest its resumed transfer goes on with."""
    with path.open("rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)


def _need_space(folder: Path, nbytes: int, what: str) -> None:
    free = shutil.disk_usage(folder).free
    if nbytes > free:
        raise PneumoError(
            f"{what} needs {describe_size(nbytes)} but {folder} has {describe_size(free)} free; free some space or choose another folder"
        )


def _fetch(
    url: str, part: Path, timeout: float, retries: int, progress: bool, log: Callable[[str], None], max_download: int = MAX_DOWNLOAD_BYTES
) -> tuple[str, int]:
    """Complete the .part file, resuming after dropped connections; its SHA-256 and size."""
    attempt = 0
    with make_progress(progress) as bar:
        task = bar.add_task(f"downloading {part.name.removesuffix('.part')}", total=None, info="MB")
        while True:
            try:
                return _transfer(url, part, timeout, bar, task, log, max_download)
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
                log(f"the download stopped at {describe_size(have)} ({exc}); trying again in {attempt} s")
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


def _transfer(
    url: str, part: Path, timeout: float, bar: Progress, task: TaskID, log: Callable[[str], None], max_download: int = MAX_DOWNLOAD_BYTES
) -> tuple[str, int]:
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
        log(f"resuming {part.name} at {describe_size(start)}")
    elif have:
        log(f"the server cannot resume {part.name}; starting it over")
        digest = hashlib.sha256()
    bar.update(task, total=total / _MB if total is not None else None, completed=start / _MB)
    if stream is None:  # the .part already holds the whole file
        return digest.hexdigest(), start
    limit = total if total is not None else max_download  # a file:// source can grow while it is read
    received, began = start, time.monotonic()
    try:
        with stream:
            if total is not None:
                _need_space(part.parent, total - start, "the download")
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


def _unpack(archive: Path, folder: Path, max_bytes: int, progress: bool, log: Callable[[str], None]) -> Path:
    """Unpack into a temporary folder inside `folder` and move the dataset folder into place."""
    temp = Path(tempfile.mkdtemp(prefix=_TEMP_PREFIX, dir=folder))
    root = temp / "unpacked"
    root.mkdir()
    log(f"unpacking {archive.name}")
    try:
        with make_progress(progress) as bar:
            task = bar.add_task(f"unpacking {archive.name}", total=None, info="MB")
            if zipfile.is_zipfile(archive):
                _unzip(archive, root, max_bytes, bar, task)
            elif tarfile.is_tarfile(archive):
                _untar(archive, root, max_bytes, bar, task)
            else:
                with archive.open("rb") as fh:
                    raise _Refused(f"it is neither a zip nor a tar archive (it starts with {fh.read(16)!r})")
        top = list(root.iterdir())
        if not top:
            raise _Refused("it holds no files")
        source = top[0] if len(top) == 1 and top[0].is_dir() else root
        name = source.name if source != root else re.sub(r"(\.tar\.gz|\.tgz|\.tar|\.zip)$", "", archive.name, flags=re.I)
        dest = folder / name
        if dest.exists() or dest.is_symlink():
            raise PneumoError(
                f"{dest} already exists; move it away (or delete it) and run again: {archive} is kept and verified, "
                "so nothing is downloaded again"
            )
        os.rename(source, dest)
        return dest
    except (zipfile.BadZipFile, tarfile.TarError, zlib.error, EOFError) as exc:
        raise _Refused(f"it is damaged ({exc})") from None
    except NotImplementedError as exc:  # e.g. Deflate64, which Python's zipfile cannot read
        raise PneumoError(
            f"cannot unpack {archive}: {exc}; unpack it with another tool and run `pneumo data summary` on the folder"
        ) from None
    except OSError as exc:
        raise PneumoError(
            f"cannot unpack {archive} into {folder}: {exc.strerror or exc}; free some space or choose another folder"
        ) from None
    finally:
        shutil.rmtree(temp, ignore_errors=True)


def _entry_parts(name: str) -> list[str]:
    """The path components an archive entry unpacks to; refused when it could land outside the target."""
    unified = name.replace("\\", "/")
    parts = [p for p in unified.split("/") if p not in ("", ".")]
    if unified.startswith("/") or re.match(r"[A-Za-z]:", unified) or ".." in parts or "\0" in name:
        raise _Refused(f"entry {name!r} would be written outside the target folder")
    return parts


def _is_junk(parts: list[str]) -> bool:
    """macOS leftovers: resource forks in __MACOSX/ and ._ files, Finder's .DS_Store."""
    return not parts or "__MACOSX" in parts or parts[-1] == ".DS_Store" or parts[-1].startswith("._")


def _target(root: Path, parts: list[str]) -> Path:
    target = root.joinpath(*parts)
    if not Path(os.path.realpath(target)).is_relative_to(os.path.realpath(root)):
        raise _Refused(f"entry {'/'.join(parts)!r} would be written outside the target folder")
    return target


def _too_big(max_bytes: int) -> _Refused:
    return _Refused(
        f"it unpacks to more than {describe_size(max_bytes)} (the chest X-ray archive unpacks to about 1.2 GB); "
        "if it is genuine, raise the limit (max_bytes)"
    )


def _unzip(archive: Path, root: Path, max_bytes: int, bar: Progress, task: TaskID) -> None:
    """Check every entry of a zip first (its directory lists them all), then unpack."""
    with zipfile.ZipFile(archive) as zf:
        entries = []
        for info in zf.infolist():
            parts = _entry_parts(info.filename)
            kind = stat.S_IFMT(info.external_attr >> 16)
            if kind == stat.S_IFLNK:
                raise _Refused(f"entry {info.filename!r} is a symbolic link")
            if kind not in (0, stat.S_IFREG, stat.S_IFDIR):
                raise _Refused(f"entry {info.filename!r} is a special file (mode {kind:o})")
            if info.flag_bits & 0x1:
                raise _Refused(f"entry {info.filename!r} is encrypted")
            if info.file_size > _RATIO_FLOOR and info.file_size > MAX_RATIO * info.compress_size:
                raise _Refused(
                    f"entry {info.filename!r} unpacks {info.file_size / max(info.compress_size, 1):.0f} times larger "
                    f"than it is packed (more than {MAX_RATIO}:1, a zip bomb)"
                )
            if not _is_junk(parts):
                entries.append((info, parts))
        total = sum(info.file_size for info, _ in entries)
        if total > max_bytes:
            raise _too_big(max_bytes)
        _need_space(root, total, "unpacking")
        bar.update(task, total=total / _MB)
        for info, parts in entries:
            target = _target(root, parts)
            if info.is_dir():
                target.mkdir(parents=True, exist_ok=True)
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            with zf.open(info) as src, target.open("wb") as dst:
                shutil.copyfileobj(src, dst, _CHUNK)
            bar.advance(task, info.file_size / _MB)


def _untar(archive: Path, root: Path, max_bytes: int, bar: Progress, task: TaskID) -> None:
    """Check each member of a tar as it is reached (a compressed tar has no directory), then unpack it."""
    packed, total = archive.stat().st_size, 0
    with tarfile.open(archive, "r:*") as tf:
        for member in tf:
            parts = _entry_parts(member.name)
            if member.issym() or member.islnk():
                raise _Refused(f"entry {member.name!r} is a link")
            if not (member.isfile() or member.isdir()):
                raise _Refused(f"entry {member.name!r} is a device or special file")
            total += member.size
            if total > max_bytes:
                raise _too_big(max_bytes)
            if total > _RATIO_FLOOR and total > MAX_RATIO * packed:
                raise _Refused(f"it unpacks more than {MAX_RATIO} times larger than it is packed (a tar bomb)")
            if _is_junk(parts):
                continue
            target = _target(root, parts)
            if member.isdir():
                target.mkdir(parents=True, exist_ok=True)
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            src = tf.extractfile(member)
            assert src is not None  # a regular file always has contents
            with src, target.open("wb") as dst:
                shutil.copyfileobj(src, dst, _CHUNK)
            bar.advance(task, member.size / _MB)


def _from_kaggle(folder: Path, progress: bool, check_images: bool, log: Callable[[str], None]) -> DownloadResult:
    """The Kaggle copy through kagglehub, which needs the user's API token."""
    try:
        import kagglehub
    except ImportError:
        raise PneumoError(
            "the kaggle source needs the kagglehub package: pip install kagglehub (the mendeley source needs nothing more)"
        ) from None
    try:
        from kagglehub.config import get_kaggle_credentials
    except ImportError:
        raise PneumoError("this kagglehub is too old for pneumo: pip install -U kagglehub") from None
    try:
        credentials = get_kaggle_credentials()
    except ValueError as exc:  # a kaggle.json without username or key
        raise PneumoError(f"{exc}: {_KAGGLE_TOKEN_HELP}") from None
    if credentials is None:
        raise PneumoError(f"the kaggle source needs a Kaggle API token: {_KAGGLE_TOKEN_HELP}")
    if "output_dir" not in inspect.signature(kagglehub.dataset_download).parameters:
        raise PneumoError("this kagglehub is too old to download into a chosen folder: pip install -U kagglehub")
    target = folder / KAGGLE_HANDLE.rsplit("/", 1)[1]
    log(f"downloading {KAGGLE_HANDLE} from Kaggle into {target}")
    try:
        path = Path(kagglehub.dataset_download(KAGGLE_HANDLE, output_dir=str(target)))
    except Exception as exc:  # the client's own errors (HTTP, network, token) become one line that says what to do
        raise PneumoError(
            f"the Kaggle download of {KAGGLE_HANDLE} failed ({exc}); check the network and the API token "
            f"({_KAGGLE_TOKEN_HELP}), or use the mendeley source"
        ) from None
    return _result(path, None, None, None, progress, check_images, reused=False)
