"""One writer per output: an advisory lock in a file beside the output, naming who holds it.

Two `predict-archive` runs with the same `--out` would otherwise both append to it (81 rows for 40
films). The lock is the kernel's (`flock`), so a killed process never leaves it held; the small
`.NAME.lock` file it lives in is removed when the writer finishes.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

from pneumo.errors import PneumoError

try:
    import fcntl
except ImportError:  # Windows: no advisory locks; outputs are not guarded there
    fcntl = None  # type: ignore[assignment]

__all__ = ["OutputLock"]


class OutputLock:
    """Held while one process writes `target`; `acquire` refuses at once when another holds it."""

    def __init__(self, fd: int | None, path: Path) -> None:
        self._fd, self.path = fd, path

    @classmethod
    def acquire(cls, target: Path, what: str = "the output") -> OutputLock:
        path = target.with_name(f".{target.name}.lock")
        if fcntl is None:
            return cls(None, path)
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise PneumoError(f"cannot create the lock file {path} for {what} {target}: {exc.strerror or exc}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = os.pread(fd, 200, 0).decode("utf-8", "replace").strip() or "another process"
            os.close(fd)
            raise PneumoError(
                f"{what} {target} is being written by another pneumo ({holder}); wait for it to finish, or write to another file"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"process {os.getpid()} on {socket.gethostname()}".encode(), 0)
        return cls(fd, path)

    def release(self) -> None:
        if self._fd is None:
            return
        try:
            self.path.unlink(missing_ok=True)
        except OSError:
            pass  # a read-only folder after the fact: the lock itself still goes with the descriptor
        os.close(self._fd)
        self._fd = None

    def __enter__(self) -> OutputLock:
        return self

    def __exit__(self, *_: object) -> None:
        self.release()
