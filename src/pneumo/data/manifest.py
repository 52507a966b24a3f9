"""CSV manifests: the one reader behind every command that takes a list of files.

A manifest is a CSV whose first line names the columns. Column names are read without case or
padding (`Path,Label` and ` path ` are `path`), a spreadsheet's byte-order mark is dropped, and rows
of empty cells (which spreadsheets leave at the end) are skipped. The rows are read lazily, so a
manifest of millions of files is never held in memory; what each column means is the caller's.
"""

from __future__ import annotations

import csv
from collections.abc import Iterator, Sequence
from pathlib import Path

from pneumo.errors import PneumoError

__all__ = ["manifest_rows", "not_utf8"]


def not_utf8(text: str) -> bool:
    """Whether text read with errors="surrogateescape" held bytes that are not UTF-8 (a file name in
    another encoding, or a whole file in one)."""
    return any("\udc80" <= c <= "\udcff" for c in text)


def _columns_wanted(needs: Sequence[str]) -> str:
    if len(needs) == 1:
        return f"a '{needs[0]}' column"
    return "at least " + " and ".join(f"'{name}'" for name in needs) + " columns"


def manifest_rows(path: Path, needs: Sequence[str]) -> Iterator[tuple[int, dict[str, str]]]:
    """Each non-empty row as (its line number, {lower-cased column name: cell as written}).

    Raises:
        PneumoError: the file cannot be read, is not UTF-8 CSV text, is empty, or its header lacks
            one of the `needs` columns (with its first line, and a hint when it is `;`-separated).
    """
    wanted = _columns_wanted(needs)
    try:
        # -sig: spreadsheets start their CSVs with a BOM; surrogateescape: a file name that is not UTF-8 (as
        # pneumo writes it in split.csv) reads back as the same name
        handle = path.open(newline="", encoding="utf-8-sig", errors="surrogateescape")
    except OSError as exc:
        raise PneumoError(f"cannot read manifest {path}: {exc.strerror or exc}") from None
    with handle:
        reader = csv.reader(handle)
        try:
            header = next(reader, None)
            while header is not None and not any(cell.strip() for cell in header):
                header = next(reader, None)  # blank lines above the header
            if header is None:
                raise PneumoError(f"manifest {path} is empty; it needs a header with {wanted} and one row per image")
            if not_utf8(",".join(header)) or "\x00" in ",".join(header):  # UTF-16, or a legacy code page
                raise PneumoError(f"manifest {path} is not a UTF-8 CSV file; save it as CSV UTF-8")
            columns = [cell.strip().lstrip("\ufeff").strip().lower() for cell in header]
            twice = sorted({name for name in columns if name and columns.count(name) > 1})
            if twice:
                raise PneumoError(
                    f"manifest {path} names a column more than once ({', '.join(twice)}): which one holds the value is not clear; keep one"
                )
            if any(name not in columns for name in needs):
                first = ",".join(header)
                hint = "; it seems to use ';' between columns: save it with commas" if ";" in first and len(header) == 1 else ""
                raise PneumoError(f"manifest {path} needs a header with {wanted}; its first line is {first[:80]!r}{hint}")
            for row in reader:
                cells = {name: row[i] if i < len(row) else "" for i, name in enumerate(columns) if name}
                if any(cell.strip() for cell in cells.values()):
                    yield reader.line_num, cells
        except csv.Error as exc:
            raise PneumoError(f"manifest {path} line {reader.line_num} is not valid CSV ({exc})") from None
