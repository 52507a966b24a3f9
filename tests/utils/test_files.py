"""Atomic writes and file hashing."""

from __future__ import annotations

import errno
import hashlib
import os
import pickle
import stat
import time
from pathlib import Path

import pytest

from pneumo.errors import PneumoError
from pneumo.utils.files import (
    WriteError,
    atomic_write,
    is_temp_name,
    known_contents,
    output_file,
    output_folder,
    remove_stale_temps,
    sha256_file,
    shared_file_mode,
    write_temp,
)


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


# --- outputs checked before any work; writes that fail say so in one line and leave nothing behind ---


ROOT = os.geteuid() == 0 if hasattr(os, "geteuid") else False


def _one_line(exc: BaseException) -> str:
    message = str(exc)
    assert "\n" not in message and "Traceback" not in message, message
    return message


def test_output_file_refuses_a_folder_a_device_and_a_file_in_the_way(tmp_path: Path) -> None:
    (tmp_path / "dir").mkdir()
    (tmp_path / "plain").write_text("x")
    with pytest.raises(PneumoError, match=r"--json .*dir is a folder, not a file: give a file path"):
        output_file(tmp_path / "dir", "--json")
    with pytest.raises(PneumoError, match=r"--json /dev/null is a device, not a regular file: .*would replace it"):
        output_file("/dev/null", "--json")
    with pytest.raises(PneumoError, match=r"cannot write --out .*plain/x\.csv: .*plain is a file, not a folder") as err:
        output_file(tmp_path / "plain" / "x.csv", "--out")
    _one_line(err.value)
    # what can be written passes and nothing is made: a new file in new folders, an existing file, a dangling link
    assert output_file(tmp_path / "new" / "deeper" / "r.json") == tmp_path / "new" / "deeper" / "r.json"
    assert not (tmp_path / "new").exists()
    assert output_file(tmp_path / "plain") == tmp_path / "plain"
    (tmp_path / "dangling").symlink_to(tmp_path / "nowhere")
    output_file(tmp_path / "dangling")


def test_output_folder_refuses_a_file_a_device_and_a_dangling_link(tmp_path: Path) -> None:
    (tmp_path / "plain").write_text("x")
    with pytest.raises(PneumoError, match=r"^--out /dev/null is a device, not a folder: give a folder to write into$"):
        output_folder("/dev/null", "--out")
    with pytest.raises(PneumoError, match=r"--plots .*plain is a file, not a folder"):
        output_folder(tmp_path / "plain", "--plots")
    with pytest.raises(PneumoError, match=r"plain is a file, not a folder"):
        output_folder(tmp_path / "plain" / "sub", "--cam")
    (tmp_path / "dangling").symlink_to(tmp_path / "nowhere")
    with pytest.raises(PneumoError, match="symlink that leads nowhere"):
        output_folder(tmp_path / "dangling", "--cam")
    assert output_folder(tmp_path / "a" / "b") == tmp_path / "a" / "b" and not (tmp_path / "a").exists()


def test_a_named_pipe_or_a_folder_is_never_replaced_by_a_write(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "pipe")
    (tmp_path / "dir").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "pipe")
    for target in ("pipe", "dir", "link"):
        with pytest.raises(PneumoError, match="not a regular file|is a folder, not a file"):
            atomic_write(tmp_path / target, "x")
    assert stat.S_ISFIFO(os.stat(tmp_path / "pipe").st_mode) and (tmp_path / "dir").is_dir() and (tmp_path / "link").is_symlink()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dir", "link", "pipe"]  # no temporary file made


@pytest.mark.skipif(ROOT, reason="root writes into a read-only folder anyway; the monkeypatched variants below cover it")
def test_an_output_in_a_read_only_folder_is_refused_up_front_and_on_write(tmp_path: Path) -> None:
    locked = tmp_path / "locked"
    locked.mkdir()
    (locked / "report.json").write_text("old")
    locked.chmod(0o555)
    try:
        with pytest.raises(PneumoError, match=r"locked is not writable \(Permission denied\); choose a folder you can write to"):
            output_file(locked / "report.json", "--json")
        with pytest.raises(PneumoError, match="locked is not writable"):
            output_folder(locked / "plots", "--plots")
        with pytest.raises(WriteError, match=r"cannot write .*report\.json: .*locked is not writable") as err:
            atomic_write(locked / "report.json", "new")
        assert err.value.errno == errno.EACCES
        assert (locked / "report.json").read_text() == "old" and [p.name for p in locked.iterdir()] == ["report.json"]
    finally:
        locked.chmod(0o755)


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
    message = _one_line(err.value)
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


def test_temporary_names_are_recognised_exactly(tmp_path: Path) -> None:
    made = write_temp(tmp_path / "history.csv", "x")
    assert is_temp_name(made.name)
    for name in (".weights.safetensors.k2j_9x0a.tmp", ".tmpwBKWsE"):  # write_temp's, safetensors' own
        assert is_temp_name(name)
    for name in ("history.csv", "notes.tmp", ".notes.tmp", ".a.short.tmp", ".a.UPPERCAS.tmp", ".tmpfolders", "tmp123456", ".tmp12345"):
        assert not is_temp_name(name), name


def test_stale_temporary_files_are_removed_and_nothing_else(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / ".keep.abcd1234.tmp").write_bytes(b"k" * 10)
    run = tmp_path / "run"
    (run / "checkpoints" / "last").mkdir(parents=True)
    (run / ".history.csv.abcd1234.tmp").write_bytes(b"h" * 100)
    (run / "checkpoints" / "last" / ".weights.safetensors.x_y0z9k1.tmp").write_bytes(b"w" * 1000)
    (run / "checkpoints" / "last" / ".tmpAb12Cd").write_bytes(b"s" * 10)
    (run / "checkpoints" / "last" / "weights.safetensors").write_bytes(b"kept")
    (run / "notes.tmp").write_text("mine")
    (run / ".linked.abcd1234.tmp").symlink_to(outside / ".keep.abcd1234.tmp")  # a link is never ours
    (run / "elsewhere").symlink_to(outside, target_is_directory=True)  # never followed
    assert remove_stale_temps(run) == (1, 100)  # the top folder only
    assert remove_stale_temps(run, recursive=True) == (2, 1010)
    left = sorted(str(p.relative_to(run)) for p in run.rglob("*"))
    assert left == [
        ".linked.abcd1234.tmp",
        "checkpoints",
        "checkpoints/last",
        "checkpoints/last/weights.safetensors",
        "elsewhere",
        "notes.tmp",
    ]
    assert (outside / ".keep.abcd1234.tmp").exists()
    # a file another process may be writing now is spared
    fresh, old = run / ".a.json.abcd1234.tmp", run / ".b.json.abcd1234.tmp"
    fresh.write_text("x")
    old.write_text("y")
    os.utime(old, (time.time() - 7200, time.time() - 7200))
    assert remove_stale_temps(run, min_age_s=3600) == (1, 1) and fresh.exists() and not old.exists()
    assert remove_stale_temps(tmp_path / "missing") == (0, 0)


def test_temporary_files_can_be_limited_to_some_targets(tmp_path: Path) -> None:
    for name in (".images-ab12-64.npy.abcd1234.tmp", ".digests.json.abcd1234.tmp", ".other.json.abcd1234.tmp", ".tmpAb12Cd"):
        (tmp_path / name).write_text("x")
    assert remove_stale_temps(tmp_path, targets=("images-*", "digests.json"), safetensors=False) == (2, 2)
    assert sorted(p.name for p in tmp_path.iterdir()) == [".other.json.abcd1234.tmp", ".tmpAb12Cd"]


LAYOUT = {"config.yaml": None, "history.csv": None, "checkpoints": {"last": {"*.safetensors": None, "meta.json": None}}}


def _run_like(folder: Path) -> Path:
    (folder / "checkpoints" / "last").mkdir(parents=True)
    (folder / "config.yaml").write_text("model: seed_cnn\n")
    (folder / "history.csv").write_text("epoch\n1\n")
    (folder / "checkpoints" / "last" / "weights.safetensors").write_bytes(b"w" * 2000)
    (folder / "checkpoints" / "last" / "meta.json").write_text("{}")
    (folder / "checkpoints" / "last" / ".tmpAb12Cd").write_bytes(b"t")  # a killed write's leftover
    (folder / ".DS_Store").write_bytes(b"junk")
    return folder


def test_known_contents_are_listed_and_removed_keeping_the_folder(tmp_path: Path) -> None:
    run = _run_like(tmp_path / "run")
    contents = known_contents(run, LAYOUT, "a run folder")
    assert len(contents.files) == 6 and contents.n_bytes == 2000 + 16 + 8 + 2 + 1 + 4
    contents.remove()
    assert run.is_dir() and list(run.iterdir()) == []


@pytest.mark.parametrize(
    ("intruder", "named"),
    [
        ("src/main.py", "src/"),
        ("notes.txt", "notes.txt"),
        ("checkpoints/last/thesis.tex", "checkpoints/last/thesis.tex"),
        ("config.yaml/x", "config.yaml/"),
    ],
)
def test_a_folder_with_anything_unknown_is_refused_whole(tmp_path: Path, intruder: str, named: str) -> None:
    run = _run_like(tmp_path / "run")
    if intruder == "config.yaml/x":
        (run / "config.yaml").unlink()
    (run / intruder).parent.mkdir(parents=True, exist_ok=True)
    (run / intruder).write_text("precious")
    before = sorted(p for p in run.rglob("*"))
    with pytest.raises(PneumoError, match=rf"^{run} holds {named}, which a run folder never has; refusing to delete it") as err:
        known_contents(run, LAYOUT, "a run folder")
    _one_line(err.value)
    assert sorted(p for p in run.rglob("*")) == before and (run / intruder).read_text() == "precious"


def test_a_symlink_inside_is_refused_and_never_followed(tmp_path: Path) -> None:
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "weights.safetensors").write_text("not yours")
    run = _run_like(tmp_path / "run")
    (run / "checkpoints" / "best").symlink_to(precious, target_is_directory=True)
    with pytest.raises(PneumoError, match=r"holds checkpoints/best, a symlink, which a run folder never has"):
        known_contents(
            run, {**LAYOUT, "checkpoints": {"last": LAYOUT["checkpoints"]["last"], "best": LAYOUT["checkpoints"]["last"]}}, "a run folder"
        )
    assert (precious / "weights.safetensors").read_text() == "not yours" and (run / "config.yaml").exists()
