"""Reported numbers: one ``paper_tables/**/*.yaml`` file is a :class:`PaperTable` of :class:`ReportedCell` s.

Validation happens on load: every problem raises :class:`PaperTableError` naming the file, the cell and the field, so
a malformed file is one clear message. The YAML loader keeps each number's printed text (``2.0`` stays ``"2.0"``,
not the integer-looking ``2``), because the printed precision decides the tolerance of exact metrics
(:mod:`repro.records.tolerance`). A value may also be written as a string (``value: "2.20"``) to keep trailing zeros.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from repro.records.runs import DEFAULT_SELECTION, SELECTIONS
from repro.records.tolerance import DEFAULT_PRINTING, PRINTING, Tolerance, tolerance_for
from repro.utils.yaml_load import SafeLoader

PAPERS = ("sap", "rnnpool", "condensation")
METRICS = ("accuracy", "map", "peak_memory", "macs", "params", "hidden_size", "claim")
UNITS = ("MB", "KB", "G", "M", "K", "%", "x", "pp", "fraction", "units")
KINDS = ("paper_table", "official_log", "abstract_claim", "repo_readme")
TOLERANCE_KEYS = ("abs", "rel")
PROFILE_METRICS = ("params", "macs", "peak_memory")
TRAINED_METRICS = ("accuracy", "map", "hidden_size")  # depend on training: a smoke run is never comparable

_TABLE_KEYS = {"paper", "table", "title", "source", "cells", "notes", "printing"}
_CELL_REQUIRED = ("id", "row", "column", "metric", "unit", "kind", "source")
_CELL_KEYS = set(_CELL_REQUIRED) | {
    "entry",
    "model",
    "selection",
    "value",
    "convention",
    "tolerance",
    "printing",
    "notes",
    "claim",
}


class PaperTableError(ValueError):
    """A ``paper_tables`` file that does not follow the schema (the message names the file, cell and field)."""


class _Printed(float):
    """A YAML number that remembers how it was written."""

    text: str

    def __new__(cls, value: float, text: str) -> _Printed:
        obj = super().__new__(cls, value)
        obj.text = text
        return obj


class _PrintedLoader(SafeLoader):
    """The safe loader whose ints and floats keep their source text (still plain data: no tags, no objects)."""


def _number(loader: yaml.SafeLoader, node: yaml.ScalarNode) -> _Printed:
    constructor = loader.construct_yaml_float if node.tag.endswith(":float") else loader.construct_yaml_int
    return _Printed(float(constructor(node)), str(node.value))


_PrintedLoader.add_constructor("tag:yaml.org,2002:float", _number)
_PrintedLoader.add_constructor("tag:yaml.org,2002:int", _number)


def _plain(obj: Any) -> Any:
    """Back to plain Python values (ints stay ints) outside the ``value`` fields."""
    if isinstance(obj, _Printed):
        integral = float(obj).is_integer() and not set(obj.text.lower()) & {".", "e"}
        return int(obj) if integral else float(obj)
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_plain(v) for v in obj]
    return obj


def _safe_load_printed(text: str) -> Any:
    """``yaml.safe_load`` with the printed text of numbers kept."""
    loader = _PrintedLoader(text)
    try:
        return loader.get_single_data()
    finally:
        loader.dispose()


@dataclass(frozen=True)
class ReportedCell:
    """One reported number and where it came from. ``value`` is ``None`` where the paper prints no number;
    ``printed`` is the number as written (its precision matters); ``tolerance`` is the resolved rule."""

    id: str
    row: str
    column: str
    metric: str
    unit: str
    kind: str
    source: str
    value: float | None
    printed: str | None
    tolerance: Tolerance
    entry: str | None = None
    model: Mapping[str, Any] | None = None
    selection: str = "best"
    convention: str | None = None  # memory convention of a peak_memory cell (default layerwise)
    printing: str = DEFAULT_PRINTING
    own_tolerance: Mapping[str, float] | None = None
    notes: str | None = None
    claim: str | None = None

    def allows(self, ours: float) -> bool:
        """Whether ``ours`` is within this cell's tolerance (a cell with a reported value only)."""
        if self.value is None:
            raise ValueError(f"cell {self.id!r} has no reported value")
        return self.tolerance.allows(ours, self.value)

    def bounds(self) -> tuple[float, float] | None:
        return None if self.value is None else self.tolerance.bounds(self.value)


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
    printing: str = DEFAULT_PRINTING
    by_id: dict[str, ReportedCell] = field(default_factory=dict, compare=False, repr=False)

    @property
    def key(self) -> str:
        return f"{self.paper}/{self.table}"

    @classmethod
    def from_dict(cls, data: Any, path: str = "<memory>") -> PaperTable:
        """Validate ``data`` (parsed YAML, numbers optionally carrying their printed text) and build the table."""

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
        printing = data.get("printing", DEFAULT_PRINTING)
        if printing not in PRINTING:
            raise fail(f"printing {printing!r} is not one of {PRINTING}")
        if not isinstance(data["cells"], list) or not data["cells"]:
            raise fail("'cells' must be a non-empty list")
        cells = [_cell(raw, i, fail, printing) for i, raw in enumerate(data["cells"])]
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
            notes=None if data.get("notes") is None else str(data["notes"]),
            printing=printing,
            by_id=by_id,
        )


def _value(raw: Any, where: str, fail) -> tuple[float | None, str | None]:
    if raw is None:
        return None, None
    if isinstance(raw, bool):
        raise fail(f"{where}: value must be a number or null, got {raw!r}")
    if isinstance(raw, _Printed):
        text, value = raw.text, float(raw)
    elif isinstance(raw, (int, float)):
        text, value = repr(raw), float(raw)
    elif isinstance(raw, str):
        try:
            text, value = raw.strip(), float(raw)
        except ValueError:
            raise fail(f"{where}: value must be a number or null, got {raw!r}") from None
    else:
        raise fail(f"{where}: value must be a number or null, got {raw!r}")
    if not math.isfinite(value):
        raise fail(f"{where}: value must be finite, got {raw!r}")
    return value, text


def _cell(raw: Any, index: int, fail, table_printing: str) -> ReportedCell:
    where = f"cell #{index}"
    if not isinstance(raw, dict):
        raise fail(f"{where}: expected a mapping, got {type(raw).__name__}")
    if "id" in raw:
        where = f"cell {_plain(raw['id'])!r}"
    missing = [k for k in _CELL_REQUIRED if k not in raw or raw[k] in (None, "")]
    if missing:
        raise fail(f"{where}: missing required field(s) {missing}")
    unknown = set(raw) - _CELL_KEYS
    if unknown:
        raise fail(f"{where}: unknown field(s) {sorted(unknown)}; allowed: {sorted(_CELL_KEYS)}")
    for key, choices in (("metric", METRICS), ("unit", UNITS), ("kind", KINDS)):
        if raw[key] not in choices:
            raise fail(f"{where}: {key} {_plain(raw[key])!r} is not one of {choices}")
    if "value" not in raw:
        raise fail(f"{where}: missing field 'value' (write 'value: null' where the paper prints no number)")
    value, printed = _value(raw["value"], where, fail)
    selection = raw.get("selection", DEFAULT_SELECTION.get(raw["metric"], "best"))
    if raw["metric"] in SELECTIONS and selection not in SELECTIONS[raw["metric"]]:
        raise fail(f"{where}: selection {selection!r} is not one of {SELECTIONS[raw['metric']]}")
    if raw["metric"] != "claim" and not raw.get("entry") and not raw.get("notes"):
        raise fail(
            f"{where}: metric {raw['metric']!r} needs 'entry' (the pipeline entry that reproduces it), or 'notes' "
            "saying why no entry reproduces it (e.g. a competitor method)"
        )
    if raw["metric"] == "claim" and not raw.get("claim"):
        raise fail(f"{where}: a claim cell needs 'claim' (the name of its computation in repro.tables.claims)")
    own = raw.get("tolerance")
    if own is not None:
        if not isinstance(own, dict) or not own or set(own) - set(TOLERANCE_KEYS):
            raise fail(f"{where}: tolerance must be a mapping with keys from {TOLERANCE_KEYS}, got {_plain(own)!r}")
        for key, tol in own.items():
            if isinstance(tol, bool) or not isinstance(tol, (int, float)) or tol < 0 or not math.isfinite(tol):
                raise fail(f"{where}: tolerance.{key} must be a finite number >= 0, got {_plain(tol)!r}")
        own = {k: float(v) for k, v in own.items()}
    printing = raw.get("printing", table_printing)
    if printing not in PRINTING:
        raise fail(f"{where}: printing {printing!r} is not one of {PRINTING}")
    model = raw.get("model")
    if model is not None and (not isinstance(model, dict) or not model.get("name")):
        raise fail(f"{where}: model must be a mapping with a 'name' (and num_classes, image_size, opts)")
    text = {k: None if raw.get(k) is None else str(_plain(raw[k])) for k in ("entry", "convention", "notes", "claim")}
    return ReportedCell(
        id=str(_plain(raw["id"])),
        row=str(_plain(raw["row"])),
        column=str(_plain(raw["column"])),
        metric=raw["metric"],
        unit=raw["unit"],
        kind=raw["kind"],
        source=str(_plain(raw["source"])),
        value=value,
        printed=printed,
        tolerance=tolerance_for(raw["metric"], raw["unit"], printed, own=own, printing=printing),
        model=None if model is None else _plain(model),
        selection=selection,
        printing=printing,
        own_tolerance=own,
        **text,
    )


@dataclass(frozen=True)
class LoadProblem:
    """A file that could not be used, and why (one line a person can act on)."""

    path: str
    message: str


def load_table(path: str | Path) -> PaperTable:
    """Parse and validate one file; raises :class:`PaperTableError` with the file named."""
    path = Path(path)
    try:
        data = _safe_load_printed(path.read_text())
    except OSError as exc:
        raise PaperTableError(f"{path}: cannot read ({exc.strerror})") from None
    except UnicodeDecodeError:
        raise PaperTableError(f"{path}: not a UTF-8 text file") from None
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
