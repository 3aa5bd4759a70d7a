"""Read every ``paper_tables/**/*.yaml``; a bad file becomes a :class:`LoadProblem` and the others still load."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import yaml

from repro.tables.schema import PaperTable, PaperTableError


@dataclass(frozen=True)
class LoadProblem:
    """A file that could not be used, and why (one line a person can act on)."""

    path: str
    message: str


def load_table(path: str | Path) -> PaperTable:
    """Parse and validate one file; raises :class:`PaperTableError` with the file named."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise PaperTableError(f"{path}: cannot read ({exc.strerror})") from None
    except yaml.YAMLError as exc:
        raise PaperTableError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None
    return PaperTable.from_dict(data, path=str(path))


def load_tables(root: str | Path = "paper_tables") -> tuple[list[PaperTable], list[LoadProblem]]:
    """All tables under ``root`` in path order, plus the files that failed validation."""
    root = Path(root)
    if not root.is_dir():
        raise PaperTableError(f"{root}: no such directory (expected the reported numbers, one YAML file per table)")
    tables: list[PaperTable] = []
    problems: list[LoadProblem] = []
    seen: dict[str, str] = {}
    for path in sorted(root.rglob("*.yaml")):
        try:
            table = load_table(path)
        except PaperTableError as exc:
            problems.append(LoadProblem(str(path), str(exc)))
            continue
        if table.key in seen:
            problems.append(LoadProblem(str(path), f"{path}: table {table.key!r} is also defined in {seen[table.key]}"))
            continue
        seen[table.key] = str(path)
        tables.append(table)
    return tables, problems
