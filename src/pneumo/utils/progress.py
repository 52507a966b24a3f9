"""The one progress display: quiet when asked to (tests, --quiet) or when output is not a terminal."""

from __future__ import annotations

from typing import Iterable, Iterator, TypeVar

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    SpinnerColumn,
    Task,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text

__all__ = ["progress_bar", "make_progress"]

T = TypeVar("T")


class _Rate(ProgressColumn):
    """Items per second, in the display's unit."""

    def __init__(self, unit: str) -> None:
        super().__init__()
        self.unit = unit

    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        return Text(f"{speed:,.0f} {self.unit}/s" if speed else f"- {self.unit}/s", style="progress.data.speed")


def make_progress(enabled: bool = True, unit: str | None = None, stderr: bool = False) -> Progress:
    """A Rich progress display: description, bar, count, elapsed time, ETA and a free-text `info` field.

    Args:
        enabled: False draws nothing.
        unit: with a unit ("images"), a spinner and a rate column are added, for work whose
            total arrives late (the bar waits with total=None until it is known).
        stderr: draw on stderr, keeping stdout for results.
    """
    columns: list[ProgressColumn] = [TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn()]
    if unit is not None:
        columns = [SpinnerColumn(), *columns, _Rate(unit)]
    columns += [TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn(), TextColumn("{task.fields[info]}")]
    return Progress(*columns, console=Console(stderr=True) if stderr else None, disable=not enabled, transient=False)


def progress_bar(items: Iterable[T], total: int, description: str, enabled: bool = True) -> Iterator[T]:
    """Iterate with a progress bar."""
    if not enabled:  # no display to build: a single film's prediction goes through here
        yield from items
        return
    with make_progress(enabled) as progress:
        task = progress.add_task(description, total=total, info="")
        for item in items:
            yield item
            progress.advance(task)
