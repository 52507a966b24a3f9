"""Writing files safely: outputs checked before any work, writes that a crash or a full disk never
leave half done, temporary files that a kill left behind cleaned up, and folders of pneumo's
outputs emptied only when everything in them is pneumo's. Also hashing files without reading them whole.

Every failure to write is a `WriteError`: a `PneumoError` whose one line names the file and the
reason (the CLI prints it and exits 2), and an `OSError` with the errno, so code that cleans up
after an `OSError` still does.
"""

from __future__ import annotations

import errno
import fnmatch
import hashlib
import os
import re
import stat
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping, Optional

from pneumo.errors import PneumoError
from pneumo.utils.reading import file_kind

__all__ = [
    "writing",
    "atomic_write",
    "write_temp",
    "sha256_file",
    "shared_file_mode",
    "WriteError",
    "output_file",
    "output_folder",
    "is_temp_name",
    "remove_stale_temps",
    "Layout",
    "KnownContents",
    "known_contents",
]

Writer = Callable[[Path], object]

# a folder's layout: entry name or glob pattern -> None for a file, or the layout of a sub-folder
Layout = Mapping[str, Optional["Layout"]]

_TEMP = re.compile(r"\.(.+)\.[a-z0-9_]{8}\.tmp")  # write_temp's names: mkstemp(prefix=".{name}.", suffix=".tmp")
_SAFETENSORS_TEMP = re.compile(r"\.tmp[A-Za-z0-9]{6}")  # safetensors' save_file writes one of these beside its target
_OS_JUNK = frozenset({".DS_Store", "Thumbs.db", "desktop.ini"})  # what file browsers drop into any folder they show
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


def _unwritable_folder(folder: Path) -> tuple[int, str] | None:
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
        blocked = _unwritable_folder(target.parent)  # say which folder is in the way
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


def _refuse_non_regular(target: Path, what: str | None = None) -> None:
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


def _folder_hint(code: int) -> str:
    return "" if code == errno.ENOTDIR else "; choose a folder you can write to"


def output_file(path: str | Path, what: str = "output file") -> Path:
    """Check, before any work, that a file can be written at `path`: it is not a folder, device or
    pipe, and its folder exists or can be made, and is writable. Returns `path`; makes nothing.

    Args:
        path: the file to write.
        what: how the message names it, e.g. "--json".

    Example:
        >>> output_file("reports/test.json", "--json")  # before evaluating, not after
    """
    path = Path(path)
    _refuse_non_regular(path, what)
    problem = _unwritable_folder(path.parent)
    if problem:
        raise WriteError(problem[0], problem[1], str(path), f"cannot write {what} {path}: {problem[1]}" + _folder_hint(problem[0]))
    return path


def output_folder(path: str | Path, what: str = "output folder") -> Path:
    """Check, before any work, that files can be written in the folder `path`: it is a folder or
    can be made one (not a file, device or pipe), and it is writable. Returns `path`; makes nothing.

    Example:
        >>> output_folder("cams", "--cam")
    """
    path = Path(path)
    if os.path.lexists(path):
        if path.is_symlink() and not path.exists():
            raise WriteError(
                errno.ENOENT,
                f"{path} is a symlink that leads nowhere",
                str(path),
                f"{what} {path} is a symlink that leads nowhere: give a folder",
            )
        mode = os.stat(path).st_mode
        if not stat.S_ISDIR(mode):
            kind = file_kind(mode)
            raise WriteError(
                errno.ENOTDIR,
                f"{path} is {kind}, not a folder",
                str(path),
                f"{what} {path} is {kind}, not a folder: give a folder to write into",
            )
    problem = _unwritable_folder(path)
    if problem:
        raise WriteError(problem[0], problem[1], str(path), f"cannot write into {what} {path}: {problem[1]}" + _folder_hint(problem[0]))
    return path


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
    _refuse_non_regular(target)
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


def is_temp_name(name: str) -> bool:
    """True for the name of a temporary file pneumo's writes make (`write_temp`'s, or safetensors'
    beside a checkpoint); a process killed mid-write leaves one behind."""
    return bool(_TEMP.fullmatch(name) or _SAFETENSORS_TEMP.fullmatch(name))


def remove_stale_temps(
    folder: str | Path, recursive: bool = False, min_age_s: float = 0.0, targets: tuple[str, ...] = ("*",), safetensors: bool = True
) -> tuple[int, int]:
    """Delete the temporary files an interrupted write left in `folder` (and its sub-folders when
    `recursive`, never following symlinks); returns (files removed, bytes freed).

    Only regular files named as pneumo's writes name them are touched: `write_temp`'s for a
    target matching one of `targets` (glob patterns: ("images-*",) for `.images-....npy.x1y2z3w4.tmp`),
    and with `safetensors` also the `.tmpXXXXXX` files safetensors writes beside a checkpoint
    (leave that off in a folder other programs may use: it is the Rust tempfile crate's default
    name). `min_age_s` spares files modified more recently, for a folder that another process
    may be writing in at the same time (the shared image cache).
    """
    folder = Path(folder)
    if not folder.is_dir():
        return 0, 0
    removed, freed, now = 0, 0, time.time()
    for here, dirs, files in os.walk(folder, followlinks=False):
        if not recursive:
            dirs.clear()
        for name in files:
            ours = _TEMP.fullmatch(name)
            if not (
                (ours and any(fnmatch.fnmatchcase(ours.group(1), t) for t in targets))
                or (safetensors and _SAFETENSORS_TEMP.fullmatch(name))
            ):
                continue
            path = Path(here) / name
            try:
                st = os.lstat(path)
                if not stat.S_ISREG(st.st_mode) or now - st.st_mtime < min_age_s:
                    continue
                path.unlink()
            except OSError:
                continue  # gone already, or not ours to remove: nothing to report
            removed, freed = removed + 1, freed + st.st_size
    return removed, freed


def _plan_removal(folder: Path, layout: Layout, what: str, top: Path, files: list[tuple[Path, int]], dirs: list[Path]) -> None:
    """Collect the files and sub-folders of `folder` that `layout` names; refuse at the first entry it does not."""
    for entry in sorted(os.scandir(folder), key=lambda e: e.name):
        path = Path(entry.path)
        shown = path.relative_to(top)
        st = entry.stat(follow_symlinks=False)
        if entry.is_symlink():
            raise PneumoError(
                f"{top} holds {shown}, a symlink, which {what} never has; refusing to delete it (move it out, or delete the folder yourself)"
            )
        if stat.S_ISREG(st.st_mode) and (is_temp_name(entry.name) or entry.name in _OS_JUNK):
            files.append((path, st.st_size))
            continue
        sub: Layout | None | bool = next((v for k, v in layout.items() if fnmatch.fnmatchcase(entry.name, k)), False)
        if sub is None and stat.S_ISREG(st.st_mode):
            files.append((path, st.st_size))
        elif isinstance(sub, Mapping) and stat.S_ISDIR(st.st_mode):
            _plan_removal(path, sub, what, top, files, dirs)
            dirs.append(path)
        else:
            kind = "/" if stat.S_ISDIR(st.st_mode) else ""
            raise PneumoError(
                f"{top} holds {shown}{kind}, which {what} never has; refusing to delete it (move it out, or delete the folder yourself)"
            )


@dataclass
class KnownContents:
    """What is in a folder whose every entry a layout names (`known_contents`), ready to delete."""

    folder: Path
    files: list[tuple[Path, int]]  # (path, size) of every file, at any depth
    dirs: list[Path]  # sub-folders, deepest first

    @property
    def n_bytes(self) -> int:
        return sum(size for _, size in self.files)

    def remove(self) -> None:
        """Delete the files one by one and the sub-folders with `rmdir` (the folder itself is kept):
        an entry that appeared since stops the deletion rather than being deleted unseen."""
        try:
            for path, _ in self.files:
                path.unlink(missing_ok=True)
            for path in self.dirs:
                path.rmdir()
        except OSError as exc:
            where = exc.filename or self.folder
            raise WriteError(
                exc.errno or errno.EIO,
                exc.strerror or str(exc),
                str(where),
                f"could not delete {where} ({exc.strerror or exc}) while emptying {self.folder}; delete it yourself",
            ) from exc


def known_contents(folder: str | Path, layout: Layout, what: str) -> KnownContents:
    """Everything in `folder` when every entry is one that `layout` names; else a PneumoError that
    names the first entry that is not ("X holds src/, which a pneumo run folder never has; refusing
    to delete it"). Nothing is deleted here: call `.remove()` on the result.

    Temporary files of pneumo's writes and file browsers' junk (.DS_Store) are allowed anywhere.
    A symlink anywhere inside is refused, never followed, so nothing outside `folder` is touched.

    Args:
        layout: names or glob patterns -> None (a file) or the layout of a sub-folder.
        what: what such a folder is called in the refusal, e.g. "a pneumo run folder".

    Example:
        >>> old = known_contents("runs/old", {"config.yaml": None, "checkpoints": {"last": {"*.json": None}}}, "a run folder")
        >>> print(f"removing {len(old.files)} files"); old.remove()
    """
    folder = Path(folder)
    contents = KnownContents(folder, [], [])
    _plan_removal(folder, layout, what, folder, contents.files, contents.dirs)
    return contents


def sha256_file(path: str | Path) -> str:
    """SHA-256 of a file's bytes, read in chunks (a checkpoint or an archive need not fit in memory)."""
    with Path(path).open("rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()
