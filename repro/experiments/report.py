"""What every experiment writes: a schema-versioned JSON records file, its table as Markdown and CSV.

``<name>.json`` = ``{"schema": "repro.<name>/1", "settings", "provenance", "rows", ...extra}``; ``<name>.md`` and
``<name>.csv`` hold the same rows (the columns given), all written atomically.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from repro.utils.atomic import write_json_atomic, write_text_atomic
from repro.utils.provenance import provenance

__all__ = ["schema_name", "write_records", "write_table"]


def schema_name(name: str, version: int = 1) -> str:
    return f"repro.{name}/{version}"


def write_records(
    out_dir: Path, name: str, settings: Mapping[str, Any], rows: Sequence[Mapping[str, Any]], **extra: Any
) -> Path:
    """``<out_dir>/<name>.json`` with the schema, settings, provenance, rows and any ``extra`` lists."""
    record = {
        "schema": schema_name(name),
        "settings": dict(settings),
        "provenance": provenance(),
        "rows": [dict(r) for r in rows],
        **extra,
    }
    return write_json_atomic(Path(out_dir) / f"{name}.json", record)


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.0f}" if abs(value) >= 1000 else f"{value:.4g}"
    if isinstance(value, (list, tuple)):
        return " ".join(_cell(v) for v in value)
    return str(value)


def write_table(
    out_dir: Path,
    name: str,
    rows: Sequence[Mapping[str, Any]],
    columns: Sequence[str],
    *,
    title: str,
    notes: Sequence[str] = (),
    sections: Sequence[tuple[str, Sequence[Mapping[str, Any]], Sequence[str]]] = (),
) -> tuple[Path, Path]:
    """``<name>.md`` (a title, the notes as a list, a GitHub table of ``rows``, then one ``(heading, rows, columns)``
    table per section) and ``<name>.csv`` (the raw values of ``rows``)."""
    text = [f"# {title}", ""]
    text += [f"* {note}" for note in notes]
    text += ["", _markdown(rows, columns), ""]
    for heading, section_rows, section_columns in sections:
        text += [f"## {heading}", "", _markdown(section_rows, section_columns), ""]
    md = write_text_atomic(Path(out_dir) / f"{name}.md", "\n".join(text))
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(columns)
    for row in rows:
        writer.writerow(["" if row.get(c) is None else _csv(row.get(c)) for c in columns])
    return md, write_text_atomic(Path(out_dir) / f"{name}.csv", buffer.getvalue())


def _markdown(rows: Sequence[Mapping[str, Any]], columns: Sequence[str]) -> str:
    from tabulate import tabulate

    body = [[_cell(row.get(c)) for c in columns] for row in rows]
    return tabulate(body, headers=list(columns), tablefmt="github", disable_numparse=True)


def _csv(value: Any) -> Any:
    if isinstance(value, (list, tuple)):
        return " ".join(str(v) for v in value)
    return value
