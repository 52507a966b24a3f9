"""The one progress display: what its rows show, that `enabled=False` draws nothing, and that `progress_bar`
hands every item through in order, counting each only once it has been handled.

Rows are rendered into a string console rather than a terminal, so nothing here depends on timing or on
whether the test run has a TTY.
"""

from __future__ import annotations

import io
from collections.abc import Iterator

import pytest
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

import pneumo.utils.progress as progress_module
from pneumo.utils.progress import make_progress, progress_bar


def _row(progress: Progress) -> str:
    """The display's rows as text, as a wide terminal would show them."""
    console = Console(file=io.StringIO(), width=200, color_system=None)
    console.print(progress.make_tasks_table(progress.tasks))
    return console.file.getvalue()


@pytest.fixture
def spied(monkeypatch: pytest.MonkeyPatch) -> list[Progress]:
    """The displays `progress_bar` makes, kept for inspection."""
    made: list[Progress] = []

    def spy(*args: object, **kwargs: object) -> Progress:
        made.append(make_progress(*args, **kwargs))  # type: ignore[arg-type]
        return made[-1]

    monkeypatch.setattr(progress_module, "make_progress", spy)
    return made


def test_columns_without_a_unit() -> None:
    kinds = [type(c) for c in make_progress(enabled=False).columns]
    assert kinds == [TextColumn, BarColumn, MofNCompleteColumn, TimeElapsedColumn, TextColumn, TimeRemainingColumn, TextColumn]


def test_a_unit_adds_a_spinner_and_a_rate() -> None:
    columns = make_progress(enabled=False, unit="images").columns
    assert isinstance(columns[0], SpinnerColumn) and len(columns) == 9
    assert isinstance(columns[4], progress_module._Rate) and columns[4].unit == "images"


def test_a_row_shows_description_count_eta_and_info() -> None:
    progress = make_progress(enabled=False)
    task = progress.add_task("epoch 3/10", total=200, info="val auc 0.912")
    progress.advance(task, 50)
    row = _row(progress)
    assert "epoch 3/10" in row and "50/200" in row and "eta" in row and row.rstrip().endswith("val auc 0.912")


def test_the_rate_waits_for_a_speed_and_a_total_may_come_late() -> None:
    progress = make_progress(enabled=False, unit="images")
    task = progress.add_task("decoding", total=None, info="")
    progress.advance(task, 50)
    assert "50/?" in _row(progress) and "- images/s" in _row(progress)  # no total, no speed yet
    progress.update(task, total=80)
    progress.tasks[0].finished_speed = 1234.4  # as Rich records it when a task finishes
    assert "1,234 images/s" in _row(progress) and "50/80" in _row(progress)


def test_disabled_draws_nothing_anywhere(capfd: pytest.CaptureFixture[str]) -> None:
    progress = make_progress(enabled=False, unit="images")
    assert progress.disable
    with progress:
        progress.advance(progress.add_task("quiet", total=3, info="x"), 3)
    assert list(progress_bar(range(4), 4, "quiet too", enabled=False)) == [0, 1, 2, 3]
    assert capfd.readouterr() == ("", "")


def test_stderr_keeps_stdout_for_results(capsys: pytest.CaptureFixture[str]) -> None:
    progress = make_progress(enabled=True, stderr=True)
    assert progress.console.stderr and not make_progress(enabled=True).console.stderr
    with progress:
        progress.advance(progress.add_task("to stderr", total=2, info=""), 2)
    assert capsys.readouterr().out == ""


def test_progress_bar_yields_every_item_in_order() -> None:
    items = [("a", 1), ("b", 2), ("c", 3)]
    assert list(progress_bar(iter(items), len(items), "pairs", enabled=False)) == items
    assert list(progress_bar([], 0, "nothing", enabled=False)) == []


def test_progress_bar_is_lazy() -> None:
    pulled: list[int] = []

    def source() -> Iterator[int]:
        for i in range(100):
            pulled.append(i)
            yield i

    bar = progress_bar(source(), 100, "lazy", enabled=False)
    assert pulled == []  # nothing happens before the first item is asked for
    assert next(bar) == 0 and next(bar) == 1 and pulled == [0, 1]
    bar.close()


def test_progress_bar_counts_an_item_once_it_has_been_handled(spied: list[Progress]) -> None:
    seen: list[float] = []
    for _ in progress_bar(range(3), 3, "counting", enabled=True):
        seen.append(spied[0].tasks[0].completed)
    task = spied[0].tasks[0]
    assert seen == [0, 1, 2] and task.completed == 3 and task.total == 3 and task.description == "counting"
    assert not spied[0].live.is_started  # the display is closed when the loop ends


def test_progress_bar_closes_its_display_when_the_loop_stops_early(spied: list[Progress]) -> None:
    for i in progress_bar(range(10), 10, "broken off", enabled=True):
        if i == 2:
            break
    assert not spied[0].live.is_started and spied[0].tasks[0].completed == 2
    with pytest.raises(KeyError):
        for _ in progress_bar(range(10), 10, "raising", enabled=True):
            raise KeyError("the caller's error passes through")
    assert not spied[1].live.is_started
