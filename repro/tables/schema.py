"""The schema of one ``paper_tables/**/*.yaml`` file: :class:`PaperTable` holding :class:`ReportedCell` s.

Validation happens on construction (:meth:`PaperTable.from_dict`); every problem raises :class:`PaperTableError` naming
the file, the cell id and the field, so a malformed file is one clear message.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

PAPERS = ("sap", "rnnpool", "condensation")
METRICS = ("accuracy", "map", "peak_memory", "macs", "params", "claim")
UNITS = ("MB", "KB", "G", "M", "K", "%", "x", "pp", "fraction")
KINDS = ("paper_table", "official_log", "abstract_claim", "repo_readme")
SELECTIONS = ("best", "last")
TOLERANCE_KEYS = ("abs", "rel")

_TABLE_KEYS = {"paper", "table", "title", "source", "cells", "notes"}
_CELL_REQUIRED = ("id", "row", "column", "metric", "unit", "kind", "source")
_CELL_KEYS = set(_CELL_REQUIRED) | {
    "entry",
    "model",
    "selection",
    "value",
    "convention",
    "tolerance",
    "notes",
    "claim",
}


class PaperTableError(ValueError):
    """A ``paper_tables`` file that does not follow the schema (the message names the file, cell and field)."""


@dataclass(frozen=True)
class ReportedCell:
    """One reported number and where it came from. ``value`` is ``None`` where the paper prints no number."""

    id: str
    row: str
    column: str
    metric: str
    unit: str
    kind: str
    source: str
    value: float | None = None
    entry: str | None = None
    model: dict[str, Any] | None = None
    selection: str = "best"
    convention: str | None = None
    tolerance: dict[str, float] | None = None
    notes: str | None = None
    claim: str | None = None


@dataclass(frozen=True)
class PaperTable:
    """One paper table (or group of reported numbers) with its cells in file order."""

    paper: str
    table: str
    title: str
    source: str
    cells: tuple[ReportedCell, ...]
    path: str = ""
    notes: str | None = None
    by_id: dict[str, ReportedCell] = field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def from_dict(cls, data: Any, path: str = "<memory>") -> PaperTable:
        """Validate ``data`` (the parsed YAML) and build the table; raises :class:`PaperTableError`."""

        def fail(msg: str) -> PaperTableError:
            return PaperTableError(f"{path}: {msg}")

        if not isinstance(data, dict):
            raise fail(f"expected a mapping with keys {sorted(_TABLE_KEYS)}, got {type(data).__name__}")
        unknown = set(data) - _TABLE_KEYS
        if unknown:
            raise fail(f"unknown top-level key(s) {sorted(unknown)}; allowed: {sorted(_TABLE_KEYS)}")
        for key in ("paper", "table", "title", "source", "cells"):
            if key not in data:
                raise fail(f"missing top-level key {key!r}")
        if data["paper"] not in PAPERS:
            raise fail(f"paper {data['paper']!r} is not one of {PAPERS}")
        if not isinstance(data["cells"], list) or not data["cells"]:
            raise fail("'cells' must be a non-empty list")
        cells = [_cell(raw, i, fail) for i, raw in enumerate(data["cells"])]
        by_id: dict[str, ReportedCell] = {}
        for cell in cells:
            if cell.id in by_id:
                raise fail(f"cell id {cell.id!r} appears twice (ids must be unique within a file)")
            by_id[cell.id] = cell
        return cls(
            paper=str(data["paper"]),
            table=str(data["table"]),
            title=str(data["title"]),
            source=str(data["source"]),
            cells=tuple(cells),
            path=path,
            notes=data.get("notes"),
            by_id=by_id,
        )

    @property
    def key(self) -> str:
        return f"{self.paper}/{self.table}"


def _cell(raw: Any, index: int, fail) -> ReportedCell:
    where = f"cell #{index}"
    if not isinstance(raw, dict):
        raise fail(f"{where}: expected a mapping, got {type(raw).__name__}")
    if "id" in raw:
        where = f"cell {raw['id']!r}"
    missing = [k for k in _CELL_REQUIRED if k not in raw or raw[k] in (None, "")]
    if missing:
        raise fail(f"{where}: missing required field(s) {missing}")
    unknown = set(raw) - _CELL_KEYS
    if unknown:
        raise fail(f"{where}: unknown field(s) {sorted(unknown)}; allowed: {sorted(_CELL_KEYS)}")
    checks = (("metric", METRICS), ("unit", UNITS), ("kind", KINDS))
    for key, choices in checks:
        if raw[key] not in choices:
            raise fail(f"{where}: {key} {raw[key]!r} is not one of {choices}")
    if "value" not in raw:
        raise fail(f"{where}: missing field 'value' (write 'value: null' where the paper prints no number)")
    value = raw["value"]
    if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
        raise fail(f"{where}: value must be a number or null, got {value!r}")
    selection = raw.get("selection", "best")
    if selection not in SELECTIONS:
        raise fail(f"{where}: selection {selection!r} is not one of {SELECTIONS}")
    if raw["metric"] != "claim" and not raw.get("entry") and not raw.get("notes"):
        raise fail(
            f"{where}: metric {raw['metric']!r} needs 'entry' (the pipeline entry that reproduces it), or 'notes' "
            "saying why no entry reproduces it (e.g. a competitor method)"
        )
    if raw["metric"] == "claim" and not raw.get("claim"):
        raise fail(f"{where}: a claim cell needs 'claim' (the name of its computation in repro.tables.claims)")
    tolerance = raw.get("tolerance")
    if tolerance is not None:
        if not isinstance(tolerance, dict) or not tolerance or set(tolerance) - set(TOLERANCE_KEYS):
            raise fail(f"{where}: tolerance must be a mapping with keys from {TOLERANCE_KEYS}, got {tolerance!r}")
        for key, tol in tolerance.items():
            if isinstance(tol, bool) or not isinstance(tol, (int, float)) or tol < 0:
                raise fail(f"{where}: tolerance.{key} must be a number >= 0, got {tol!r}")
    model = raw.get("model")
    if model is not None and not isinstance(model, dict):
        raise fail(f"{where}: model must be a mapping (name, num_classes, image_size, opts)")
    return ReportedCell(
        id=str(raw["id"]),
        row=str(raw["row"]),
        column=str(raw["column"]),
        metric=raw["metric"],
        unit=raw["unit"],
        kind=raw["kind"],
        source=str(raw["source"]),
        value=None if value is None else float(value),
        entry=raw.get("entry"),
        model=model,
        selection=selection,
        convention=raw.get("convention"),
        tolerance={k: float(v) for k, v in tolerance.items()} if tolerance else None,
        notes=raw.get("notes"),
        claim=raw.get("claim"),
    )
