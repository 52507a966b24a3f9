"""Emptying a folder of pneumo's outputs (`--overwrite`) only when everything in it is pneumo's:
every entry must be one a layout names, nothing is followed through a symlink, and the plan is
made in full before the first file is deleted."""

from __future__ import annotations

import errno
import fnmatch
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Optional

from pneumo.errors import PneumoError
from pneumo.utils.atomic import WriteError
from pneumo.utils.temp_files import is_temp_name

__all__ = ["Layout", "KnownContents", "known_contents"]

# a folder's layout: entry name or glob pattern -> None for a file, or the layout of a sub-folder
Layout = Mapping[str, Optional["Layout"]]

_OS_JUNK = frozenset({".DS_Store", "Thumbs.db", "desktop.ini"})  # what file browsers drop into any folder they show


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
