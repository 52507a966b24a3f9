"""Checks, before any work, that an output can be written where the user asked: an hour of
training or evaluation is not spent to fail at the last write. `output_file` and `output_folder`
say what a failed write would (`atomic.WriteError`, with its reasons), without making anything;
`need_space` refuses what the disk has no room for."""

from __future__ import annotations

import errno
import os
import shutil
import stat
from pathlib import Path

from pneumo.errors import PneumoError, describe_size
from pneumo.utils.atomic import WriteError, refuse_non_regular, unwritable_folder
from pneumo.utils.reading import file_kind

__all__ = ["output_file", "output_folder", "need_space"]


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
    refuse_non_regular(path, what)
    problem = unwritable_folder(path.parent)
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
    problem = unwritable_folder(path)
    if problem:
        raise WriteError(problem[0], problem[1], str(path), f"cannot write into {what} {path}: {problem[1]}" + _folder_hint(problem[0]))
    return path


def need_space(folder: str | Path, nbytes: int, what: str) -> None:
    """Refuse, before writing, `nbytes` that the disk of `folder` has no room for (a download, an
    unpacking): a clear message now, not a full disk halfway through.

    Example:
        >>> need_space("data", 1_200_000_000, "the download")
    """
    free = shutil.disk_usage(folder).free
    if nbytes > free:
        raise PneumoError(
            f"{what} needs {describe_size(nbytes)} but {folder} has {describe_size(free)} free; free some space or choose another folder"
        )
