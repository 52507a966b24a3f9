"""What the utils tests share: the check that a refusal is one line, as the CLI prints it."""

from __future__ import annotations


def one_line(exc: BaseException) -> str:
    """The exception's message, checked to be one line without a traceback."""
    message = str(exc)
    assert "\n" not in message and "Traceback" not in message, message
    return message
