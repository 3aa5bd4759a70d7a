"""Versioned record files: every file that crosses a stage boundary names its schema, and readers check it.

A JSON record carries ``"schema": "repro.<kind>/<version>"``; a CSV record carries a ``schema`` column with the same
text on every row. A reader accepts only the versions it knows and refuses any other with one message that names the
file, the schema found and the stage to re-run.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

SCHEMA_KEY = "schema"


class RecordError(ValueError):
    """A record file that cannot be used: unreadable, of an unknown schema, or with a missing or malformed field."""


def schema_id(kind: str, version: int) -> str:
    return f"repro.{kind}/{version}"


def check_schema(found: Any, where: str, kind: str, version: int, *, rerun: str) -> None:
    """Raise :class:`RecordError` unless ``found`` is ``repro.<kind>/<version>``."""
    expected = schema_id(kind, version)
    if found != expected:
        shown = "no schema" if found in (None, "") else f"schema {found!r}"
        raise RecordError(
            f"{where}: {shown}, but this version of repro reads {expected!r}; the file was written by another version "
            f"of the suite or by hand. Re-run the stage that writes it ({rerun})."
        )


def read_json_record(path: str | Path, kind: str, version: int, *, rerun: str) -> dict[str, Any]:
    """The JSON object in ``path`` after its schema is checked."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except OSError as exc:
        raise RecordError(f"{path}: cannot read ({exc.strerror or exc})") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise RecordError(f"{path}: not valid JSON ({exc}); re-run the stage that writes it ({rerun})") from None
    if not isinstance(data, dict):
        raise RecordError(f"{path}: expected a JSON object, got {type(data).__name__}")
    check_schema(data.get(SCHEMA_KEY), str(path), kind, version, rerun=rerun)
    return data


def require(data: dict[str, Any], key: str, types: type | tuple[type, ...], where: str, *, optional: bool = False):
    """``data[key]`` if it has one of ``types`` (``None`` allowed when ``optional``), else :class:`RecordError`."""
    value = data.get(key)
    if value is None and optional:
        return None
    if isinstance(value, bool) and bool not in (types if isinstance(types, tuple) else (types,)):
        value = object()  # bools are ints in Python; never accept one where a number is expected
    if not isinstance(value, types):
        names = "/".join(t.__name__ for t in (types if isinstance(types, tuple) else (types,)))
        got = "missing" if key not in data else f"{type(data[key]).__name__} {data[key]!r}"
        raise RecordError(f"{where}: field {key!r} must be {names}, got {got}")
    return value
