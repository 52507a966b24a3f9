"""Temporary files of interrupted writes: recognised by name exactly, and removed without touching anything else."""

from __future__ import annotations

import os
import time
from pathlib import Path

from pneumo.utils.atomic import write_temp
from pneumo.utils.temp_files import is_temp_name, remove_stale_temps


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
