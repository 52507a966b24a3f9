"""Hashing files without reading them whole."""

from __future__ import annotations

import hashlib
from pathlib import Path

__all__ = ["sha256_file"]


def sha256_file(path: str | Path) -> str:
    """SHA-256 of a file's bytes, read in chunks (a checkpoint or an archive need not fit in memory)."""
    with Path(path).open("rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()
