"""Atomic file writes: the one way the suite writes a file that another stage, a resumed run or a user reads.

Every writer goes through :func:`atomic_open`: the data is written to a temporary file in the target's folder,
flushed and fsynced, then renamed over the target with :func:`os.replace`, and the folder is fsynced. A reader sees
either the previous complete file or the new complete one, never a half-written one, even after SIGKILL or a power
loss. When the write fails (disk full, permission, an exception in the caller's code) the temporary file is removed
and the previous file is left untouched; :class:`AtomicWriteError` says what happened and where.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

__all__ = [
    "AtomicWriteError",
    "atomic_directory",
    "atomic_open",
    "atomic_path",
    "remove_stale_temporaries",
    "write_bytes_atomic",
    "write_error",
    "write_json_atomic",
    "write_text_atomic",
]

# The temporary files of :func:`atomic_path`: ``.<target name>.<8 random characters>.tmp[<suffix>]``.
_TEMPORARY = re.compile(r"^\.(?P<target>.+)\.[a-z0-9_]{8}\.tmp(\.[A-Za-z0-9]+)?$")


class AtomicWriteError(OSError):
    """A file could not be written; the previous version of it (if any) is intact."""

    def __str__(self) -> str:
        return self.strerror or super().__str__()


def _fsync_dir(folder: Path) -> None:
    with contextlib.suppress(OSError):  # not every filesystem lets a directory be opened or synced
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _new_file_mode(path: Path) -> int:
    """The mode a plain ``open(path, "w")`` would give: the existing file's, else 0o666 minus the umask."""
    try:
        return path.stat().st_mode & 0o7777
    except OSError:
        umask = os.umask(0)
        os.umask(umask)
        return 0o666 & ~umask


def write_error(path: str | os.PathLike, exc: OSError) -> AtomicWriteError:
    """The error to raise when writing ``path`` failed with ``exc``: what happened, where, and what was kept."""
    path = Path(path)
    what = "no space left on the device" if exc.errno == errno.ENOSPC else (exc.strerror or str(exc))
    kept = "the previous file is intact" if path.is_file() else "nothing was written"
    return AtomicWriteError(exc.errno or 0, f"could not write {path}: {what}; {kept}")


def _os_error_behind(exc: BaseException) -> OSError | None:
    """``exc`` when it is an ``OSError``, or the ``OSError`` behind a library's ``RuntimeError`` (``torch.save``
    reports a full disk as ``RuntimeError: [enforce fail ...] unexpected pos``, raised while handling it)."""
    if isinstance(exc, OSError):
        return exc
    inner = exc.__cause__ or exc.__context__
    if isinstance(exc, RuntimeError) and isinstance(inner, OSError) and inner.errno:
        return inner
    return None


@contextlib.contextmanager
def _write_errors(path: Path) -> Iterator[None]:
    """Re-raise a failed write (an ``OSError``, or another exception caused by one) as :class:`AtomicWriteError`."""
    try:
        yield
    except AtomicWriteError:
        raise
    except Exception as exc:
        cause = _os_error_behind(exc)
        if cause is None:
            raise
        raise write_error(path, cause) from exc


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, *, suffix: str = "") -> Iterator[Path]:
    """A temporary path next to ``path``; renamed over ``path`` when the block ends without an exception.

    For writers that want a file name rather than a handle (``fig.savefig``, ffcv's writer). ``suffix`` keeps an
    extension that such writers look at (``.png``).
    """
    path = Path(path)
    tmp: Path | None = None
    try:
        with _write_errors(path):
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=f".tmp{suffix}")
            os.fchmod(fd, _new_file_mode(path))  # mkstemp creates 0600; a result file is as readable as any other
            os.close(fd)
            tmp = Path(name)
            yield tmp
            with open(tmp, "rb+") as handle:
                os.fsync(handle.fileno())
            os.replace(tmp, path)
            _fsync_dir(path.parent)
    finally:
        if tmp is not None:
            tmp.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "w", **kwargs: Any) -> Iterator[IO]:
    """``open(path, mode)`` that replaces ``path`` only once the block has completed (``mode``: ``w`` or ``wb``)."""
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_open writes whole files: mode must be 'w' or 'wb', got {mode!r}")
    if mode == "w":
        kwargs.setdefault("encoding", "utf-8")
    with atomic_path(path) as tmp, open(tmp, mode, **kwargs) as handle:
        yield handle
        handle.flush()


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    with atomic_open(path, "w") as handle:
        handle.write(text)
    return Path(path)


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> Path:
    with atomic_open(path, "wb") as handle:
        handle.write(data)
    return Path(path)


def write_json_atomic(path: str | os.PathLike, obj: Any, *, default: Callable[[Any], Any] | None = None) -> Path:
    """``obj`` as indented JSON (keys in insertion order) plus a final newline."""
    return write_text_atomic(path, json.dumps(obj, indent=2, default=default) + "\n")


def remove_stale_temporaries(folder: str | os.PathLike) -> list[Path]:
    """Delete the temporary files that writers killed mid-write (SIGKILL, power loss) left in ``folder``.

    Call it only while no other process writes ``folder`` (e.g. under :func:`repro.utils.locks.directory_lock`).
    Returns the removed paths.
    """
    removed = []
    folder = Path(folder)
    if not folder.is_dir():
        return removed
    for entry in folder.iterdir():
        if _TEMPORARY.match(entry.name) and entry.is_file():
            with contextlib.suppress(FileNotFoundError):
                entry.unlink()
                removed.append(entry)
    return removed


@contextlib.contextmanager
def atomic_directory(path: str | os.PathLike) -> Iterator[Path]:
    """A temporary folder next to ``path`` that replaces ``path`` (a folder) once the block completes; on an
    exception, or a kill before the swap, the previous folder is left as it was."""
    path = Path(path)
    tmp: Path | None = None
    old: Path | None = None
    try:
        with _write_errors(path):
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.tmp-", dir=path.parent))
            yield tmp
            if path.exists():
                old = Path(tempfile.mkdtemp(prefix=f".{path.name}.old-", dir=path.parent))
                os.replace(path, old / path.name)
            os.replace(tmp, path)
            _fsync_dir(path.parent)
    finally:
        for folder in (tmp, old):
            if folder is not None:
                shutil.rmtree(folder, ignore_errors=True)
