"""Outputs checked before any work: folders, devices, pipes, files in the way and read-only folders refused up front."""

from __future__ import annotations

import errno
import os
import shutil
import types
from pathlib import Path

import pytest

from pneumo.errors import PneumoError
from pneumo.utils.atomic import WriteError, atomic_write
from pneumo.utils.output_checks import need_space, output_file, output_folder
from tests.utils.conftest import one_line


ROOT = os.geteuid() == 0 if hasattr(os, "geteuid") else False


def test_output_file_refuses_a_folder_a_device_and_a_file_in_the_way(tmp_path: Path) -> None:
    (tmp_path / "dir").mkdir()
    (tmp_path / "plain").write_text("x")
    with pytest.raises(PneumoError, match=r"--json .*dir is a folder, not a file: give a file path"):
        output_file(tmp_path / "dir", "--json")
    with pytest.raises(PneumoError, match=r"--json /dev/null is a device, not a regular file: .*would replace it"):
        output_file("/dev/null", "--json")
    with pytest.raises(PneumoError, match=r"cannot write --out .*plain/x\.csv: .*plain is a file, not a folder") as err:
        output_file(tmp_path / "plain" / "x.csv", "--out")
    one_line(err.value)
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


@pytest.mark.skipif(ROOT, reason="root writes into a read-only folder anyway; the monkeypatched faults of test_atomic cover it")
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


def test_need_space_refuses_what_the_disk_has_no_room_for(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(shutil, "disk_usage", lambda _: types.SimpleNamespace(total=100, used=90, free=10))
    need_space(tmp_path, 10, "the download")  # exactly what is free: fine
    with pytest.raises(PneumoError, match=r"^unpacking needs 11 bytes but .* has 10 bytes free; free some space or choose another folder$"):
        need_space(tmp_path, 11, "unpacking")
