"""Reading a file a user names: only a regular file, and never more than a limit.

A FIFO or a socket would make `open()` wait for a writer forever and a device (/dev/zero) would
never end, so the path is checked with `stat` before it is opened, opened non-blocking, and checked
again on the descriptor (should it have been swapped since); the read stops one byte past the
limit, whatever the file claims. Each caller words its own refusals (`Refusals`): an image, a
config and a model's JSON say different things about what to do.
"""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from pneumo.errors import PneumoError, describe_size

__all__ = ["MAX_JSON_BYTES", "Refusals", "file_kind", "open_regular", "os_reason", "read_json", "read_regular"]

MAX_JSON_BYTES = 256 * 2**20  # a model's metadata with its input check is a few MB

# what a file that is not a regular file is, in words: (as a refusal to read it says, as the others say)
_KINDS = {
    stat.S_IFDIR: ("a folder", "a folder"),
    stat.S_IFIFO: ("a named pipe (FIFO)", "a named pipe"),
    stat.S_IFCHR: ("a character device", "a device"),
    stat.S_IFBLK: ("a block device", "a block device"),
    stat.S_IFSOCK: ("a socket", "a socket"),
}
_OPEN_FLAGS = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0) | getattr(os, "O_NOCTTY", 0)


def file_kind(mode: int, detailed: bool = False) -> str:
    """What the file of `mode` (an st_mode) is, in words: "a folder", "a named pipe", "a device"...;
    `detailed` names a pipe "a named pipe (FIFO)" and a device "a character device"."""
    if stat.S_ISREG(mode):
        return "a file"
    kinds = _KINDS.get(stat.S_IFMT(mode))
    return kinds[0 if detailed else 1] if kinds else "not a regular file"


def os_reason(exc: BaseException) -> str:
    """The operating system's reason (an OSError's strerror), else the exception's text."""
    return str(getattr(exc, "strerror", None) or exc)


@dataclass(frozen=True)
class Refusals:
    """How one caller words each refusal of a read; each returns the PneumoError to raise."""

    unreadable: Callable[[OSError | ValueError, bool], PneumoError]  # the error, and whether the file was there (stat worked)
    not_regular: Callable[[int], PneumoError]  # the file's st_mode: a folder, FIFO, device or socket
    too_large: Callable[[int, bool], PneumoError]  # bytes, and whether the file states that size (else reading found that many)


def open_regular(path: Path, refusals: Refusals) -> int:
    """A read-only descriptor of `path`, which must be a regular file (checked before opening, and
    again on the open descriptor should the path have changed in between)."""
    try:
        mode = os.stat(path).st_mode
    except (OSError, ValueError) as exc:
        raise refusals.unreadable(exc, False) from None
    if not stat.S_ISREG(mode):  # before opening: opening a FIFO blocks
        raise refusals.not_regular(mode)
    try:
        # O_NONBLOCK: should the path have become a FIFO since, opening returns at once and fstat refuses it
        fd = os.open(path, _OPEN_FLAGS)
    except OSError as exc:
        raise refusals.unreadable(exc, True) from None
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise refusals.not_regular(mode)
    except BaseException:
        os.close(fd)
        raise
    return fd


def read_regular(path: Path, max_bytes: int, refusals: Refusals) -> bytes:
    """The bytes of the regular file `path`: refused from its size before reading when that is over
    `max_bytes`, and never more than `max_bytes` + 1 read (a file larger than it says, a /proc file)."""
    fd = open_regular(path, refusals)
    try:
        with open(fd, "rb", buffering=0, closefd=True) as fh:
            size = os.fstat(fh.fileno()).st_size
            if size > max_bytes:
                raise refusals.too_large(size, True)
            chunks, total, want = [], 0, size + 1  # one read for a file as large as it says
            while total <= max_bytes:
                chunk = fh.read(min(want, max_bytes + 1 - total))
                if not chunk:
                    break
                chunks.append(chunk)
                total += len(chunk)
                want = 1024**2
    except OSError as exc:
        raise refusals.unreadable(exc, True) from None
    if total > max_bytes:  # it grew, or its size was not what it said
        raise refusals.too_large(total, False)
    return b"".join(chunks)


def read_json(path: str | Path, hint: str, max_bytes: int = MAX_JSON_BYTES) -> object:
    """A JSON file a user handed us (a model's metadata): only a regular file, at most `max_bytes`,
    and any way it can fail to parse (bad UTF-8, bad JSON, nesting deep enough to exhaust the
    parser's recursion) is a PneumoError ending with `hint` (what to do), never a traceback or a hang."""
    path = Path(path)
    refusals = Refusals(
        unreadable=lambda exc, _: PneumoError(f"cannot read {path}: {os_reason(exc)}; {hint}"),
        not_regular=lambda mode: PneumoError(f"{path} is {file_kind(mode)}, not a JSON file; {hint}"),
        too_large=lambda size, _: PneumoError(
            f"{path} is {describe_size(size)}, over the {describe_size(max_bytes)} a JSON file of pneumo's can be; {hint}"
        ),
    )
    data = read_regular(path, max_bytes, refusals)
    try:
        return json.loads(data.decode("utf-8"))
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        why = "nested too deeply" if isinstance(exc, RecursionError) else str(exc)[:200]
        raise PneumoError(f"{path} is not readable JSON ({why}); {hint}") from None
