"""Writing generated datasets: option checks, atomic directory swap, and the no-op re-run (``meta.json``)."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from repro.data.errors import DatasetError
from repro.utils.atomic import atomic_directory

META_FILE = "meta.json"
FORMAT_VERSION = 1


def resolve_options(name: str, defaults: Mapping[str, Any], opts: Mapping[str, Any]) -> dict[str, Any]:
    """``defaults`` updated with ``opts``; an unknown key or a value of the wrong type fails with the valid keys."""
    unknown = sorted(set(opts) - set(defaults))
    if unknown:
        valid = ", ".join(f"{k}={v!r}" for k, v in defaults.items())
        raise DatasetError(f"{name}: unknown option(s) {unknown}; valid options (defaults): {valid}")
    resolved = dict(defaults)
    for key, value in opts.items():
        kind = type(defaults[key])
        if kind is bool and not isinstance(value, bool):
            value = str(value).lower() in ("1", "true", "yes")
        try:
            resolved[key] = kind(value)
        except (TypeError, ValueError):
            raise DatasetError(f"{name}: option {key}={value!r} is not a {kind.__name__}") from None
    return resolved


def require_positive(name: str, options: Mapping[str, Any], *keys: str, minimum: int = 1) -> None:
    for key in keys:
        if options[key] < minimum:
            raise DatasetError(f"{name}: option {key} must be >= {minimum}, got {options[key]}")


def read_meta(dataset_dir: Path) -> dict | None:
    """The parameters a generated dataset was written with, or None when it is absent, incomplete or not ours
    (not a JSON object naming the dataset and its format version): such a dataset is written again."""
    path = dataset_dir / META_FILE
    try:
        meta = json.loads(path.read_bytes())
    except (OSError, ValueError, RecursionError):
        return None
    if (
        not isinstance(meta, dict)
        or meta.get("name") != dataset_dir.name
        or meta.get("format_version") != FORMAT_VERSION
    ):
        return None
    return meta


def require_generated(dataset_dir: Path, name: str) -> dict:
    """The dataset's meta, or a clear error telling how to generate it."""
    meta = read_meta(dataset_dir)
    if meta is None:
        raise DatasetError(
            f"{name}: generated dataset not found at {dataset_dir} (or incomplete); "
            f"run `repro prepare {name}` (add --data-root to choose where)"
        )
    return meta


def materialise(root: Path, name: str, options: Mapping[str, Any], write: Callable[[Path], None]) -> Path:
    """Write ``<root>/<name>`` with ``write(tmp_dir)`` unless it already holds these options.

    The data is written to a temporary directory beside it and swapped in only when complete, so an interrupted
    run leaves either the previous dataset or none, never a partial one.
    """
    target = root / name
    meta = {"name": name, "format_version": FORMAT_VERSION, **options}
    if read_meta(target) == meta:
        return target
    with atomic_directory(target) as tmp:
        write(tmp)
        (tmp / META_FILE).write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
    return target
