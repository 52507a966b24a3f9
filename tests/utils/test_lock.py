"""One writer per output: a second is refused at once, naming the first; nothing is left behind."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from pneumo.errors import PneumoError
from pneumo.utils.lock import OutputLock


def test_a_second_writer_is_refused_with_who_holds_the_output(tmp_path: Path) -> None:
    out = tmp_path / "results.csv"
    with OutputLock.acquire(out) as first:
        assert first.path == tmp_path / ".results.csv.lock" and first.path.exists()
        with pytest.raises(PneumoError, match=rf"results.csv is being written by another pneumo \(process {os.getpid()} on .*\); wait"):
            OutputLock.acquire(out)
    assert not (tmp_path / ".results.csv.lock").exists()  # released and removed
    with OutputLock.acquire(out):  # free again
        pass


def test_a_killed_holder_does_not_keep_the_output(tmp_path: Path) -> None:
    """The kernel's lock goes with the process: a stale lock file left by a kill is taken over."""
    out = tmp_path / "results.csv"
    code = f"import os; from pathlib import Path; from pneumo.utils.lock import OutputLock; OutputLock.acquire(Path({str(out)!r})); os._exit(9)"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 9
    assert (tmp_path / ".results.csv.lock").exists()  # left behind by the kill
    with OutputLock.acquire(out) as lock:
        assert str(os.getpid()) in lock.path.read_text()
