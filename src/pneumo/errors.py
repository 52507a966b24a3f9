"""The one exception type for mistakes a user can fix (bad paths, bad data, bad config), the
checks every public function makes of its arguments at its entry, and the words a message uses
for a value (`short`, `describe`) or a size (`describe_size`).

The checks live here, beside the exception, because every layer calls them, config included: a
wrong argument is refused in one line that names it, says what was given and what is accepted,
instead of a TypeError from pathlib or dataclasses three calls down, or an answer that is
silently wrong (`batch_size=-1`, `abstain="no"`).

Example:
    >>> batch_size = check_whole("batch_size", batch_size, minimum=1)
    >>> check_path("out", out)
"""

from __future__ import annotations

import math
import numbers
import os
import reprlib
import sys
from collections.abc import Collection
from typing import Any

__all__ = [
    "PneumoError",
    "check_callable",
    "check_choice",
    "check_flag",
    "check_number",
    "check_path",
    "check_text",
    "check_whole",
    "describe",
    "describe_size",
    "refuse",
    "short",
]

SHOWN_CHARS = 60  # a value quoted in a message is cut to this, so a huge value makes a short message
_NAME_MAX = 255  # bytes in one name of a path (ext4, XFS, APFS, NTFS alike)
_PATH_MAX = 4095  # bytes in a whole path (Linux)

_REPR = reprlib.Repr()
_REPR.maxstring = _REPR.maxother = SHOWN_CHARS
_REPR.maxlist = _REPR.maxtuple = _REPR.maxdict = _REPR.maxset = 4
_REPR.maxlevel = 2


class PneumoError(Exception):
    """A user-facing error: its message says what went wrong and what to do.

    The CLI prints it on one line without a traceback and exits non-zero; anything
    else that escapes is a bug in pneumo.
    """


def short(value: Any) -> str:
    """A repr of at most 60 characters: a message quoting a 1 MB value stays one short line."""
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 128:
        return f"an integer of about {int(value.bit_length() * math.log10(2)) + 1} digits"  # repr raises past 4300
    try:
        text = _REPR.repr(value)
    except Exception:  # noqa: BLE001 - a value whose repr fails is still reported, by its type
        text = f"<{type(value).__name__}>"
    text = text.replace("\n", " ")  # one line, whatever the repr
    return text if len(text) <= SHOWN_CHARS else text[: SHOWN_CHARS - 3] + "..."


def describe(value: Any) -> str:
    """What was given, for a message: its value (short) and its type; an array by shape and dtype
    (its repr could be megabytes, or fail)."""
    if value is None:
        return "None"
    kind = type(value).__name__
    shape, dtype = getattr(value, "shape", None), getattr(value, "dtype", None)
    if isinstance(shape, tuple) and dtype is not None:
        library = type(value).__module__.split(".")[0]
        return f"a {library}.{kind} of shape {tuple(int(n) for n in shape)} and dtype {dtype}"
    if isinstance(value, str) and not value:
        return "'' (an empty str)"
    return f"{short(value)} ({kind})"


def describe_size(n_bytes: int) -> str:
    """A size for a message: 512 bytes, 3.4 kB, 78.2 MB, 1.5 GB."""
    if n_bytes < 1000:
        return f"{n_bytes} bytes"
    for unit, scale in (("kB", 1e3), ("MB", 1e6), ("GB", 1e9)):
        if n_bytes < scale * 1000 or unit == "GB":
            return f"{n_bytes / scale:.1f} {unit}"
    return f"{n_bytes} bytes"  # pragma: no cover


def refuse(name: str, accepted: str, value: Any) -> PneumoError:
    """The one message for a wrong argument: `{name} must be {accepted}; got {what was given}`."""
    return PneumoError(f"{name} must be {accepted}; got {describe(value)}")


def _is_bool(value: Any) -> bool:
    numpy = sys.modules.get("numpy")  # not imported: the value cannot be a numpy bool
    return isinstance(value, bool) or (numpy is not None and isinstance(value, numpy.bool_))


def _or_none(accepted: str, optional: bool) -> str:
    return f"{accepted}, or None" if optional else accepted


def check_flag(name: str, value: Any, *, optional: bool = False) -> bool | None:
    """`value` as a bool: True or False (numpy's too); never a truthy string or number, which
    would turn `abstain="no"` into yes."""
    if optional and value is None:
        return None
    if not _is_bool(value):
        raise refuse(name, _or_none("True or False", optional), value)
    return bool(value)


def check_whole(name: str, value: Any, *, minimum: int | None = None, maximum: int | None = None, optional: bool = False) -> int | None:
    """`value` as an int within [minimum, maximum]: an integer (numpy's too), not a bool or a float."""
    if optional and value is None:
        return None
    if minimum is not None and maximum is not None:
        accepted = f"a whole number from {minimum} to {maximum}"
    elif minimum is not None:
        accepted = f"a whole number of at least {minimum}"
    elif maximum is not None:
        accepted = f"a whole number of at most {maximum}"
    else:
        accepted = "a whole number"
    if _is_bool(value) or not isinstance(value, numbers.Integral):
        raise refuse(name, _or_none(accepted, optional), value)
    number = int(value)
    if (minimum is not None and number < minimum) or (maximum is not None and number > maximum):
        raise refuse(name, _or_none(accepted, optional), value)
    return number


def check_number(
    name: str,
    value: Any,
    *,
    minimum: float | None = None,
    maximum: float | None = None,
    exclusive: bool = False,
    optional: bool = False,
) -> float | None:
    """`value` as a finite float within [minimum, maximum] (or strictly inside, `exclusive`):
    an int or float (numpy's too), never a bool, NaN or an infinity."""
    if optional and value is None:
        return None
    if minimum is not None and maximum is not None:
        accepted = f"a number between {minimum:g} and {maximum:g}" + (" (exclusive)" if exclusive else " (inclusive)")
    elif minimum == 0 and exclusive:
        accepted = "a positive number"
    elif minimum is not None:
        accepted = f"a number above {minimum:g}" if exclusive else f"a number of at least {minimum:g}"
    elif maximum is not None:
        accepted = f"a number below {maximum:g}" if exclusive else f"a number of at most {maximum:g}"
    else:
        accepted = "a finite number"
    if _is_bool(value) or not isinstance(value, numbers.Real):
        raise refuse(name, _or_none(accepted, optional), value)
    try:
        number = float(value)
    except OverflowError:  # an int beyond a float's range
        raise refuse(name, _or_none(accepted, optional), value) from None
    too_low = minimum is not None and (number <= minimum if exclusive else number < minimum)
    too_high = maximum is not None and (number >= maximum if exclusive else number > maximum)
    if not math.isfinite(number) or too_low or too_high:
        raise refuse(name, _or_none(accepted, optional), value)
    return number


def check_text(name: str, value: Any, *, optional: bool = False, accepted: str = "a str") -> str | None:
    """`value` as a non-empty str (a split's name, a host)."""
    if optional and value is None:
        return None
    if not isinstance(value, str) or not value or "\x00" in value:
        raise refuse(name, _or_none(f"{accepted} (not empty, no NUL byte)", optional), value)
    return value


def check_choice(name: str, value: Any, choices: Collection[str], *, optional: bool = False) -> str | None:
    """`value`, one of `choices` (compared as a str: a list or an array is refused, not compared)."""
    if optional and value is None:
        return None
    if not isinstance(value, str) or value not in choices:
        raise refuse(name, _or_none("one of " + ", ".join(repr(c) for c in choices), optional), value)
    return value


def check_path(name: str, value: Any, *, what: str = "a path", optional: bool = False) -> Any:
    """`value` unchanged when it can name a file: a str or os.PathLike (not bytes), not empty, with
    no NUL byte, no name longer than a file system allows and no ~user that is not a user here
    (pathlib and os.stat would raise TypeError, ValueError, OSError or RuntimeError on those, far
    from the call)."""
    if optional and value is None:
        return None
    accepted = _or_none(f"{what}, as a str or pathlib.Path", optional)
    if isinstance(value, (bytes, bytearray)) or not isinstance(value, (str, os.PathLike)):
        raise refuse(name, accepted, value)
    try:
        text = os.fspath(value)
    except Exception:  # noqa: BLE001 - a PathLike whose __fspath__ fails names no path
        raise refuse(name, accepted, value) from None
    if not isinstance(text, str) or not text:
        raise refuse(name, accepted, value)
    if "\x00" in text:
        raise refuse(name, f"{what} without a NUL byte", value)
    try:
        encoded = os.fsencode(text)
    except UnicodeEncodeError:  # a lone surrogate the file system's encoding cannot write
        raise refuse(name, f"{what} the file system can encode", value) from None
    if len(encoded) > _PATH_MAX or any(len(part) > _NAME_MAX for part in encoded.split(b"/")):
        raise refuse(name, f"{what} of at most {_PATH_MAX} bytes, each name in it at most {_NAME_MAX}", value)
    if text.startswith("~") and os.path.expanduser(text) == text:  # pathlib's expanduser raises RuntimeError on these
        raise refuse(name, f"{what} whose ~ or ~user names a home folder here", value)
    return value


def check_callable(name: str, value: Any) -> Any:
    """`value` unchanged when it can be called (a `log` function)."""
    if not callable(value):
        raise refuse(name, "a function (callable)", value)
    return value
