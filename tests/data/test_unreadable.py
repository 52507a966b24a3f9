"""pneumo.data.unreadable: the one loop that reads inputs, skipping and listing the unreadable ones."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from pneumo.data.preprocess import load_image
from pneumo.data.unreadable import STRICT_NOTE, read_each
from pneumo.errors import PneumoError
from tests.conftest import pick


def _read(item: str) -> str:
    if item.startswith("bad"):
        raise PneumoError(f"cannot decode {item}")
    return item.upper()


def test_unreadable_items_are_skipped_and_listed_in_order() -> None:
    skipped: list[tuple[str, str]] = []
    read = list(read_each(["a", "bad1", "b", "bad2"], _read, skipped))
    assert read == [("a", "A"), ("b", "B")]
    assert skipped == [("bad1", "cannot decode bad1"), ("bad2", "cannot decode bad2")]


def test_skipped_items_are_listed_by_their_name() -> None:
    skipped: list[tuple[str, str]] = []
    names = ["<image 0>", "<image 1>"]
    assert list(read_each([0, 1], lambda i: _read(["a", "bad"][i]), skipped, name=names.__getitem__)) == [(0, "A")]
    assert skipped == [("<image 1>", "cannot decode bad")]


def test_strict_raises_at_the_first_unreadable_item() -> None:
    skipped: list[tuple[str, str]] = []
    reads = read_each(["a", "bad1", "bad2"], _read, skipped, strict=True)
    assert next(reads) == ("a", "A")
    with pytest.raises(PneumoError, match=rf"^cannot decode bad1 \({STRICT_NOTE}\)$"):
        next(reads)
    assert skipped == []


def test_other_errors_are_not_swallowed() -> None:
    def broken(item: str) -> str:
        raise ValueError("a bug")

    with pytest.raises(ValueError, match="a bug"):
        list(read_each(["a"], broken, []))


def test_an_item_is_read_only_when_its_turn_comes() -> None:
    """Lazy, however long the source: a batch at a time holds only that batch decoded."""
    seen: list[int] = []

    def counting(item: int) -> int:
        seen.append(item)
        return item

    skipped: list[tuple[str, str]] = []
    reads = read_each(iter(range(10**9)), counting, skipped)
    assert [next(reads) for _ in range(3)] == [(0, 0), (1, 1), (2, 2)]
    assert seen == [0, 1, 2]


def test_a_thread_pool_reads_in_parallel_and_keeps_the_order(tmp_path: Path) -> None:
    films = pick("NORMAL", 4)
    broken = tmp_path / "broken.jpeg"
    broken.write_bytes(b"\xff\xd8\xff not a jpeg")
    paths = [films[0], broken, *films[1:]]
    skipped: list[tuple[str, str]] = []
    with ThreadPoolExecutor(2) as pool:
        read = list(read_each(paths, lambda p: load_image(p, 32), skipped, apply=pool.map))
    assert [path for path, _ in read] == films and all(image.shape == (32, 32) for _, image in read)
    assert [name for name, _ in skipped] == [str(broken)] and str(broken) in skipped[0][1]
