"""Temporary files that an interrupted write left behind: recognised by the names pneumo's writes
give them (`atomic.write_temp`'s, safetensors' beside a checkpoint) and removed, so the files of
runs killed mid-write do not pile up on the disk."""

from __future__ import annotations

import fnmatch
import os
import re
import stat
import time
from pathlib import Path

__all__ = ["is_temp_name", "remove_stale_temps"]

_TEMP = re.compile(r"\.(.+)\.[a-z0-9_]{8}\.tmp")  # write_temp's names: mkstemp(prefix=".{name}.", suffix=".tmp")
_SAFETENSORS_TEMP = re.compile(r"\.tmp[A-Za-z0-9]{6}")  # safetensors' save_file writes one of these beside its target


def is_temp_name(name: str) -> bool:
    """True for the name of a temporary file pneumo's writes make (`write_temp`'s, or safetensors'
    beside a checkpoint); a process killed mid-write leaves one behind."""
    return bool(_TEMP.fullmatch(name) or _SAFETENSORS_TEMP.fullmatch(name))


def remove_stale_temps(
    folder: str | Path, recursive: bool = False, min_age_s: float = 0.0, targets: tuple[str, ...] = ("*",), safetensors: bool = True
) -> tuple[int, int]:
    """Delete the temporary files an interrupted write left in `folder` (and its sub-folders when
    `recursive`, never following symlinks); returns (files removed, bytes freed).

    Only regular files named as pneumo's writes name them are touched: `write_temp`'s for a
    target matching one of `targets` (glob patterns: ("images-*",) for `.images-....npy.x1y2z3w4.tmp`),
    and with `safetensors` also the `.tmpXXXXXX` files safetensors writes beside a checkpoint
    (leave that off in a folder other programs may use: it is the Rust tempfile crate's default
    name). `min_age_s` spares files modified more recently, for a folder that another process
    may be writing in at the same time (the shared image cache).
    """
    folder = Path(folder)
    if not folder.is_dir():
        return 0, 0
    removed, freed, now = 0, 0, time.time()
    for here, dirs, files in os.walk(folder, followlinks=False):
        if not recursive:
            dirs.clear()
        for name in files:
            ours = _TEMP.fullmatch(name)
            if not (
                (ours and any(fnmatch.fnmatchcase(ours.group(1), t) for t in targets))
                or (safetensors and _SAFETENSORS_TEMP.fullmatch(name))
            ):
                continue
            path = Path(here) / name
            try:
                st = os.lstat(path)
                if not stat.S_ISREG(st.st_mode) or now - st.st_mtime < min_age_s:
                    continue
                path.unlink()
            except OSError:
                continue  # gone already, or not ours to remove: nothing to report
            removed, freed = removed + 1, freed + st.st_size
    return removed, freed
