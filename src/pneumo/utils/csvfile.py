"""The one CSV writer and reader of the package: records that survive any text in a cell, and
cells a spreadsheet will not run as formulas.

Writing (`format_record`, `format_csv`):
  - a cell is quoted ("...", inner quotes doubled) when it holds a comma, a double quote, a
    carriage return or a newline, so a file name with CR or LF stays inside its record (the
    csv module only quotes the characters of its own line terminator, which lets a bare CR
    through); records end with "\\n".
  - text cells (the columns a caller names as text; never numbers) are neutralised as OWASP
    advises against CSV injection: a cell whose first non-blank character is one of
    `= + - @`, their full-width forms, a tab, CR or LF is written with a single quote `'` in
    front. A cell that itself starts with `'` gets one too, so the rule can be undone exactly:
    `restore` drops one leading `'` from a text cell, whatever follows it.

Reading (`read_csv`, `repair_csv`) parses records, not lines, with the csv module over the whole
file: a record ends at a newline outside quotes. A final record without its newline, or cut
inside a quoted cell, is what a killed writer leaves; `read_csv` leaves it out and
`repair_csv` cuts it off, so an appending writer starts on a record boundary.

Files are UTF-8; file names that are not (bytes a Linux disk allows) are kept with
`surrogateescape`, so a path read back equals the path that was written.

Example:
    >>> text = format_csv(["path", "p"], [["=1+1", "-0.5"]], text_columns={"path"})
    >>> text
    "path,p\\n'=1+1,-0.5\\n"
"""

from __future__ import annotations

import csv
import io
import os
from pathlib import Path
from typing import IO, Collection, Iterable, Iterator, Sequence

from pneumo.errors import PneumoError

__all__ = [
    "ENCODING",
    "ERRORS",
    "FORMULA_STARTS",
    "format_csv",
    "format_record",
    "neutralise",
    "open_for_append",
    "parse_csv",
    "read_csv",
    "repair_csv",
    "restore",
    "text_positions",
]

ENCODING, ERRORS = "utf-8", "surrogateescape"
# What makes Excel, LibreOffice or Google Sheets read a cell as a formula (OWASP "CSV Injection"),
# with the full-width forms some locales accept; the escape character itself, so that it round-trips.
FORMULA_STARTS = frozenset("=+-@\t\r\n\uff1d\uff0b\uff0d\uff20'")
ESCAPE = "'"
_NEEDS_QUOTES = frozenset(',"\r\n')


def neutralise(value: str) -> str:
    """A text cell a spreadsheet shows as text: `'` in front when it starts (after blanks) with a
    formula character, or with `'` itself. `restore` undoes it."""
    if value[:1] in FORMULA_STARTS or value.lstrip()[:1] in FORMULA_STARTS:
        return ESCAPE + value
    return value


def restore(value: str) -> str:
    """The text `neutralise` was given: one leading `'` dropped."""
    return value[1:] if value[:1] == ESCAPE else value


def _quoted(cell: str) -> str:
    if _NEEDS_QUOTES.isdisjoint(cell):
        return cell
    return '"' + cell.replace('"', '""') + '"'


def format_record(cells: Sequence[str], text: Collection[int] = ()) -> str:
    """One CSV record ending in "\\n"; the cells at the positions in `text` are neutralised."""
    cells = [neutralise(c) if i in text else c for i, c in enumerate(cells)]
    if len(cells) == 1 and not cells[0]:
        return '""\n'  # a lone empty cell, not an empty line (which readers skip)
    return ",".join(_quoted(c) for c in cells) + "\n"


def text_positions(columns: Sequence[str], text_columns: Collection[str]) -> frozenset[int]:
    """The positions of the named text columns in a header."""
    return frozenset(i for i, name in enumerate(columns) if name in text_columns)


def format_csv(columns: Sequence[str], rows: Iterable[Sequence[str]], text_columns: Collection[str] = ()) -> str:
    """A whole CSV text: the header, then the rows with the cells of `text_columns` neutralised.

    Args:
        columns: the header's names (written as they are).
        rows: cells as strings, numbers already formatted; only the text columns are changed.
        text_columns: the names of the columns holding free text (file names, messages, labels).
    """
    text = text_positions(columns, text_columns)
    return format_record(columns) + "".join(format_record(row, text) for row in rows)


def open_for_append(path: Path) -> IO[str]:
    """A CSV file opened to append records as this module writes them."""
    return path.open("a", newline="", encoding=ENCODING, errors=ERRORS)


def _records(f: IO[bytes], name: str) -> Iterator[tuple[list[str], int, int]]:
    """(cells, line number, byte offset after the record) for each complete record of a binary
    file; stops before a torn final record (no final newline, or an open quote at the end)."""
    offset = 0
    ended_line = True  # the last line handed to the parser ended with "\n"
    exhausted = False

    def lines() -> Iterator[str]:
        nonlocal offset, ended_line, exhausted
        first = True
        for raw in f:  # binary lines split on b"\n" only: CR stays inside its line, and its cell
            offset += len(raw)
            ended_line = raw.endswith(b"\n")
            line = raw.decode(ENCODING, ERRORS)
            yield line.lstrip("\ufeff") if first else line  # a BOM, if a spreadsheet saved the file
            first = False
        exhausted = True

    reader = csv.reader(lines(), strict=True)
    while True:
        try:
            cells = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            if exhausted:  # the file ends inside a quoted cell: cut off mid-record
                return
            raise PneumoError(f"{name} line {reader.line_num} is not valid CSV ({exc}); fix or remove that line") from None
        if exhausted or not ended_line:  # the parser needed the end of the file to finish it
            return
        if cells:  # blank lines are no records
            yield cells, reader.line_num, offset


def repair_csv(path: str | Path) -> int:
    """Cut off a torn final record (what a writer killed mid-record leaves), so appending starts on
    a record boundary; return the number of bytes removed (0 when the file was whole)."""
    path = Path(path)
    with path.open("rb+") as f:
        end = 0
        for _, _, end in _records(f, str(path)):
            pass
        size = f.seek(0, os.SEEK_END)
        if end < size:
            f.truncate(end)
        return size - end


def _table(f: IO[bytes], name: str, text_columns: Collection[str]) -> tuple[list[str], Iterator[dict[str, str]]]:
    records = _records(f, name)
    try:
        first = next(records, None)
    except BaseException:
        f.close()
        raise
    if first is None:
        f.close()
        return [], iter(())
    header = first[0]
    text = text_positions(header, text_columns)

    def rows() -> Iterator[dict[str, str]]:
        with f:
            for cells, line, _ in records:
                if len(cells) != len(header):
                    raise PneumoError(
                        f"{name} line {line} has {len(cells)} cells and its header {len(header)}, so it is not one"
                        " record as written; fix or remove that line"
                    )
                yield {column: restore(c) if i in text else c for i, (column, c) in enumerate(zip(header, cells))}

    return header, rows()


def read_csv(path: str | Path, text_columns: Collection[str] = ()) -> tuple[list[str], Iterator[dict[str, str]]]:
    """The header of a CSV file and a lazy pass over its complete records as dicts, with the cells
    of `text_columns` restored (see `neutralise`). A torn final record is left out; a record with
    another number of cells than the header is an error that names its line.

    Returns ([], an empty iterator) for an empty file.
    """
    return _table(Path(path).open("rb"), str(path), text_columns)


def parse_csv(text: str, text_columns: Collection[str] = ()) -> list[dict[str, str]]:
    """The rows of CSV text (e.g. `format_csv`'s), the cells of `text_columns` restored.

    Example:
        >>> parse_csv("path,p\\n'=1+1,-0.5\\n", text_columns={"path"})
        [{'path': '=1+1', 'p': '-0.5'}]
    """
    return list(_table(io.BytesIO(text.encode(ENCODING, ERRORS)), "CSV text", text_columns)[1])
