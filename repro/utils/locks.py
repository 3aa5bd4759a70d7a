"""Advisory directory locks: one process at a time writes a run directory.

:func:`directory_lock` takes an exclusive, non-blocking ``fcntl.flock`` on ``<directory>/.lock``. The kernel
releases it when the process ends, however it ends (SIGKILL included), so a killed run never leaves a lock that
blocks the next one; a lock file left behind by a killed run is simply locked again. A second process asking for the
same directory gets :class:`DirectoryLockedError` at once, naming the directory and the holder's pid.

The lock file is the one file of the suite that is not written through :mod:`repro.utils.atomic`: it must keep
its inode while it is locked. It holds only the holder's pid, for the error message. On a clean exit the file is
removed while still locked; a process that locked the old inode in the meantime notices that the path no longer
leads to it and locks the new file instead.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

__all__ = ["LOCK_NAME", "DirectoryLockedError", "directory_lock"]

LOCK_NAME = ".lock"


class DirectoryLockedError(RuntimeError):
    """Another process holds the lock of a directory."""

    def __init__(self, directory: Path, holder: str | None, what: str) -> None:
        who = f"pid {holder}" if holder else "another process"
        super().__init__(
            f"{directory} is in use by {who} (lock {directory / LOCK_NAME}): another {what} is writing it; "
            "wait for it to finish or use another directory"
        )
        self.directory = directory
        self.holder = holder


def _holder(path: Path) -> str | None:
    with contextlib.suppress(OSError, UnicodeDecodeError):
        text = path.read_text().strip()
        return text if text.isdigit() else None
    return None


def _acquire(path: Path, what: str) -> int:
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise DirectoryLockedError(path.parent, _holder(path), what) from None
        try:
            same_file = os.fstat(fd).st_ino == os.stat(path).st_ino
        except FileNotFoundError:
            same_file = False
        if same_file:
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}\n".encode())
            return fd
        os.close(fd)  # the holder removed the file as we locked it: lock the new one


@contextlib.contextmanager
def directory_lock(directory: str | os.PathLike, *, what: str = "run") -> Iterator[Path]:
    """Hold ``<directory>/.lock`` exclusively for the block (the directory is created if needed).

    ``what`` names the kind of writer in the error message (``"repro train"``). Raises
    :class:`DirectoryLockedError` at once when another process holds it.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / LOCK_NAME
    fd = _acquire(path, what)
    try:
        yield path
    finally:
        with contextlib.suppress(OSError):
            path.unlink()
        os.close(fd)
