"""pneumo.data.cache: decode once per (file contents, size), rebuild on any change or damage."""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from pneumo.data import cache as cache_module
from pneumo.data.cache import cache_dir, cached_images, decode_dataset
from pneumo.data.layout import Record, discover
from pneumo.data.preprocess import load_image
from pneumo.errors import PneumoError
from tests.conftest import copy_class_folders

SIZE = 48


@pytest.fixture
def images_dir(tmp_path: Path, shared_data: Path) -> Path:
    """A private copy of real images, so the test may edit them."""
    return copy_class_folders(tmp_path / "images", {"NORMAL": 6, "PNEUMONIA": 6}, offset=2)


@pytest.fixture
def records(images_dir: Path) -> list[Record]:
    return discover(images_dir).split(None)


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    return tmp_path / "cache"


def _cache_files(folder: Path) -> list[Path]:
    return sorted(folder.glob("images-*.npy"))


def _no_decoding(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(args):
        raise AssertionError(f"decoded {args[0]} again")

    monkeypatch.setattr(cache_module, "_decode", refuse)


def _count_decoding(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    seen: list[Path] = []
    real = cache_module._decode

    def counting(args):
        seen.append(args[0])
        return real(args)

    monkeypatch.setattr(cache_module, "_decode", counting)
    return seen


def test_cached_images_shape_and_content(records: list[Record], folder: Path) -> None:
    images, key = cached_images(records, SIZE, folder=folder, progress=False)
    assert images.shape == (len(records), SIZE, SIZE) and images.dtype == np.uint8
    assert isinstance(key, str) and len(key) == 32
    for i in (0, 5, len(records) - 1):  # in record order, as the model would see each file
        assert np.array_equal(images[i], load_image(records[i].path, SIZE))
    assert len(_cache_files(folder)) == 1


def test_second_call_does_not_decode(records: list[Record], folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    first, key = cached_images(records, SIZE, folder=folder, progress=False)
    _no_decoding(monkeypatch)
    second, key2 = cached_images(records, SIZE, folder=folder, progress=False)
    assert key2 == key
    assert np.array_equal(second, first)


def test_other_size_is_another_cache(records: list[Record], folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    small, key = cached_images(records, SIZE, folder=folder, progress=False)
    seen = _count_decoding(monkeypatch)
    big, key_big = cached_images(records, 2 * SIZE, folder=folder, progress=False)
    assert big.shape == (len(records), 2 * SIZE, 2 * SIZE)
    assert len(seen) == len(records)
    assert key_big == key  # the fingerprint identifies the data, not the size
    assert len(_cache_files(folder)) == 2


def test_order_matters(records: list[Record], folder: Path) -> None:
    forward, key = cached_images(records, SIZE, folder=folder, progress=False)
    backward, key_back = cached_images(records[::-1], SIZE, folder=folder, progress=False)
    assert key_back != key
    assert np.array_equal(backward, forward[::-1])


def test_changed_file_changes_fingerprint_and_rebuilds(
    records: list[Record], folder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    before, key = cached_images(records, SIZE, folder=folder, progress=False)
    # replace one image by another real image (a different radiograph under the same name)
    shutil.copy(records[1].path, records[0].path)
    seen = _count_decoding(monkeypatch)
    after, key2 = cached_images(records, SIZE, folder=folder, progress=False)
    assert key2 != key
    assert len(seen) == len(records)  # rebuilt, not served from the stale cache
    assert np.array_equal(after[0], after[1])
    assert not np.array_equal(after[0], before[0])
    assert np.array_equal(after[2:], before[2:])
    assert len(_cache_files(folder)) == 2


def test_same_bytes_elsewhere_share_the_cache(
    records: list[Record], tmp_path: Path, folder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first, key = cached_images(records, SIZE, folder=folder, progress=False)
    moved = tmp_path / "moved"
    shutil.copytree(records[0].path.parents[1], moved)
    again = discover(moved).split(None)
    _no_decoding(monkeypatch)
    second, key2 = cached_images(again, SIZE, folder=folder, progress=False)
    assert key2 == key and np.array_equal(second, first)


@pytest.mark.parametrize(
    "damage",
    [
        pytest.param(lambda p: p.write_bytes(b"not a numpy file at all" * 4), id="garbage"),
        pytest.param(lambda p: p.write_bytes(p.read_bytes()[:-500]), id="truncated"),
        pytest.param(lambda p: np.save(p, np.zeros((2, SIZE, SIZE), np.uint8)), id="wrong-shape"),
        pytest.param(lambda p: np.save(p, np.zeros((12, SIZE, SIZE), np.float32)), id="wrong-dtype"),
        pytest.param(lambda p: p.write_bytes(b""), id="empty"),
    ],
)
def test_damaged_cache_is_rebuilt(records: list[Record], folder: Path, monkeypatch: pytest.MonkeyPatch, damage) -> None:
    good, key = cached_images(records, SIZE, folder=folder, progress=False)
    (target,) = _cache_files(folder)
    damage(target)
    seen = _count_decoding(monkeypatch)
    rebuilt, key2 = cached_images(records, SIZE, folder=folder, progress=False)
    assert key2 == key
    assert np.array_equal(rebuilt, good)
    assert len(seen) == len(records)
    assert np.array_equal(np.load(target), good)  # the damaged file was replaced


def test_unreadable_image_raises_naming_it(records: list[Record], folder: Path) -> None:
    bad = records[3].path
    bad.write_bytes(bad.read_bytes()[:300])
    with pytest.raises(PneumoError) as err:
        cached_images(records, SIZE, folder=folder, progress=False)
    assert str(bad) in str(err.value) and f"1 of {len(records)} images cannot be read" in str(err.value)


def test_unreadable_images_are_skipped_and_remembered(records: list[Record], folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for i in (2, 5):
        records[i].path.write_bytes(records[i].path.read_bytes()[:300])
    dataset = decode_dataset(records, SIZE, folder=folder, progress=False)
    assert [p for p, _ in dataset.skipped] == [str(records[2].path), str(records[5].path)]
    assert all("truncated" in m or "damaged" in m for _, m in dataset.skipped)
    assert dataset.records == [r for i, r in enumerate(records) if i not in (2, 5)]
    assert dataset.images.shape == (len(records) - 2, SIZE, SIZE)
    assert np.array_equal(dataset.images[2], load_image(records[3].path, SIZE))
    _no_decoding(monkeypatch)  # a warm start knows which files to skip without decoding them
    warm = decode_dataset(records, SIZE, folder=folder, progress=False)
    assert warm.skipped == dataset.skipped and np.array_equal(warm.images, dataset.images)
    with pytest.raises(PneumoError, match="2 of"):
        decode_dataset(records, SIZE, folder=folder, progress=False, strict=True)


def test_a_dataset_with_no_readable_image_is_an_error(records: list[Record], folder: Path) -> None:
    for r in records[:3]:
        r.path.write_bytes(b"not an image")
    with pytest.raises(PneumoError, match="3 of 3 images cannot be read"):
        decode_dataset(records[:3], SIZE, folder=folder, progress=False)


def test_missing_image_raises_naming_it(records: list[Record], folder: Path) -> None:
    gone = records[-1].path
    gone.unlink()
    with pytest.raises(PneumoError, match="cannot read") as err:
        cached_images(records, SIZE, folder=folder, progress=False)
    assert gone.name in str(err.value)


def test_cache_dir_follows_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PNEUMO_CACHE", str(tmp_path / "env"))
    assert cache_dir() == tmp_path / "env"
    assert cache_dir(tmp_path / "given") == tmp_path / "given"
    monkeypatch.delenv("PNEUMO_CACHE")
    assert cache_dir() == Path.home() / ".cache" / "pneumo"


def test_default_folder_is_the_environment_one(records: list[Record], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PNEUMO_CACHE", str(tmp_path / "env"))
    cached_images(records[:4], SIZE, progress=False)
    assert len(_cache_files(tmp_path / "env")) == 1


def test_warm_start_reads_no_image_bytes(records: list[Record], folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    first, key = cached_images(records, SIZE, folder=folder, progress=False)

    def refuse(path: Path) -> str:
        raise AssertionError(f"hashed {path} again although it did not change")

    monkeypatch.setattr(cache_module, "_digest", refuse)
    again, key_again = cached_images(records, SIZE, folder=folder, progress=False)
    assert key_again == key and np.array_equal(again, first)


def test_an_edited_file_is_hashed_again_even_with_the_index(records: list[Record], folder: Path) -> None:
    import os

    _, key = cached_images(records, SIZE, folder=folder, progress=False)
    victim = records[3].path
    replacement = records[9].path.read_bytes()
    victim.write_bytes(replacement)
    os.utime(victim, ns=(1, 1))  # a different modification time, as any edit gives
    images, new_key = cached_images(records, SIZE, folder=folder, progress=False)
    assert new_key != key
    assert np.array_equal(images[3], images[9])


def test_a_damaged_digest_index_only_costs_a_rehash(records: list[Record], folder: Path) -> None:
    _, key = cached_images(records, SIZE, folder=folder, progress=False)
    (folder / "digests.json").write_text("{not json")
    assert cached_images(records, SIZE, folder=folder, progress=False)[1] == key
