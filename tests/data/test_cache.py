"""pneumo.data.cache: decode once per (file contents, size), rebuild on any change or damage."""

from __future__ import annotations

import errno
import os
import shutil
import time
import warnings
from pathlib import Path

import numpy as np
import pytest

from pneumo.data import cache as cache_module
from pneumo.data.cache import (
    CacheWarning,
    cache_dir,
    cached_images,
    data_fingerprint,
    decode_dataset,
    remove_stale_cache_temps,
    usable_cache,
)
from pneumo.data.layout import Record, discover
from pneumo.data.preprocess import load_image
from pneumo.errors import PneumoError
from pneumo.utils.atomic import WriteError
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


def test_changed_file_changes_fingerprint_and_rebuilds(records: list[Record], folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
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


def test_same_bytes_elsewhere_share_the_cache(records: list[Record], tmp_path: Path, folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
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


def test_a_dangling_link_or_a_link_loop_in_a_dataset_is_skipped_and_said(records: list[Record], folder: Path) -> None:
    dangling, loop = records[1].path, records[4].path
    dangling.unlink()
    dangling.symlink_to(dangling.parent / "gone.jpeg")
    loop.unlink()
    loop.symlink_to(loop)
    dataset = decode_dataset(records, SIZE, folder=folder, progress=False)
    assert [(p, m.split(": ", 1)[1]) for p, m in dataset.skipped] == [
        (str(dangling), "No such file or directory"),
        (str(loop), "Too many levels of symbolic links"),
    ]
    assert len(dataset.records) == len(records) - 2


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


# --- a cache that is a file, or cannot be written; leftovers of killed writes ---


def test_a_cache_that_is_a_file_is_refused_before_any_work(records: list[Record], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "a-file").write_text("not a folder")
    monkeypatch.setenv("PNEUMO_CACHE", str(tmp_path / "a-file"))
    _no_decoding(monkeypatch)
    with pytest.raises(
        PneumoError,
        match=r"^the image cache .*a-file \(\$PNEUMO_CACHE\) is not usable: .*a-file is a file, not a folder; point \$PNEUMO_CACHE at a folder, or unset it$",
    ):
        decode_dataset(records, SIZE, progress=False)
    with pytest.raises(
        PneumoError, match=r"\(the config's cache_dir\) is not usable: .*a-file is a file, not a folder; set cache_dir to a folder"
    ):
        data_fingerprint(records, tmp_path / "a-file" / "sub")
    with pytest.raises(PneumoError, match=r"/dev/null is a device, not a folder"):
        usable_cache("/dev/null")
    # the name people guess is honoured too, and named in the message
    monkeypatch.delenv("PNEUMO_CACHE")
    monkeypatch.setenv("PNEUMO_CACHE_DIR", str(tmp_path / "a-file"))
    with pytest.raises(PneumoError, match=r"\(\$PNEUMO_CACHE_DIR\) is not usable: .*; point \$PNEUMO_CACHE_DIR at a folder, or unset it$"):
        decode_dataset(records, SIZE, progress=False)
    assert (tmp_path / "a-file").read_text() == "not a folder"


def _read_only(monkeypatch: pytest.MonkeyPatch, folder: Path) -> None:
    """The cache folder as a read-only mount shows it (root ignores chmod, so this is simulated)."""

    def refuse(path: object, what: str = "") -> Path:
        raise WriteError(errno.EROFS, f"{folder} is on a read-only file system", str(path))

    monkeypatch.setattr(cache_module, "output_folder", refuse)


def test_a_read_only_cache_is_read_and_warned_about_and_the_run_goes_on(
    records: list[Record], folder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = decode_dataset(records[:6], SIZE, folder=folder, progress=False)  # filled while writable
    before = {p.name: p.stat().st_mtime_ns for p in folder.iterdir()}
    _read_only(monkeypatch, folder)
    _no_decoding(monkeypatch)
    with pytest.warns(CacheWarning, match=r"the image cache .* cannot be written \(.*read-only file system\); decoding without caching"):
        again = decode_dataset(records[:6], SIZE, folder=folder, progress=False)  # a hit: read, not decoded
    assert np.array_equal(again.images, first.images) and again.fingerprint == first.fingerprint
    monkeypatch.undo()
    _read_only(monkeypatch, folder)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        missed = decode_dataset(records, SIZE, folder=folder, progress=False)  # a miss: decoded, not written
    assert len(missed.images) == len(records)
    assert not [w for w in caught if w.category is CacheWarning]  # said once per process, not once per call
    assert {p.name: p.stat().st_mtime_ns for p in folder.iterdir()} == before  # nothing written


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into a read-only folder anyway; the test above simulates it")
def test_a_cache_folder_without_write_permission_is_warned_about(records: list[Record], folder: Path) -> None:
    folder.mkdir()
    folder.chmod(0o555)
    try:
        with pytest.warns(CacheWarning, match=r"not writable \(Permission denied\)"):
            dataset = decode_dataset(records[:4], SIZE, folder=folder, progress=False)
        assert len(dataset.images) == 4 and list(folder.iterdir()) == []
    finally:
        folder.chmod(0o755)


def test_a_full_disk_while_caching_is_a_warning_and_leaves_no_temporary(
    records: list[Record], folder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = cache_module._save_npy

    def disk_full(path: Path, images: np.ndarray) -> None:
        real(path, images[:1])  # part of it written, then the disk is full
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(cache_module, "_save_npy", disk_full)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        dataset = decode_dataset(records[:4], SIZE, folder=folder, progress=False)
    assert len(dataset.images) == 4
    assert next(str(w.message) for w in caught if w.category is CacheWarning).startswith(
        f"the image cache {folder} cannot be written (No space left on device)"
    )
    assert not _cache_files(folder) and not [p for p in folder.iterdir() if p.name.endswith(".tmp")]
    monkeypatch.undo()
    cached_images(records[:4], SIZE, folder=folder, progress=False)  # the next run with room caches it
    assert len(_cache_files(folder)) == 1


def test_stale_temporary_files_in_the_cache_are_removed_fresh_ones_kept(folder: Path) -> None:
    folder.mkdir()
    old, fresh = folder / ".images-ab-64.npy.abcd1234.tmp", folder / ".images-cd-64.npy.efgh5678.tmp"
    old.write_bytes(b"x" * 1000)
    fresh.write_bytes(b"y")
    someone_elses = folder / ".tmpAb12Cd"  # the cache may be a folder other programs write temporary files in too
    someone_elses.write_bytes(b"z")
    hours_ago = time.time() - 2 * 3600
    for path in (old, someone_elses):
        os.utime(path, (hours_ago, hours_ago))
    assert remove_stale_cache_temps(folder) == (1, 1000)
    assert sorted(p.name for p in folder.iterdir()) == sorted([fresh.name, someone_elses.name])


def test_a_pipe_named_like_an_image_in_a_dataset_is_skipped_not_waited_on(tmp_path: Path) -> None:
    from pneumo.data.layout import discover
    from tests.conftest import copy_class_folders, deadline

    root = copy_class_folders(tmp_path / "data", {"NORMAL": 2, "PNEUMONIA": 2})
    os.mkfifo(root / "NORMAL" / "pipe.jpeg")

    with deadline(20):
        dataset = decode_dataset(discover(root).split(None), 32, tmp_path / "cache", progress=False)
    assert len(dataset.records) == 4 and [(Path(p).name, "named pipe" in m) for p, m in dataset.skipped] == [("pipe.jpeg", True)]
