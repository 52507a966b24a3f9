"""File hashing."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from pneumo.utils.hashing import sha256_file


def test_sha256_of_a_file_in_chunks(tmp_path: Path) -> None:
    data = os.urandom(3 * 2**20 + 17)
    (tmp_path / "big").write_bytes(data)
    assert sha256_file(tmp_path / "big") == hashlib.sha256(data).hexdigest()
