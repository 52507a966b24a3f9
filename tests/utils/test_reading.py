"""pneumo.utils.reading: the one bounded reader of a file a user names, and the JSON reader on it."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from pneumo.errors import PneumoError
from pneumo.utils.reading import read_json


def test_read_json_refuses_what_is_not_a_small_json_file(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "pipe.json")
    (tmp_path / "deep.json").write_text("[" * 100_000 + "]" * 100_000)
    (tmp_path / "latin1.json").write_bytes('{"a": "\xe9"}'.encode("latin-1"))
    (tmp_path / "big.json").write_text("[" + "0," * 1000 + "0]")
    cases = {"pipe.json": "named pipe", "deep.json": "nested too deeply", "latin1.json": "not readable JSON"}
    for name, why in cases.items():
        with pytest.raises(PneumoError, match=f"{why}.*; write it again"):
            read_json(tmp_path / name, "write it again")
    with pytest.raises(PneumoError, match="over the"):
        read_json(tmp_path / "big.json", "write it again", max_bytes=100)
    assert read_json(tmp_path / "big.json", "write it again") == [0] * 1001
