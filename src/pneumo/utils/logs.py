"""pneumo's progress lines go through `logging`, never `print`: each module logs to
`logging.getLogger(__name__)`, all under the `pneumo` logger, and whoever runs the code decides
where they show. The command line shows them on stderr; in Python or a notebook,

    >>> import logging
    >>> logging.basicConfig(level=logging.INFO, format="%(message)s")

shows them as the command line does (without it, Python shows only warnings).

Until the next release the top-level functions still take the `log=` callable they took before
(`deprecated_log`): it gets every line, as it did, with a DeprecationWarning.
"""

from __future__ import annotations

import logging
import warnings
from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import Callable, Iterator

from pneumo.errors import check_callable

__all__ = ["LOGGER", "deprecated_log"]

LOGGER = "pneumo"  # the parent of every module's logger


def deprecated_log(log: Callable[[str], None] | None, function: str) -> AbstractContextManager[None]:
    """While the returned context is open, every line of the `pneumo` logger goes to `log` and nowhere else,
    as `function(log=...)` did before logging; a DeprecationWarning says what replaces it. None: nothing changes."""
    if log is None:
        return nullcontext()
    check_callable("log", log)
    warnings.warn(
        f"{function}(log=...) is deprecated and goes in the next release: pneumo logs through `logging` "
        "(logger 'pneumo'); logging.basicConfig(level=logging.INFO, format='%(message)s') shows its lines",
        DeprecationWarning,
        stacklevel=3,  # the caller of `function`
    )
    return _forwarded(log)


class _Forward(logging.Handler):
    """Each record's message to a `log` callable; what the callable raises reaches the code that logged, as before."""

    def __init__(self, log: Callable[[str], None]) -> None:
        super().__init__()
        self.log = log

    def emit(self, record: logging.LogRecord) -> None:
        self.log(record.getMessage())


@contextmanager
def _forwarded(log: Callable[[str], None]) -> Iterator[None]:
    logger = logging.getLogger(LOGGER)
    handler, level, propagate = _Forward(log), logger.level, logger.propagate
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False  # the lines went to `log` alone before
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
        logger.propagate = propagate
