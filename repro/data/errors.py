"""The one exception type of :mod:`repro.data`: a dataset that is missing, incomplete, corrupt or misnamed."""

from __future__ import annotations

from pathlib import Path


class DatasetError(ValueError):
    """A dataset problem a person can act on; the message names the cause and the fix on one line."""


def layout_error(name: str, problem: str, layout: str, source: str) -> DatasetError:
    """Build the standard message: what is wrong, the layout that was expected and where to get the data."""
    return DatasetError(f"{name}: {problem}. Expected layout: {layout}. Get it: {source}")


def require_file(name: str, path: Path, layout: str, source: str) -> Path:
    """Return ``path`` if it is a non-empty file, else raise the standard layout error."""
    if not path.is_file():
        raise layout_error(name, f"missing file {path}", layout, source)
    if path.stat().st_size == 0:
        raise layout_error(name, f"empty file {path}", layout, source)
    return path


def require_dir(name: str, path: Path, layout: str, source: str) -> Path:
    """Return ``path`` if it is a directory, else raise the standard layout error."""
    if not path.is_dir():
        raise layout_error(name, f"missing directory {path}", layout, source)
    return path
