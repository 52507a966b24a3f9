from __future__ import annotations

import logging
import warnings

import pytest

from pneumo.errors import PneumoError
from pneumo.utils.logs import LOGGER, deprecated_log


def _run() -> None:
    """A library function's lines, as every module logs them."""
    logging.getLogger("pneumo.training.loop").info("epoch   1/1")
    logging.getLogger("pneumo.data.download").warning("the server cannot resume")


def _ensemble(log: object) -> object:
    return deprecated_log(log, "ensemble")  # type: ignore[arg-type]


def test_without_log_nothing_changes_and_nothing_is_said(pneumo_log: pytest.LogCaptureFixture) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with deprecated_log(None, "train"):
            _run()
    assert pneumo_log.messages == ["epoch   1/1", "the server cannot resume"]


def test_a_log_function_gets_every_line_alone_then_the_logger_is_as_it_was(pneumo_log: pytest.LogCaptureFixture) -> None:
    parent = logging.getLogger(LOGGER)
    before = (parent.level, parent.propagate, list(parent.handlers))
    lines: list[str] = []
    with pytest.warns(DeprecationWarning, match=r"ensemble\(log=\.\.\.\) is deprecated") as caught:
        context = _ensemble(lines.append)  # as a public function calls it
    assert caught[0].filename == __file__  # the user's file, not the library's
    with context:
        _run()
    assert lines == ["epoch   1/1", "the server cannot resume"] and pneumo_log.messages == []
    assert (parent.level, parent.propagate, list(parent.handlers)) == before


def test_what_the_log_function_raises_reaches_the_caller() -> None:
    def refuse(line: str) -> None:
        raise RuntimeError(line)

    with pytest.warns(DeprecationWarning), pytest.raises(RuntimeError, match="epoch"):
        with deprecated_log(refuse, "train"):
            _run()
    assert logging.getLogger(LOGGER).handlers == []


def test_a_log_that_cannot_be_called_is_refused() -> None:
    with pytest.raises(PneumoError, match="log must be a function"):
        deprecated_log("print", "download")  # type: ignore[arg-type]
