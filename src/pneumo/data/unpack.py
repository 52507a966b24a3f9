"""Unpacking the dataset archive safely: entries that would land outside the target, links,
special files, encrypted entries and sizes no real dataset has are refused (`RefusedArchive`).
The work happens in a temporary folder inside the target, and the result is moved into place only
when everything succeeded, so a refused or interrupted archive leaves nothing behind.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import stat
import tarfile
import tempfile
import zipfile
import zlib
from pathlib import Path

from rich.progress import Progress, TaskID

from pneumo.errors import PneumoError, describe_size
from pneumo.utils.output_checks import need_space
from pneumo.utils.progress import make_progress

__all__ = ["MAX_BYTES", "MAX_RATIO", "RefusedArchive", "remove_interrupted_unpacking", "unpack"]

logger = logging.getLogger(__name__)

MAX_BYTES = 10 * 1024**3  # unpacked size accepted by default; the real archive unpacks to about 1.2 GB
MAX_RATIO = 200  # unpacked : packed; X-ray JPEGs barely compress, so only a bomb comes near this
_RATIO_FLOOR = 1024**2  # entries smaller than this cannot fill a disk, whatever their ratio
_CHUNK = 1024**2
_MB = 1e6
_TEMP_PREFIX = ".pneumo-unpack-"


class RefusedArchive(Exception):
    """The archive must not be unpacked: unsafe, damaged, or not an archive."""


def remove_interrupted_unpacking(folder: Path) -> None:
    """Delete the temporary folders that a run killed while unpacking left in `folder`."""
    for stale in folder.glob(f"{_TEMP_PREFIX}*"):
        shutil.rmtree(stale, ignore_errors=True)


def unpack(archive: Path, folder: Path, max_bytes: int, progress: bool) -> Path:
    """Unpack into a temporary folder inside `folder` and move the dataset folder into place."""
    temp = Path(tempfile.mkdtemp(prefix=_TEMP_PREFIX, dir=folder))
    root = temp / "unpacked"
    root.mkdir()
    logger.info(f"unpacking {archive.name}")
    try:
        with make_progress(progress) as bar:
            task = bar.add_task(f"unpacking {archive.name}", total=None, info="MB")
            if zipfile.is_zipfile(archive):
                _unzip(archive, root, max_bytes, bar, task)
            elif tarfile.is_tarfile(archive):
                _untar(archive, root, max_bytes, bar, task)
            else:
                with archive.open("rb") as fh:
                    raise RefusedArchive(f"it is neither a zip nor a tar archive (it starts with {fh.read(16)!r})")
        top = list(root.iterdir())
        if not top:
            raise RefusedArchive("it holds no files")
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
        raise RefusedArchive(f"it is damaged ({exc})") from None
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
        raise RefusedArchive(f"entry {name!r} would be written outside the target folder")
    return parts


def _is_junk(parts: list[str]) -> bool:
    """macOS leftovers: resource forks in __MACOSX/ and ._ files, Finder's .DS_Store."""
    return not parts or "__MACOSX" in parts or parts[-1] == ".DS_Store" or parts[-1].startswith("._")


def _target(root: Path, parts: list[str]) -> Path:
    target = root.joinpath(*parts)
    if not Path(os.path.realpath(target)).is_relative_to(os.path.realpath(root)):
        raise RefusedArchive(f"entry {'/'.join(parts)!r} would be written outside the target folder")
    return target


def _too_big(max_bytes: int) -> RefusedArchive:
    return RefusedArchive(
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
                raise RefusedArchive(f"entry {info.filename!r} is a symbolic link")
            if kind not in (0, stat.S_IFREG, stat.S_IFDIR):
                raise RefusedArchive(f"entry {info.filename!r} is a special file (mode {kind:o})")
            if info.flag_bits & 0x1:
                raise RefusedArchive(f"entry {info.filename!r} is encrypted")
            if info.file_size > _RATIO_FLOOR and info.file_size > MAX_RATIO * info.compress_size:
                raise RefusedArchive(
                    f"entry {info.filename!r} unpacks {info.file_size / max(info.compress_size, 1):.0f} times larger "
                    f"than it is packed (more than {MAX_RATIO}:1, a zip bomb)"
                )
            if not _is_junk(parts):
                entries.append((info, parts))
        total = sum(info.file_size for info, _ in entries)
        if total > max_bytes:
            raise _too_big(max_bytes)
        need_space(root, total, "unpacking")
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
                raise RefusedArchive(f"entry {member.name!r} is a link")
            if not (member.isfile() or member.isdir()):
                raise RefusedArchive(f"entry {member.name!r} is a device or special file")
            total += member.size
            if total > max_bytes:
                raise _too_big(max_bytes)
            if total > _RATIO_FLOOR and total > MAX_RATIO * packed:
                raise RefusedArchive(f"it unpacks more than {MAX_RATIO} times larger than it is packed (a tar bomb)")
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
