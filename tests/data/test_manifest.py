"""The one manifest reader: column names without case or padding, blank rows skipped, one-line errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from pneumo.data.manifest import manifest_rows
from pneumo.errors import PneumoError


def _rows(tmp_path: Path, data: bytes, needs: tuple[str, ...] = ("path",)) -> list[tuple[int, dict[str, str]]]:
    manifest = tmp_path / "manifest.csv"
    manifest.write_bytes(data)
    return list(manifest_rows(manifest, needs=needs))


def test_a_spreadsheet_header_reads_as_its_column_names(tmp_path: Path) -> None:
    data = "\ufeff\r\n Path ,LABEL,\r\na.jpeg,normal,x\r\n,,\r\nb.jpeg, pneumonia\r\n".encode()
    assert _rows(tmp_path, data, needs=("path", "label")) == [
        (3, {"path": "a.jpeg", "label": "normal"}),
        (5, {"path": "b.jpeg", "label": " pneumonia"}),
    ]


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "is empty; it needs a header with a 'path' column"),
        (b"file,label\nx.jpeg,normal\n", "needs a header with a 'path' column; its first line is 'file,label'"),
        (b"path;label\n", "save it with commas"),
        ("path\nx.jpeg\n".encode("utf-16"), "is not a UTF-8 CSV file"),
        (b"path\n" + b"x" * 200_000 + b"\n", "line 2 is not valid CSV"),
    ],
)
def test_what_cannot_be_read_is_refused_with_the_file_named(tmp_path: Path, data: bytes, message: str) -> None:
    with pytest.raises(PneumoError, match="manifest .*manifest.csv") as err:
        _rows(tmp_path, data)
    assert message in str(err.value)


def test_two_needed_columns_are_both_named(tmp_path: Path) -> None:
    with pytest.raises(PneumoError, match="at least 'path' and 'label' columns"):
        _rows(tmp_path, b"path\nx.jpeg\n", needs=("path", "label"))
    with pytest.raises(PneumoError, match="cannot read manifest"):
        list(manifest_rows(tmp_path / "absent.csv", needs=("path",)))
