"""The exceptions of :mod:`repro.data`: a dataset that is missing, incomplete, corrupt, misnamed or hostile."""

from __future__ import annotations

from pathlib import Path


class DatasetError(ValueError):
    """A dataset problem a person can act on; the message names the cause and the fix on one line.

    ``exit_code`` is the command line's exit status: 2 (usage) for an unknown name or option, a missing data root,
    file or directory; :class:`DataFileError` (1) for a file whose content is wrong.
    """

    exit_code = 2


class DataFileError(DatasetError):
    """A dataset file that is truncated, corrupt, of the wrong type or shape, or crafted (exit code 1)."""

    exit_code = 1


def layout_error(name: str, problem: str, layout: str, source: str) -> DatasetError:
    """Build the standard message: what is wrong, the layout that was expected and where to get the data."""
    return DatasetError(f"{name}: {problem}. Expected layout: {layout}. Get it: {source}")


def file_error(name: str, problem: str, layout: str, source: str) -> DataFileError:
    """:func:`layout_error` for a file that exists but whose content is wrong (``problem`` names the file)."""
    return DataFileError(f"{name}: {problem}. Expected layout: {layout}. Get it: {source}")


def require_file(name: str, path: Path, layout: str, source: str) -> Path:
    """Return ``path`` if it is a non-empty file, else raise the standard layout error."""
    if not path.is_file():
        raise layout_error(name, f"missing file {path}", layout, source)
    if path.stat().st_size == 0:
        raise file_error(name, f"empty file {path}", layout, source)
    return path


def require_dir(name: str, path: Path, layout: str, source: str) -> Path:
    """Return ``path`` if it is a directory, else raise the standard layout error."""
    if not path.is_dir():
        raise layout_error(name, f"missing directory {path}", layout, source)
    return path
