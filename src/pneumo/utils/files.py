"""Writing files so that a crash never leaves half of one, and hashing them without reading them whole."""
from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path
from typing import Callable

__all__ = ["atomic_write", "write_temp", "sha256_file", "shared_file_mode"]

Writer = Callable[[Path], object]


def shared_file_mode() -> int:
    """The mode an ordinary new file gets under the current umask (temporary files are made 0600)."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def write_temp(target: str | Path, write: Writer | bytes | str) -> Path:
    """Write a temporary file in `target`'s folder, flushed to the disk and readable like any
    other file; return its path for the caller to rename over `target` (`os.replace`).

    `write` is the content, or a function given the temporary path to write to (e.g.
    safetensors' `save_file`). If writing fails the temporary file is removed and the error raised.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    os.close(fd)
    tmp = Path(name)
    try:
        if isinstance(write, bytes):
            tmp.write_bytes(write)
        elif isinstance(write, str):
            tmp.write_text(write, encoding="utf-8")
        else:
            write(tmp)
        with tmp.open("rb+") as fh:  # renaming an unflushed file can expose an empty one after a power cut
            os.fsync(fh.fileno())
        os.chmod(tmp, shared_file_mode())
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return tmp


def atomic_write(target: str | Path, write: Writer | bytes | str) -> Path:
    """Write `target` through a temporary file renamed into place: readers see the old file or the new one, never half.

    Example:
        >>> atomic_write("report.json", json.dumps(report))
        >>> atomic_write("weights.safetensors", lambda tmp: save_file(state, str(tmp)))
    """
    target = Path(target)
    os.replace(write_temp(target, write), target)
    return target


def sha256_file(path: str | Path) -> str:
    """SHA-256 of a file's bytes, read in chunks (a checkpoint or an archive need not fit in memory)."""
    with Path(path).open("rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()
