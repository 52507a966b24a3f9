"""Atomic writes: content kinds, permissions, and failed writes that say so in one line and leave nothing behind."""

from __future__ import annotations

import errno
import os
import pickle
import stat
from pathlib import Path

import pytest

from pneumo.errors import PneumoError
from pneumo.utils.atomic import WriteError, atomic_write, shared_file_mode, write_temp
from tests.utils.conftest import one_line


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


def test_a_named_pipe_or_a_folder_is_never_replaced_by_a_write(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "pipe")
    (tmp_path / "dir").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "pipe")
    for target in ("pipe", "dir", "link"):
        with pytest.raises(PneumoError, match="not a regular file|is a folder, not a file"):
            atomic_write(tmp_path / target, "x")
    assert stat.S_ISFIFO(os.stat(tmp_path / "pipe").st_mode) and (tmp_path / "dir").is_dir() and (tmp_path / "link").is_symlink()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dir", "link", "pipe"]  # no temporary file made


class _RustError(Exception):
    """How safetensors' SafetensorError reports a failed write: not an OSError, the errno in its text."""


@pytest.mark.parametrize(
    ("fault", "reason", "hint"),
    [
        (OSError(errno.ENOSPC, "No space left on device"), "No space left on device", "free some disk space"),
        (OSError(errno.EROFS, "Read-only file system"), "", "write somewhere else"),
        (PermissionError(errno.EACCES, "Permission denied"), "", "choose a folder you can write to"),
        (OSError(errno.EDQUOT, "Disk quota exceeded"), "Disk quota exceeded", "quota"),
        (
            _RustError("Error while serializing: I/O error: No space left on device (os error 28)"),
            "No space left on device",
            "free some disk space",
        ),
    ],
    ids=["disk full", "read-only file system", "permission denied", "quota", "safetensors' own error"],
)
def test_a_failed_write_is_one_line_naming_the_file_and_leaves_nothing(
    tmp_path: Path, fault: BaseException, reason: str, hint: str
) -> None:
    target = tmp_path / "weights.safetensors"
    target.write_bytes(b"old")

    def failing(tmp: Path) -> None:
        tmp.write_bytes(b"half")
        raise fault

    with pytest.raises(WriteError) as err:
        atomic_write(target, failing)
    message = one_line(err.value)
    assert message.startswith(f"cannot write {target}") and reason in message and hint in message
    assert isinstance(err.value, PneumoError) and isinstance(err.value, OSError)  # callers cleaning up after an OSError still do
    assert err.value.errno == (fault.errno if isinstance(fault, OSError) else errno.ENOSPC)
    assert target.read_bytes() == b"old" and [p.name for p in tmp_path.iterdir()] == ["weights.safetensors"]


def test_a_real_safetensors_error_is_a_write_error(tmp_path: Path) -> None:
    safetensors = pytest.importorskip("safetensors")

    def failing(tmp: Path) -> None:
        raise safetensors.SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")

    with pytest.raises(WriteError, match=r"weights\.safetensors \(No space left on device\)"):
        write_temp(tmp_path / "weights.safetensors", failing)
    assert list(tmp_path.iterdir()) == []


def test_a_short_write_without_an_errno_on_a_full_disk_is_a_write_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def short_write(tmp: Path) -> None:  # numpy's ndarray.tofile on a full disk
        tmp.write_bytes(b"part")
        raise OSError("501760 requested and 53120 written")

    full = os.statvfs_result((4096, 4096, 1000, 0, 0, 1000, 0, 0, 0, 255))
    monkeypatch.setattr(os, "statvfs", lambda path: full)
    with pytest.raises(WriteError, match=r"images\.npy \(No space left on device\): free some disk space"):
        atomic_write(tmp_path / "images.npy", short_write)
    assert list(tmp_path.iterdir()) == []
    monkeypatch.undo()
    with pytest.raises(OSError, match="requested") as err:  # with room on the disk it is not a full disk: raised as it is
        atomic_write(tmp_path / "images.npy", short_write)
    assert not isinstance(err.value, PneumoError) and list(tmp_path.iterdir()) == []


def test_a_bug_in_a_writer_is_not_disguised_as_a_disk_error(tmp_path: Path) -> None:
    def buggy(tmp: Path) -> None:
        raise TypeError("cannot serialise a set")

    with pytest.raises(TypeError, match="cannot serialise"):
        atomic_write(tmp_path / "x.json", buggy)
    assert list(tmp_path.iterdir()) == []


def test_a_failed_rename_or_folder_creation_leaves_no_temporary(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "plain").write_text("x")
    with pytest.raises(WriteError, match=r"cannot write .*plain/sub/r\.json: .*plain is a file, not a folder"):
        atomic_write(tmp_path / "plain" / "sub" / "r.json", "{}")

    def refuse(src: object, dst: object) -> None:
        raise PermissionError(errno.EPERM, "Operation not permitted")

    monkeypatch.setattr(os, "replace", refuse)
    with pytest.raises(WriteError, match=r"history\.csv \(Operation not permitted\)"):
        atomic_write(tmp_path / "history.csv", "a,b\n")
    monkeypatch.undo()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["plain"]


def test_a_write_error_survives_pickling() -> None:
    error = pickle.loads(pickle.dumps(WriteError(errno.ENOSPC, "No space left on device", "f", "cannot write f (No space left on device)")))
    assert (
        str(error) == "cannot write f (No space left on device)"
        and error.errno == errno.ENOSPC
        and error.strerror == "No space left on device"
    )
