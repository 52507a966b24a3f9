"""The one exception type for mistakes a user can fix (bad paths, bad data, bad config)."""

from __future__ import annotations

__all__ = ["PneumoError"]


class PneumoError(Exception):
    """A user-facing error: its message says what went wrong and what to do.

    The CLI prints it on one line without a traceback and exits non-zero; anything
    else that escapes is a bug in pneumo.
    """
