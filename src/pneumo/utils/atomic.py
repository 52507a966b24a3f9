"""Atomic writes: a file is written to a temporary beside it and renamed into place, so a crash or
a full disk never leaves it half done; a write never replaces a device, a pipe or a folder.

Every failure to write is a `WriteError`: a `PneumoError` whose one line names the file and the
reason (the CLI prints it and exits 2), and an `OSError` with the errno, so code that cleans up
after an `OSError` still does. The pre-flight checks (`output_checks`) share this module's
`unwritable_folder` and `refuse_non_regular`, so a check up front and a failed write say the same.
"""

from __future__ import annotations

import errno
import os
import re
import stat
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Callable

from pneumo.errors import PneumoError
from pneumo.utils.reading import file_kind

__all__ = [
    "writing",
    "atomic_write",
    "write_temp",
    "shared_file_mode",
    "WriteError",
    "unwritable_folder",
    "refuse_non_regular",
]

Writer = Callable[[Path], object]

_OS_ERROR = re.compile(r"os error (\d+)")  # how Rust libraries (safetensors) report an OSError in their own exception

_HINTS = {
    errno.ENOSPC: "free some disk space, or write somewhere else",
    errno.EDQUOT: "free some of your disk quota, or write somewhere else",
    errno.EROFS: "write somewhere else",
    errno.EACCES: "choose a folder you can write to",
    errno.EPERM: "choose a folder you can write to",
    errno.EFBIG: "write to a file system that takes larger files",
}


class WriteError(PneumoError, OSError):
    """A file or folder could not be written: one line naming it, the reason and what to do.

    `errno` and `strerror` are the operating system's (`strerror` is the reason alone, e.g.
    "No space left on device"), so a caller can put the reason in a message of its own.
    """

    def __init__(self, code: int, reason: str, filename: str, message: str | None = None) -> None:
        OSError.__init__(self, code, reason, filename)
        self.message = message or f"cannot write {filename} ({reason})"

    def __str__(self) -> str:
        return self.message

    def __reduce__(self) -> tuple:  # survives pickling (torchrun, worker processes)
        return (type(self), (self.errno, self.strerror, self.filename, self.message))


def shared_file_mode() -> int:
    """The mode an ordinary new file gets under the current umask (temporary files are made 0600)."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


_NEARLY_FULL = 1 << 20  # bytes free under which a short write is taken for a full disk


def _os_error(exc: BaseException, folder: Path) -> tuple[int, str] | None:
    """(errno, reason) of an exception that is an OSError, or a library's wrapper of one (safetensors'
    SafetensorError says "... (os error 28)"), or a short write without an errno (numpy's
    "501760 requested and 53120 written") on a disk that is full; None for anything else, which
    is a bug to raise as it is."""
    if isinstance(exc, OSError) and exc.errno is not None:
        return exc.errno, exc.strerror or os.strerror(exc.errno)
    found = _OS_ERROR.search(str(exc)) if isinstance(exc, Exception) else None
    if found:
        code = int(found.group(1))
        return code, os.strerror(code)
    if isinstance(exc, OSError):
        try:
            st = os.statvfs(folder)
        except OSError:
            return None
        if st.f_bavail * st.f_frsize < _NEARLY_FULL:
            return errno.ENOSPC, os.strerror(errno.ENOSPC)
    return None


def unwritable_folder(folder: Path) -> tuple[int, str] | None:
    """(errno, why) files cannot be made in `folder` (created if missing), or None when they can.

    Looks at the nearest folder that exists: it must be a folder (ENOTDIR), and writable (checked
    with `os.access` and, when that says no, a probe file whose error gives the reason).
    """
    existing = folder
    while not os.path.lexists(existing) and existing != existing.parent:
        existing = existing.parent
    if existing.is_symlink() and not existing.exists():
        return errno.ENOTDIR, f"{existing} is a symlink that leads nowhere"
    if not existing.is_dir():
        return errno.ENOTDIR, f"{existing} is {file_kind(os.stat(existing).st_mode)}, not a folder"
    if os.access(existing, os.W_OK | os.X_OK):
        return None
    try:  # os.access may be wrong either way (ACLs, network file systems): a real file decides
        fd, name = tempfile.mkstemp(dir=existing, prefix=".pneumo-probe.", suffix=".tmp")
    except OSError as exc:
        if exc.errno == errno.EROFS:
            return exc.errno, f"{existing} is on a read-only file system"
        return exc.errno or errno.EACCES, f"{existing} is not writable ({exc.strerror or exc})"
    os.close(fd)
    os.unlink(name)
    return None


def _write_error(target: Path, exc: BaseException, what: str | None = None) -> WriteError | None:
    """The WriteError for a failed write of `target`, or None when `exc` is not about the disk."""
    found = _os_error(exc, target.parent)
    if found is None:
        return None
    code, reason = found
    label = f"{what} {target}" if what else str(target)
    hint = _HINTS.get(code, "")
    if code in (errno.ENOTDIR, errno.EEXIST, errno.ENOENT, errno.EACCES, errno.EROFS):
        blocked = unwritable_folder(target.parent)  # say which folder is in the way
        if blocked:
            return WriteError(code, blocked[1], str(target), f"cannot write {label}: {blocked[1]}" + (f"; {hint}" if hint else ""))
    return WriteError(code, reason, str(target), f"cannot write {label} ({reason})" + (f": {hint}" if hint else ""))


@contextmanager
def writing(target: str | Path, what: str | None = None) -> Iterator[None]:
    """Turn a failed write of `target` inside the block (a full disk, a quota, an I/O error) into a
    WriteError that names the file, instead of an OSError traceback."""
    try:
        yield
    except WriteError:
        raise
    except OSError as exc:
        error = _write_error(Path(target), exc, what)
        if error is None:
            raise
        raise error from exc


def refuse_non_regular(target: Path, what: str | None = None) -> None:
    """A file written by renaming a new one over it must be a regular file, or not exist yet: a
    rename over /dev/null (as root) would replace the device, and one over a folder fails late."""
    try:
        mode = os.stat(target).st_mode  # follows a symlink: a link to /dev/null is refused too
    except OSError:
        return  # missing, or a dangling link (replaced by the file): the folder is checked when written
    if stat.S_ISREG(mode):
        return
    label = f"{what} {target}" if what else str(target)
    kind = file_kind(mode)
    if stat.S_ISDIR(mode):
        raise WriteError(
            errno.EISDIR, f"{target} is a folder, not a file", str(target), f"{label} is a folder, not a file: give a file path"
        )
    raise WriteError(
        errno.EINVAL,
        f"{target} is {kind}, not a regular file",
        str(target),
        f"{label} is {kind}, not a regular file: pneumo writes a new file and renames it into place, which would replace it; give a file path",
    )


def _remove(path: Path) -> str:
    """Delete a temporary file; returns a note for the error message if it could not be."""
    try:
        path.unlink(missing_ok=True)
        return ""
    except OSError as exc:
        return f"; the temporary file {path} could not be removed ({exc.strerror or exc})"


def write_temp(target: str | Path, write: Writer | bytes | str) -> Path:
    """Write a temporary file in `target`'s folder, flushed to the disk and readable like any
    other file; return its path for the caller to rename over `target` (`os.replace`).

    `write` is the content, or a function given the temporary path to write to (e.g.
    safetensors' `save_file`). If writing fails the temporary file is removed, and a failure of
    the disk (full, read-only, no permission; also when a library wraps it) raises `WriteError`.
    A `target` that exists as anything but a regular file is refused before writing.
    """
    target = Path(target)
    refuse_non_regular(target)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    except OSError as exc:
        error = _write_error(target, exc)
        if error is None:
            raise
        raise error from exc
    os.close(fd)
    tmp = Path(name)
    try:
        if isinstance(write, bytes):
            tmp.write_bytes(write)
        elif isinstance(write, str):
            tmp.write_text(write, encoding="utf-8", errors="surrogateescape")  # a file name that is not UTF-8 keeps its bytes
        else:
            write(tmp)
        with tmp.open("rb+") as fh:  # renaming an unflushed file can expose an empty one after a power cut
            os.fsync(fh.fileno())
        os.chmod(tmp, shared_file_mode())
    except BaseException as exc:
        error = None if isinstance(exc, WriteError) else _write_error(target, exc)  # before the removal frees the space
        note = _remove(tmp)
        if error is None:
            raise
        error.message += note
        raise error from exc
    return tmp


def atomic_write(target: str | Path, write: Writer | bytes | str) -> Path:
    """Write `target` through a temporary file renamed into place: readers see the old file or the new one, never half.

    A full disk, a read-only folder or a missing permission raises `WriteError` (a PneumoError
    naming the file), leaves the old file as it was and no temporary file behind.

    Example:
        >>> atomic_write("report.json", json.dumps(report))
        >>> atomic_write("weights.safetensors", lambda tmp: save_file(state, str(tmp)))
    """
    target = Path(target)
    tmp = write_temp(target, write)
    try:
        os.replace(tmp, target)
    except OSError as exc:
        note = _remove(tmp)
        error = _write_error(target, exc) or WriteError(exc.errno or errno.EIO, exc.strerror or str(exc), str(target))
        error.message += note
        raise error from exc
    return target
