"""Injected faults for processes where a real one cannot be arranged: a disk that fills up.

:class:`FullDisk` makes every file opened for writing under a folder fail with ``OSError(ENOSPC)`` once the folder
would hold more than a byte budget, as a small filesystem would; everything above it (``atomic_open``,
``torch.save``, ``json``) sees exactly the error a full disk gives. Tests use it in-process; ``python -m
repro.faults.workload --full-disk ROOT:BYTES ...`` uses it in a subprocess when no tmpfs can be mounted.
"""

from __future__ import annotations

import builtins
import errno
import os
from pathlib import Path
from typing import IO, Any

__all__ = ["FullDisk"]


def _usage(root: Path, skip: Path | None = None) -> int:
    total = 0
    for folder, _, names in os.walk(root):
        for name in names:
            path = Path(folder) / name
            if path != skip:
                try:
                    total += path.lstat().st_size
                except FileNotFoundError:
                    continue
    return total


class _Counted:
    """A file object whose writes fail with ENOSPC past the disk's budget."""

    def __init__(self, handle: IO, disk: FullDisk, path: Path) -> None:
        self._handle, self._disk, self._path = handle, disk, path
        self._base = _usage(disk.root, skip=path)
        self._written = 0

    def write(self, data: Any) -> int:
        size = len(data) if not isinstance(data, memoryview) else data.nbytes
        if self._base + self._written + size > self._disk.budget:
            self._disk.failures += 1
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(self._path))
        self._written += size
        return self._handle.write(data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._handle, name)

    def __enter__(self) -> _Counted:
        return self

    def __exit__(self, *exc: Any) -> None:
        self._handle.close()

    def __iter__(self):
        return iter(self._handle)


class FullDisk:
    """While active, files under ``root`` may hold ``budget`` bytes in total; ``failures`` counts refused writes."""

    def __init__(self, root: str | os.PathLike, budget: int) -> None:
        self.root = Path(root).resolve()
        self.budget = int(budget)
        self.failures = 0
        self._open = builtins.open

    def _guarded_open(self, file: Any, mode: str = "r", *args: Any, **kwargs: Any) -> Any:
        handle = self._open(file, mode, *args, **kwargs)
        if isinstance(file, str | os.PathLike) and any(c in mode for c in "wax+"):
            path = Path(file).resolve()
            if path.is_relative_to(self.root):
                return _Counted(handle, self, path)
        return handle

    def __enter__(self) -> FullDisk:
        self.root.mkdir(parents=True, exist_ok=True)
        builtins.open = self._guarded_open
        return self

    def __exit__(self, *exc: Any) -> None:
        builtins.open = self._open
