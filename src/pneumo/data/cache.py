"""Decode a dataset once: one uint8 [N, S, S] array on disk per (file contents, size).

The key hashes every file's bytes, so an edited, added or removed image makes a new
cache instead of a stale one; a warm load is one stat per image and one file read.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np

from pneumo.data.io import decode_image_with_info, read_image_bytes
from pneumo.data.pixels import ImageInfo
from pneumo.data.layout import Record
from pneumo.data.preprocess import PREPROCESS_VERSION, resize_image
from pneumo.data.unreadable import read_each
from pneumo.errors import PneumoError
from pneumo.utils.atomic import WriteError, atomic_write
from pneumo.utils.output_checks import output_folder
from pneumo.utils.temp_files import remove_stale_temps
from pneumo.utils.progress import progress_bar

__all__ = [
    "cache_dir",
    "fingerprint",
    "data_fingerprint",
    "file_digests",
    "cached_images",
    "decode_dataset",
    "DecodedDataset",
    "CacheWarning",
    "usable_cache",
    "remove_stale_cache_temps",
    "STALE_TEMP_AGE_S",
]

# a temporary file in the cache this long untouched is an orphan of a killed process, not another
# process's write in progress (the cache is shared; a write of even a large array takes seconds)
STALE_TEMP_AGE_S = 3600.0


class CacheWarning(UserWarning):
    """The image cache cannot be written: images are decoded without caching them."""


def cache_dir(configured: str | Path | None = None) -> Path:
    """The cache folder: the configured one, else $PNEUMO_CACHE (or $PNEUMO_CACHE_DIR, the name
    people guess), else ~/.cache/pneumo."""
    folder = Path(configured or os.environ.get("PNEUMO_CACHE") or os.environ.get("PNEUMO_CACHE_DIR") or Path.home() / ".cache" / "pneumo")
    return folder.expanduser()


def usable_cache(configured: str | Path | None = None) -> bool:
    """Whether the cache folder can be written; checked before any work.

    A cache path that is a file (or has a file in the way) is a mistake in a setting and raises
    PneumoError naming the setting. A folder that cannot be written (read-only, no permission) is
    warned about (`CacheWarning`) and gives False: what is cached there is still read, nothing is
    written, and the run goes on, only without the speed-up the cache gives (a read-only cache may
    be a shared one, filled by someone else, and no result depends on the cache).
    """
    folder = cache_dir(configured)
    try:
        output_folder(folder, "the image cache")
    except WriteError as exc:
        if exc.errno == errno.ENOTDIR:
            variable = next((f"${v}" for v in ("PNEUMO_CACHE", "PNEUMO_CACHE_DIR") if os.environ.get(v)), None)
            setting = "the config's cache_dir" if configured else variable or "the default cache folder"
            fix = {"the config's cache_dir": "set cache_dir to a folder, or to '' for the default"}
            if variable:
                fix[variable] = f"point {variable} at a folder, or unset it"
            raise PneumoError(
                f"the image cache {folder} ({setting}) is not usable: {exc.strerror}; "
                + fix.get(setting, "move that file, or point $PNEUMO_CACHE at a folder")
            ) from None
        _cache_warning(folder, exc.strerror or str(exc))
        return False
    return True


_warned: set[str] = set()  # cache folders already warned about in this process: once is enough


def _cache_warning(folder: Path, why: str) -> None:
    if str(folder) in _warned:
        return
    _warned.add(str(folder))
    warnings.warn(
        f"the image cache {folder} cannot be written ({why}); decoding without caching, so the next run decodes again: "
        "set PNEUMO_CACHE (or the config's cache_dir) to a writable folder",
        CacheWarning,
        stacklevel=3,
    )


def _store(path: Path, content: object) -> bool:
    """Write a cache file; a disk that fails (full, read-only) is warned about, not fatal: the images are in memory."""
    try:
        atomic_write(path, content)  # type: ignore[arg-type]
    except WriteError as exc:
        _cache_warning(path.parent, exc.strerror or str(exc))
        return False
    return True


def remove_stale_cache_temps(configured: str | Path | None = None) -> tuple[int, int]:
    """Delete temporary files that killed processes left in the cache (untouched for `STALE_TEMP_AGE_S`);
    returns (files, bytes)."""
    # the cache's own names only, and not safetensors' `.tmpXXXXXX`: the cache may be a folder other programs use too
    return remove_stale_temps(cache_dir(configured), min_age_s=STALE_TEMP_AGE_S, targets=("images-*", "digests.json"), safetensors=False)


def _digest(path: Path) -> str:
    try:
        return hashlib.blake2b(read_image_bytes(path), digest_size=16).hexdigest()  # never blocks on a pipe named .jpeg
    except OSError as exc:
        raise PneumoError(f"cannot read {path}: {exc.strerror or exc}") from None


def _readable_digest(path: Path) -> str | None:
    try:
        return _digest(path)
    except PneumoError:  # a pipe or device named like an image, a file that cannot be opened
        return None


def _stat(path: Path) -> tuple[int, int] | None:
    """Size and modification time; None for what cannot be stat'ed (a dangling link, a link loop),
    which reading then fails on too, so decoding lists it as skipped with the reason."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_size, st.st_mtime_ns


def file_digests(paths: Sequence[Path], workers: int = 0, index_folder: str | Path | None = None, write_index: bool = True) -> list[str]:
    """Content hashes of files, read in parallel.

    With `index_folder`, a small index there remembers each file's (size, mtime, digest), so a
    file whose size and modification time are unchanged is not read again: a warm start
    costs one stat per file instead of reading the whole dataset. `write_index=False` reads the
    index without updating it (a cache that cannot be written).
    """
    index_path = Path(index_folder) / "digests.json" if index_folder else None
    index: dict[str, list] = {}
    if index_path and index_path.exists():
        try:
            index = json.loads(index_path.read_text())
        except (OSError, ValueError):
            index = {}  # a damaged index only costs a re-hash
    keys = [os.path.abspath(p) for p in paths]
    stats = [_stat(p) for p in paths]
    digests = [
        entry[2] if stat is not None and (entry := index.get(key)) and entry[:2] == list(stat) else None for key, stat in zip(keys, stats)
    ]
    todo = [i for i, d in enumerate(digests) if d is None]
    if todo:
        with ThreadPoolExecutor(max_workers=workers or os.cpu_count() or 1) as pool:
            for i, digest in zip(todo, pool.map(_readable_digest, [paths[i] for i in todo])):
                if digest is None or stats[i] is None:  # decoding lists it as skipped, saying why; nothing remembered
                    digests[i] = f"unreadable:{keys[i]}"
                    continue
                digests[i] = digest
                index[keys[i]] = [*stats[i], digest]
        if index_path and write_index:
            _store(index_path, json.dumps(index))
    return digests  # type: ignore[return-value]


def _save_npy(path: Path, images: np.ndarray) -> None:
    with path.open("wb") as fh:  # through a handle: np.save given a name would add ".npy" to it
        np.save(fh, images)


def fingerprint(digests: Sequence[str], size: int | None = None) -> str:
    """One hash for an ordered list of file digests (and a size): the dataset's identity."""
    h = hashlib.blake2b(digest_size=16)
    h.update(f"v{PREPROCESS_VERSION}:{size}".encode())
    for d in digests:
        h.update(d.encode())
    return h.hexdigest()


def _decode(args: tuple[Path, int]) -> tuple[np.ndarray, ImageInfo]:
    """The image resized with what the file was; a PneumoError naming the file when it cannot be read."""
    path, size = args
    try:
        pixels, info = decode_image_with_info(read_image_bytes(path), str(path), size_hint=size)
    except OSError as exc:
        raise PneumoError(f"cannot read {path}: {exc.strerror or exc}") from None
    return resize_image(pixels, size), info


@dataclass
class DecodedDataset:
    """The readable records with their images, and the files that were skipped (with why)."""

    records: list[Record]
    images: np.ndarray  # uint8 [len(records), size, size]
    fingerprint: str  # of every file's bytes, skipped ones included, in order
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (path, message)
    infos: list[ImageInfo] = field(default_factory=list)  # what each file was (format, size, DICOM tags), for the input checks


def _unreadable(message_by_path: list[tuple[str, str]], total: int) -> PneumoError:
    first = "; ".join(message for _, message in message_by_path[:3])
    more = f" (and {len(message_by_path) - 3} more)" if len(message_by_path) > 3 else ""
    return PneumoError(f"{len(message_by_path)} of {total} images cannot be read: {first}{more}")


def data_fingerprint(records: Sequence[Record], folder: str | Path | None = None, workers: int = 0) -> str:
    """The fingerprint `decode_dataset` gives these records (their files' bytes, in order), without decoding them."""
    writable = usable_cache(folder)
    return fingerprint(file_digests([r.path for r in records], workers, index_folder=cache_dir(folder), write_index=writable))


def decode_dataset(
    records: Sequence[Record],
    size: int,
    folder: str | Path | None = None,
    workers: int = 0,
    progress: bool = True,
    strict: bool = False,
) -> DecodedDataset:
    """Every record's image at `size`, decoded at most once per content and size (see `cached_images`).

    A file that cannot be read or decoded is skipped and listed in `skipped`, so one damaged
    file in an archive does not stop a run; with `strict`, it is an error instead. The cache
    remembers which files were skipped, so a warm start skips them without reading them.
    """
    writable = usable_cache(folder)  # before any work: a cache path that is a file is refused here
    paths = [r.path for r in records]
    digests = file_digests(paths, workers, index_folder=cache_dir(folder), write_index=writable)
    key = fingerprint(digests, size)
    target = cache_dir(folder) / f"images-{key}-{size}.npy"
    skipped_file, infos_file = target.with_suffix(".skipped.json"), target.with_suffix(".infos.json")
    bad: dict[int, str] | None = None
    images: np.ndarray | None = None
    infos: list[ImageInfo] = []
    if target.exists():
        try:
            bad = {int(i): m for i, m in json.loads(skipped_file.read_text()).items()} if skipped_file.exists() else {}
            infos = [ImageInfo(**d) for d in json.loads(infos_file.read_text())]
            images = np.load(target)
            if images.shape != (len(paths) - len(bad), size, size) or images.dtype != np.uint8 or len(infos) != len(images):
                images = None
        except (OSError, ValueError, EOFError, TypeError):
            images = None  # a damaged, empty or older cache entry is rebuilt below
    if images is None:
        decoded: list[np.ndarray] = []
        infos = []
        unreadable: list[tuple[str, str]] = []  # by index, the way .skipped.json keeps them
        with ThreadPoolExecutor(max_workers=workers or os.cpu_count() or 1) as pool:

            def in_parallel(read: Callable, items: Iterable[int]) -> Iterable:
                return progress_bar(pool.map(read, items), total=len(paths), description=f"decoding {size}px", enabled=progress)

            for _, (image, info) in read_each(range(len(paths)), lambda i: _decode((paths[i], size)), unreadable, apply=in_parallel):
                decoded.append(image)
                infos.append(info)
        bad = {int(i): message for i, message in unreadable}
        images = np.stack(decoded) if decoded else np.zeros((0, size, size), dtype=np.uint8)
        entry = [
            (skipped_file, json.dumps(bad)),
            (infos_file, json.dumps([info.to_dict() for info in infos])),
            (target, lambda tmp: _save_npy(tmp, images)),
        ]
        for path, content in entry if writable else []:  # the array last: its presence says the entry is whole
            if not _store(path, content):
                break
    assert bad is not None
    skipped = [(str(paths[i]), message) for i, message in sorted(bad.items())]
    if skipped and (strict or len(skipped) == len(paths)):
        raise _unreadable(skipped, len(paths))
    kept = [r for i, r in enumerate(records) if i not in bad]
    return DecodedDataset(kept, images, fingerprint(digests), skipped, infos)


def cached_images(
    records: Sequence[Record],
    size: int,
    folder: str | Path | None = None,
    workers: int = 0,
    progress: bool = True,
) -> tuple[np.ndarray, str]:
    """uint8 [N, size, size] for the records, in order, decoded at most once per content and size.

    Returns the images and the data fingerprint (a hash of every file's bytes, in order). Every
    file must be readable (a PneumoError names the ones that are not); `decode_dataset` skips them.

    Example:
        >>> images, key = cached_images(discover("../shared/data").split("train")[:8], 180)
        >>> images.shape, images.dtype
        ((8, 180, 180), dtype('uint8'))
    """
    dataset = decode_dataset(records, size, folder, workers, progress, strict=True)
    return dataset.images, dataset.fingerprint
