"""Atomic writes and file hashing."""
from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path

import pytest

from pneumo.utils.files import atomic_write, sha256_file, shared_file_mode, write_temp


def test_atomic_write_content_kinds_and_ordinary_permissions(tmp_path: Path) -> None:
    atomic_write(tmp_path / "a" / "text.json", '{"ok": true}')
    atomic_write(tmp_path / "bytes.bin", b"\x00\x01")
    atomic_write(tmp_path / "called.txt", lambda tmp: tmp.write_text("via a writer"))
    assert (tmp_path / "a" / "text.json").read_text() == '{"ok": true}'
    assert (tmp_path / "bytes.bin").read_bytes() == b"\x00\x01"
    assert (tmp_path / "called.txt").read_text() == "via a writer"
    for name in ("bytes.bin", "called.txt"):
        assert stat.S_IMODE(os.stat(tmp_path / name).st_mode) == shared_file_mode()  # not mkstemp's 0600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "bytes.bin", "called.txt"]  # no temporary files left


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "report.json"
    target.write_text("old")

    def broken(tmp: Path) -> None:
        tmp.write_text("half")
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError):
        atomic_write(target, broken)
    assert target.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["report.json"]


def test_write_temp_leaves_the_rename_to_the_caller(tmp_path: Path) -> None:
    tmp = write_temp(tmp_path / "weights.bin", b"new")
    assert tmp.parent == tmp_path and tmp.name.startswith(".weights.bin.") and not (tmp_path / "weights.bin").exists()


def test_sha256_of_a_file_in_chunks(tmp_path: Path) -> None:
    data = os.urandom(3 * 2**20 + 17)
    (tmp_path / "big").write_bytes(data)
    assert sha256_file(tmp_path / "big") == hashlib.sha256(data).hexdigest()
