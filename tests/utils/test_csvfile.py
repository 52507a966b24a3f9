"""The one CSV writer/reader: any text stays in its record, text cells are no formulas, torn records are cut."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import pytest

from pneumo.errors import PneumoError
from pneumo.utils.csvfile import format_csv, format_record, neutralise, parse_csv, read_csv, repair_csv, restore

HOSTILE = [
    "plain.jpeg",
    "new\nline.jpeg",
    "carriage\rreturn.jpeg",
    "crlf\r\n.jpeg",
    "\n",
    "\r",
    "comma,name.jpeg",
    'quote"name.jpeg',
    '"',
    "=cmd|' /C calc'!A0",
    "+1",
    "-1",
    "@x",
    "\t=tab",
    "\r=cr",
    " =blank first",
    "\uff1dfull-width",
    "'apostrophe",
    "''two",
    "'",
    "",
    "ünïcødé",
    "bad byte \udcff",
    "end\n",
]
COLUMNS = ["path", "probability", "note"]


def table(names: list[str]) -> list[list[str]]:
    return [[name, f"{-i / 7:.6f}", name[::-1]] for i, name in enumerate(names)]


def test_every_text_round_trips_and_numbers_are_left_alone() -> None:
    rows = table(HOSTILE)
    text = format_csv(COLUMNS, rows, text_columns={"path", "note"})
    assert parse_csv(text, {"path", "note"}) == [dict(zip(COLUMNS, r)) for r in rows]
    raw = list(csv.reader(io.StringIO(text, newline="")))  # what any CSV reader (or spreadsheet) gets
    assert raw[0] == COLUMNS and len(raw) == 1 + len(rows)
    assert [r[1] for r in raw[1:]] == [r[1] for r in rows]  # "-0.142857" stays a number
    assert float(raw[2][1]) < 0


@pytest.mark.parametrize(
    "value", ["=1+1", "+1", "-1", "@SUM(A1)", "\tx", "\rx", "\nx", " =x", "\uff1dx", "\uff0bx", "\uff0dx", "\uff20x", "'x"]
)
def test_a_cell_a_spreadsheet_would_run_is_written_as_text(value: str) -> None:
    assert neutralise(value) == "'" + value and restore(neutralise(value)) == value
    cell = next(csv.reader(io.StringIO(format_record([value, "-1"], text={0}), newline="")))
    assert cell == ["'" + value, "-1"]


@pytest.mark.parametrize("value", ["plain", "a=b", "1-2", "x@y", "", "/abs/=x", "C:\\=x"])
def test_ordinary_text_is_written_as_it_is(value: str) -> None:
    assert neutralise(value) == value and restore(value) == value


def test_cr_and_lf_are_quoted_whatever_the_line_terminator() -> None:
    assert format_record(["a\rb", "c"]) == '"a\rb",c\n'  # the csv module lets a bare CR through with "\n" records
    assert format_record(["a\nb", 'q"q', "x,y"]) == '"a\nb","q""q","x,y"\n'
    assert format_record([""]) == '""\n'  # a lone empty cell is a record, not a blank line


def record_ends(text: str) -> list[int]:
    """The byte offset at which each record (header first) ends, from the writer's own records."""
    ends, at = [], 0
    for cells in csv.reader(io.StringIO(text, newline="")):
        at += len(format_record(cells).encode("utf-8", "surrogateescape"))
        ends.append(at)
    return ends


def test_a_file_cut_at_any_byte_keeps_exactly_its_complete_records(tmp_path: Path) -> None:
    names = HOSTILE[:11]  # CR, LF, CRLF, quotes, commas, a formula
    rows = table(names)
    text = format_csv(COLUMNS, rows, text_columns={"path", "note"})
    data = text.encode("utf-8", "surrogateescape")
    ends = record_ends(text)
    assert ends[-1] == len(data)
    path = tmp_path / "results.csv"
    for cut in range(len(data) + 1):
        path.write_bytes(data[:cut])
        complete = sum(end <= cut for end in ends)  # header included
        removed = repair_csv(path)
        assert path.read_bytes() == data[: ends[complete - 1] if complete else 0], cut
        assert removed == cut - (ends[complete - 1] if complete else 0)
        columns, read = read_csv(path, {"path", "note"})
        assert columns == (COLUMNS if complete else [])
        assert [r["path"] for r in read] == names[: max(0, complete - 1)], cut


def test_a_torn_record_is_left_out_even_without_repair(tmp_path: Path) -> None:
    path = tmp_path / "results.csv"
    path.write_text(format_csv(COLUMNS, table(["a", "b\nc"]), {"path"})[:-12], encoding="utf-8")  # cut inside the quoted name
    assert [r["path"] for r in read_csv(path, {"path"})[1]] == ["a"]


def test_a_spreadsheet_bom_and_blank_lines_are_tolerated(tmp_path: Path) -> None:
    path = tmp_path / "results.csv"
    path.write_bytes(b"\xef\xbb\xbf" + format_csv(COLUMNS, table(["a"]), {"path"}).encode() + b"\n")
    columns, read = read_csv(path, {"path"})
    assert columns == COLUMNS and [r["path"] for r in read] == ["a"]
    assert read_csv(tmp_path / "results.csv")[0] == COLUMNS
    (tmp_path / "empty.csv").write_bytes(b"")
    columns, read = read_csv(tmp_path / "empty.csv")
    assert columns == [] and list(read) == []


def test_a_record_that_is_not_one_row_is_a_user_error_naming_its_line(tmp_path: Path) -> None:
    path = tmp_path / "edited.csv"
    path.write_text("path,probability,note\na,0.1,x\nb,0.2\n", encoding="utf-8")
    with pytest.raises(PneumoError, match=r"edited.csv line 3 has 2 cells and its header 3"):
        list(read_csv(path)[1])
    path.write_text('path,probability,note\n"a"x,0.1,y\nb,0.2,z\n', encoding="utf-8")
    with pytest.raises(PneumoError, match=r"edited.csv line 2 is not valid CSV .*fix or remove that line"):
        list(read_csv(path)[1])
