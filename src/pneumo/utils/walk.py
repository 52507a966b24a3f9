"""The one way pneumo finds image files: folders walked recursively, junk and link loops left
out, globs expanded. `pneumo predict`, `predict-archive`, `evaluate` and training all list the
same files for the same folder because they all come here.

A symlinked folder is followed when it leads outside the tree being walked; one that leads back
inside it (or to a folder above it, or one already walked) is not, so a link loop cannot hang a
walk nor list an image twice. A link that leads nowhere (dangling, or a loop) but has an image's
name is listed, so that decoding reports it by name.

A file is an image by its name (`IMAGE_SUFFIXES`, whatever the case, blanks around the name
ignored: `x.jpeg ` is a JPEG) or, when its name says nothing (PACS exports DICOM as `IM000000`), by
its first bytes. Every other file is left out, and a caller that passes `left_out` learns which.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable, Iterator

from pneumo.errors import PneumoError

__all__ = ["IMAGE_SUFFIXES", "is_junk", "child_dirs", "iter_image_files", "image_files", "expand_paths"]

# the names a folder search picks up: every format pneumo.data.io decodes (a file given by name is read whatever its name)
IMAGE_SUFFIXES = frozenset({".jpeg", ".jpg", ".png", ".dcm", ".dicom", ".tif", ".tiff", ".bmp", ".webp", ".gif"})
# folders that archives, NAS boxes and OSes leave beside the data (macOS, Synology, Windows)
_JUNK_DIRS = frozenset({"__macosx", ".ds_store", "@eadir", "$recycle.bin"})
# what the formats pneumo decodes start with (offset, bytes), for files whose name does not say; BMP's
# two-letter "BM" is too weak a sign to take a nameless file for an image
_MAGIC = ((0, b"\xff\xd8\xff"), (0, b"\x89PNG\r\n\x1a\n"), (128, b"DICM"), (0, b"II*\x00"), (0, b"MM\x00*"), (0, b"GIF8"), (8, b"WEBP"))


def is_junk(name: str) -> bool:
    """Dot files (`.DS_Store`, macOS `._` forks) and the folders archives and NAS boxes leave."""
    return name.startswith(".") or name.lower() in _JUNK_DIRS


def _is_dir(entry: os.DirEntry) -> bool:
    """Whether an entry is a folder (through symlinks); a link loop or a dangling link is not."""
    try:
        return entry.is_dir()
    except OSError:
        return False


def _is_image(entry: os.DirEntry) -> bool:
    """An image by its name, or (a name with no image suffix) by its first bytes."""
    if Path(entry.name.strip()).suffix.lower() in IMAGE_SUFFIXES:
        return True
    try:
        if not entry.is_file():  # a pipe, a socket or a dangling link named like nothing pneumo reads
            return False
        with open(entry.path, "rb") as fh:
            head = fh.read(132)
    except OSError:
        return False
    return any(head[at : at + len(magic)] == magic for at, magic in _MAGIC)


def _scandir(folder: Path) -> list[os.DirEntry]:
    try:
        with os.scandir(folder) as entries:
            return sorted(entries, key=lambda e: e.name)
    except OSError as exc:
        raise PneumoError(f"cannot read folder {folder}: {exc.strerror or exc}") from None


def child_dirs(folder: Path, distinct: Iterable[str] = ()) -> dict[str, Path]:
    """Subfolders by lower-cased name, junk left out. Two whose names differ only in case and are among
    `distinct` (lower case: the names that mean something, such as class folders) are an error: one would be ignored."""
    found: dict[str, Path] = {}
    for entry in _scandir(folder):
        if is_junk(entry.name) or not _is_dir(entry):
            continue
        key = entry.name.lower()
        if key in found and key in distinct:
            raise PneumoError(
                f"{folder} has both {found[key].name}/ and {entry.name}/: which one is meant is not clear; merge them into one folder"
            )
        found.setdefault(key, Path(entry.path))
    return found


def _loops_back(target: Path, boundary: Path, walked: set[Path]) -> bool:
    """Whether a symlinked folder's target is inside the tree, or is (or holds) a folder already walked."""
    return target.is_relative_to(boundary) or any(p.is_relative_to(target) for p in (boundary, *walked))


def iter_image_files(folder: str | Path, root: str | Path | None = None, left_out: list[Path] | None = None) -> Iterator[Path]:
    """Image files under a folder, lazily (a folder at a time), in `image_files`' order.

    Each folder's files come in name order, then its subfolders, depth first. A symlinked
    subfolder is followed when it leads outside `root` (default `folder`); see the module's docstring.
    `left_out` collects the other files met (not junk, not images).
    """
    boundary = Path(os.path.realpath(root if root is not None else folder))
    walked: set[Path] = set()
    stack = [Path(folder)]
    while stack:
        current = stack.pop()
        real = Path(os.path.realpath(current))
        if real in walked:
            continue
        walked.add(real)
        subdirs = []
        for entry in _scandir(current):
            if is_junk(entry.name):
                continue
            if not _is_dir(entry):
                if _is_image(entry):
                    yield Path(entry.path)
                elif left_out is not None:
                    left_out.append(Path(entry.path))
            elif not entry.is_symlink() or not _loops_back(Path(os.path.realpath(entry.path)), boundary, walked):
                subdirs.append(Path(entry.path))
        stack += reversed(subdirs)


def image_files(folder: str | Path, root: str | Path | None = None, left_out: list[Path] | None = None) -> list[Path]:
    """Every image file under a folder, recursively (see `iter_image_files`)."""
    return list(iter_image_files(folder, root, left_out))


def _glob(pattern: Path) -> list[Path]:
    """Matches of a pattern (`scans/**/*.dcm`), each file once: pathlib's `**` does not follow
    symlinked folders, so a link to a parent cannot list the archive again (or forever)."""
    parts = pattern.parts
    first = next(i for i, part in enumerate(parts) if any(c in part for c in "*?["))
    anchor = Path(*parts[:first]) if first else Path(".")
    seen: set[str] = set()
    matches = []
    for match in sorted(anchor.glob(str(Path(*parts[first:])))):
        real = os.path.realpath(match)
        if real not in seen:
            seen.add(real)
            matches.append(match)
    return matches


def expand_paths(paths: Iterable[str | Path]) -> list[Path]:
    """Files as given, image files found recursively in folders (`image_files`), and glob
    patterns (`scans/**/*.jpeg`) expanded, for when the shell did not (quoted, or on Windows)."""
    files: list[Path] = []
    given = [Path(p) for p in paths]
    for p in given:
        if not os.path.lexists(p) and any(c in str(p) for c in "*?["):
            matches = _glob(p)
            if not matches:
                raise PneumoError(f"no file matches {p}")
            files += expand_paths(matches)
        elif p.is_dir():
            found = image_files(p)
            if not found:
                raise PneumoError(f"{p} holds no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
            files += found
        elif os.path.lexists(p):
            files.append(p)  # a file, or a link that does not resolve: reading it says why
        else:
            raise PneumoError(f"{p} does not exist")
    if not files:
        raise PneumoError(f"no image files found in {', '.join(map(str, given)) or 'the given paths'}")
    return files
