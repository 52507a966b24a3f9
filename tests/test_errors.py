"""pneumo.errors: the one exception, and the argument checks every public function makes with it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pneumo.errors import (
    PneumoError,
    check_callable,
    check_choice,
    check_flag,
    check_number,
    check_path,
    check_text,
    check_whole,
    describe,
    describe_size,
    short,
)


@pytest.mark.parametrize(
    ("check", "value", "fragment"),
    [
        (lambda v: check_flag("abstain", v), "no", "abstain must be True or False; got 'no' (str)"),
        (lambda v: check_flag("abstain", v), 1, "got 1 (int)"),
        (lambda v: check_flag("abstain", v), None, "got None"),
        (lambda v: check_flag("abstain", v), np.array([True]), "got a numpy.ndarray of shape (1,) and dtype bool"),
        (lambda v: check_whole("batch_size", v, minimum=1), 0, "batch_size must be a whole number of at least 1; got 0 (int)"),
        (lambda v: check_whole("batch_size", v, minimum=1), True, "got True (bool)"),
        (lambda v: check_whole("batch_size", v, minimum=1), 2.0, "got 2.0 (float)"),
        (lambda v: check_whole("batch_size", v, minimum=1), "8", "got '8' (str)"),
        (lambda v: check_whole("port", v, minimum=1, maximum=65535), 70000, "port must be a whole number from 1 to 65535"),
        (lambda v: check_whole("n", v, maximum=3), 2**20000, "got an integer of about 6021 digits (int)"),
        (lambda v: check_number("prevalence", v, minimum=0, maximum=1, exclusive=True), 1, "between 0 and 1 (exclusive); got 1 (int)"),
        (lambda v: check_number("prevalence", v, minimum=0, maximum=1, exclusive=True), float("nan"), "got nan (float)"),
        (lambda v: check_number("threshold", v, minimum=0, maximum=1), True, "got True (bool)"),
        (lambda v: check_number("max_upload_mb", v, minimum=0, exclusive=True), float("inf"), "a positive number; got inf"),
        (lambda v: check_number("max_upload_mb", v, minimum=0, exclusive=True), 10**400, "a positive number; got"),
        (lambda v: check_text("split", v), 3, "split must be a str"),
        (lambda v: check_text("split", v), "", "got '' (an empty str)"),
        (lambda v: check_choice("backend", v, ("auto", "onnx")), "gpu", "backend must be one of 'auto', 'onnx'; got 'gpu' (str)"),
        (lambda v: check_choice("backend", v, ("auto", "onnx")), np.zeros(3), "got a numpy.ndarray of shape (3,)"),
        (lambda v: check_path("out", v), None, "out must be a path, as a str or pathlib.Path; got None"),
        (lambda v: check_path("out", v), b"x.csv", "got b'x.csv' (bytes)"),
        (lambda v: check_path("out", v), ["a", "b"], "got ['a', 'b'] (list)"),
        (lambda v: check_path("out", v), 3, "got 3 (int)"),
        (lambda v: check_path("out", v), "", "got '' (an empty str)"),
        (lambda v: check_path("out", v), "a\x00b", "out must be a path without a NUL byte"),
        (lambda v: check_path("out", v), "a" * 300, "each name in it at most 255"),
        (lambda v: check_path("out", v), "a/" * 3000, "of at most 4095 bytes"),
        (lambda v: check_path("out", v), "\ud800", "a path the file system can encode"),
        (lambda v: check_path("out", v), "~nouser-pneumo/runs", "a path whose ~ or ~user names a home folder here"),
        (lambda v: check_callable("log", v), None, "log must be a function (callable); got None"),
    ],
    ids=lambda v: short(v)[:40],
)
def test_a_wrong_value_is_one_line_naming_the_argument(check: object, value: object, fragment: str) -> None:
    with pytest.raises(PneumoError) as err:
        check(value)  # type: ignore[operator]
    message = str(err.value)
    assert fragment in message and "\n" not in message and len(message) < 300, message


def test_values_that_pass_come_back_as_plain_python() -> None:
    """A notebook's numpy scalars are numbers and flags; paths come back as given (a str stays a str)."""
    assert check_whole("batch_size", np.int64(8), minimum=1) == 8 and type(check_whole("b", np.int64(8))) is int
    assert check_flag("strict", np.bool_(True)) is True and check_flag("strict", False) is False
    assert check_number("prevalence", np.float32(0.25), minimum=0, maximum=1) == 0.25
    assert check_number("t", 1, minimum=0, maximum=1) == 1.0  # the bounds are inclusive unless said
    assert check_path("out", "runs/a") == "runs/a" and check_path("out", Path("x")) == Path("x")
    assert check_path("out", "~/runs") == "~/runs" and check_path("out", "a~b") == "a~b"
    assert check_path("out", None, optional=True) is None and check_whole("n", None, optional=True) is None
    assert check_text("split", "test") == "test" and check_choice("backend", "onnx", ("auto", "onnx")) == "onnx"
    assert check_callable("log", print) is print


def test_optional_arguments_say_none_is_accepted_too() -> None:
    with pytest.raises(PneumoError, match=r"a number between 0 and 1 \(exclusive\), or None; got '0.3' \(str\)$"):
        check_number("prevalence", "0.3", minimum=0, maximum=1, exclusive=True, optional=True)


def test_describe_never_prints_a_whole_array_or_a_failing_repr() -> None:
    class Broken:
        def __repr__(self) -> str:
            raise RuntimeError("no repr")

    assert describe(np.zeros((3000, 3000), dtype=np.uint8)) == "a numpy.ndarray of shape (3000, 3000) and dtype uint8"
    assert describe(Broken()).startswith("<Broken") and describe(Broken()).endswith("> (Broken)")
    assert len(describe("x" * 10**6)) < 100


def test_sizes_read_as_people_write_them() -> None:
    assert [describe_size(n) for n in (512, 3400, 78_200_000, 1_500_000_000)] == ["512 bytes", "3.4 kB", "78.2 MB", "1.5 GB"]
