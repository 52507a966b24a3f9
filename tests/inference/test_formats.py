"""pneumo.inference.formats: the one serialisation of predictions (JSON and CSV), its columns, and
round trips that give back exactly what was written, whatever the file names hold.

(`tests/inference/test_predict.py` already checks CR/LF/quote/formula names in a CSV through `predict`;
these tests hold the module's own contract: columns per task, numbers, empty lists, JSON, refusals.)
"""

from __future__ import annotations

import csv
import io
import json

import pytest

from pneumo.errors import PneumoError
from pneumo.inference.base import Prediction
from pneumo.inference.formats import TEXT_COLUMNS, format_predictions, prediction_rows
from pneumo.tasks import PATHOGEN_CLASSES
from pneumo.utils.csvfile import parse_csv

BINARY = ("NORMAL", "PNEUMONIA")


def binary(path: str, p: float, threshold: float = 0.5, **changes: object) -> Prediction:
    values: dict = {
        "path": path,
        "probability": p,
        "label": "PNEUMONIA" if p >= threshold else "NORMAL",
        "threshold": threshold,
        "class_probabilities": {"NORMAL": 1 - p, "PNEUMONIA": p},
    }
    values.update(changes)
    return Prediction(**values)


def abstained(path: str, p: float, reasons: tuple[str, ...]) -> Prediction:
    return binary(path, p, label=None, warnings=reasons, abstain=True, abstain_reason=reasons[0])


HOSTILE = [
    " =1+1.png",  # a formula behind a blank
    "\tcmd.png",
    "\uff1dSUM(A1).png",  # a full-width equals sign
    "@SUM(1).png",
    "'quoted'.png",
    "ünïcødé 雪.png",
    "bad-\udcff-bytes.png",  # a name that is not UTF-8 on disk (kept with surrogateescape)
    "a;b; c.png",  # the separator of the warnings column inside a name
    "",
]


def test_csv_columns_are_the_serialised_fields() -> None:
    """Every field of `Prediction.to_dict` has its column (the class probabilities one per class), and
    no column comes from elsewhere, so JSON and CSV cannot drift apart."""
    prediction = abstained("a", 0.7, ("odd film", "small"))
    columns, [row] = prediction_rows([prediction])
    fields = prediction.to_dict()
    probabilities = {f"p_{c}": f"{v:.6f}" for c, v in fields.pop("class_probabilities").items()}
    assert sorted(columns) == sorted([*fields, *probabilities])
    cells = dict(zip(columns, row))
    assert {c: cells[c] for c in probabilities} == probabilities
    assert cells["path"] == fields["path"] and cells["warnings"] == "; ".join(fields["warnings"])
    assert cells["abstain_reason"] == fields["abstain_reason"] and (cells["label"], cells["abstain"]) == ("", "true")


def test_csv_columns_follow_the_task_classes_in_order() -> None:
    columns, _ = prediction_rows([binary("a", 0.2)])
    assert columns == ["path", "probability", "label", "abstain", "threshold", "p_NORMAL", "p_PNEUMONIA", "warnings", "abstain_reason"]
    probs = dict(zip(PATHOGEN_CLASSES, (0.2, 0.5, 0.3)))
    pathogen = Prediction("b", 0.8, "PNEUMONIA", 0.4, probs)
    columns, rows = prediction_rows([pathogen])
    assert columns[5:8] == [f"p_{c}" for c in PATHOGEN_CLASSES]
    assert rows[0][5:8] == ["0.200000", "0.500000", "0.300000"]
    assert all(TEXT_COLUMNS.isdisjoint([c]) for c in columns[5:8]) and {"probability", "threshold"}.isdisjoint(TEXT_COLUMNS)


def test_rows_are_plain_strings_with_an_abstention_shown_as_such() -> None:
    judged = binary("=judged.png", 0.123456789, threshold=0.65, warnings=("=one", "two"))
    held = abstained("held.png", 0.9, ("first reason", "second reason"))
    _, rows = prediction_rows([judged, held])
    assert rows[0] == [
        "=judged.png",
        "0.123457",
        "NORMAL",
        "false",
        "0.65",
        "0.876543",
        "0.123457",
        "=one; two",
        "",
    ]  # nothing neutralised here
    assert rows[1][2:4] == ["", "true"] and rows[1][-2:] == ["first reason; second reason", "first reason"]
    assert all(isinstance(cell, str) for row in rows for cell in row)


def test_no_predictions_give_an_empty_list_or_a_header() -> None:
    assert json.loads(format_predictions([], "json")) == []
    assert prediction_rows([]) == (["path", "probability", "label", "abstain", "threshold", "warnings", "abstain_reason"], [])
    text = format_predictions([], "csv")
    assert text.count("\n") == 1 and parse_csv(text, TEXT_COLUMNS) == []


def test_json_round_trips_every_field_exactly() -> None:
    results = [binary(name, 0.1 + i / 20) for i, name in enumerate(HOSTILE)] + [abstained("held.png", 1 / 3, ("why",))]
    back = json.loads(format_predictions(results, "json"))
    assert back == [r.to_dict() for r in results]  # floats at full precision, names as they were, None as null
    assert back[-1]["label"] is None and back[-1]["abstain"] is True
    assert all(set(row) == set(results[0].to_dict()) for row in back)


def test_csv_round_trips_hostile_names_warnings_and_reasons() -> None:
    results = [binary(name, 0.25, warnings=(f"-{name}",)) for name in HOSTILE] + [abstained("=x.png", 0.5, ("+because", "@also"))]
    text = format_predictions(results, "csv")
    back = parse_csv(text, TEXT_COLUMNS)
    assert [r["path"] for r in back] == [r.path for r in results]
    assert [r["warnings"] for r in back] == ["; ".join(r.warnings) for r in results]
    assert back[-1]["abstain_reason"] == "+because" and back[-1]["label"] == "" and back[-1]["abstain"] == "true"
    assert [float(r["probability"]) for r in back] == pytest.approx([r.probability for r in results], abs=5e-7)


def test_csv_text_cells_never_start_like_a_formula_in_a_spreadsheet() -> None:
    results = [binary(name, 0.25, warnings=("=HYPERLINK(x)",)) for name in HOSTILE] + [abstained("ok.png", 0.5, ("-1+2",))]
    raw = list(csv.DictReader(io.StringIO(format_predictions(results, "csv"), newline="")))
    dangerous = set("=+-@\t\r\n\uff1d\uff0b\uff0d\uff20")
    for row in raw:
        for column in TEXT_COLUMNS:
            assert row[column].lstrip()[:1] not in dangerous, (column, row[column])
    assert raw[-1]["probability"] == "0.500000" and raw[0]["threshold"] == "0.5"  # numbers are written as they are


def test_the_csv_and_json_say_the_same_thing() -> None:
    results = [binary("a.png", 0.3), abstained("b.png", 0.7, ("odd",)), binary("c.png", 0.99, threshold=0.65)]
    as_json = json.loads(format_predictions(results, "json"))
    as_csv = parse_csv(format_predictions(results, "csv"), TEXT_COLUMNS)
    for j, c in zip(as_json, as_csv):
        assert c["path"] == j["path"] and c["label"] == (j["label"] or "") and c["abstain"] == str(j["abstain"]).lower()
        assert float(c["probability"]) == pytest.approx(j["probability"], abs=5e-7)
        assert float(c["threshold"]) == pytest.approx(j["threshold"])
        assert {k[2:]: float(v) for k, v in c.items() if k.startswith("p_")} == pytest.approx(j["class_probabilities"], abs=5e-7)


@pytest.mark.parametrize("fmt", ["table", "JSON", "Csv", "xml", "", " json"])
def test_an_unknown_format_is_refused_by_name(fmt: str) -> None:
    """ "table" is the command's own rendering, not this module's."""
    with pytest.raises(PneumoError, match=rf"unknown format {fmt!r}; use json or csv"):
        format_predictions([binary("a", 0.5)], fmt)
