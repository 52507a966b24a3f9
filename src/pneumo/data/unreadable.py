"""Inputs that cannot be read: skipped and listed with why, or with `strict` an error.

One damaged file in an archive should not stop a run of thousands, and should not vanish either:
`read_each` is the one loop that reads inputs one at a time, keeps going past the ones that raise
PneumoError and records each as (name, message). `pneumo predict`, `predict-archive` and the
dataset cache all go through it, so they skip, record and refuse alike.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any, TypeVar

from pneumo.errors import PneumoError

__all__ = ["STRICT_NOTE", "read_each"]

STRICT_NOTE = "--strict stops at the first unreadable file"  # appended to the error `strict` raises

Item = TypeVar("Item")
Read = TypeVar("Read")

# how `read` is applied to the items: the builtin `map` (lazy, in the caller's thread) or a thread
# pool's `map` (ahead, in parallel), either wrapped in a progress bar if wanted
Mapper = Callable[[Callable[[Any], Any], Iterable[Any]], Iterable[Any]]


def read_each(
    items: Iterable[Item],
    read: Callable[[Item], Read],
    skipped: list[tuple[str, str]],
    *,
    name: Callable[[Item], str] = str,
    strict: bool = False,
    apply: Mapper = map,
) -> Iterator[tuple[Item, Read]]:
    """(item, what `read` gave) for each item that can be read, in order; an item whose `read`
    raises PneumoError is appended to `skipped` as (its `name`, the message) and left out.

    Lazy: with the default `apply`, an item is read only when the loop asks for it, so a caller
    holds one batch decoded at a time; `skipped` fills as the loop passes the bad ones. With
    `strict`, the first unreadable item raises its PneumoError, `STRICT_NOTE` appended. Errors
    other than PneumoError (a bug, Ctrl-C) are never swallowed.

    Example:
        >>> skipped = []
        >>> [path for path, _ in read_each(paths, lambda p: load_image(p, 224), skipped)]
        ['a.jpeg', 'c.jpeg']
        >>> skipped
        [('b.jpeg', 'cannot decode b.jpeg: ...')]
    """

    def attempt(item: Item) -> tuple[Item, Read | PneumoError]:
        try:
            return item, read(item)
        except PneumoError as exc:
            return item, exc

    for item, result in apply(attempt, items):
        if isinstance(result, PneumoError):
            if strict:
                raise PneumoError(f"{result} ({STRICT_NOTE})") from None
            skipped.append((name(item), str(result)))
        else:
            yield item, result
