"""Join reported cells with our results: ``results/metrics/<group>/<entry>.json`` (trained metrics) and
``results/profile.csv`` (params, MACs, peak memory: exact, measured at the paper's input size in every profile)."""

from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from repro.tables.schema import PaperTable, ReportedCell
from repro.tables.verdict import Verdict, allowed_delta, decide

UNIT_SCALE = {"G": 1e9, "M": 1e6, "K": 1e3, "MB": 2.0**20, "KB": 2.0**10}
DEFAULT_CONVENTION = "layerwise"


@dataclass(frozen=True)
class JoinedCell:
    """One cell with both values, the verdict and where each number comes from."""

    table: str
    cell: ReportedCell
    reproduced: float | None
    verdict: Verdict
    profile: str | None  # the profile that produced ``reproduced`` ("profile" = exact, from results/profile.csv)
    result_file: str | None
    reason: str | None = None
    computation: str | None = None  # claims: how the value was computed

    @property
    def delta(self) -> float | None:
        if self.reproduced is None or self.cell.value is None:
            return None
        return self.reproduced - self.cell.value

    @property
    def tolerance(self) -> float | None:
        return None if self.cell.value is None else allowed_delta(self.cell)


@dataclass
class Results:
    """Everything produced by the pipeline, indexed by entry id; ``problems`` lists unreadable files."""

    metrics: dict[str, dict[str, Any]]
    metrics_files: dict[str, str]
    profile: dict[str, dict[str, Any]]
    profile_file: str | None
    problems: list[str]
    entries: dict[str, Any] | None = None  # repro.pipeline.entries.Entry by id (claims select entries by role)
    cell_values: dict[tuple[str, str], dict[str, Any]] | None = None  # (table key, cell id) -> profile_cells.csv row
    cells_file: str | None = None

    @classmethod
    def load(
        cls, metrics_dir: str | Path = "results/metrics", profile_csv: str | Path = "results/profile.csv"
    ) -> Results:
        problems: list[str] = []
        metrics: dict[str, dict[str, Any]] = {}
        files: dict[str, str] = {}
        mdir = Path(metrics_dir)
        for path in sorted(mdir.rglob("*.json")) if mdir.is_dir() else []:
            try:
                data = json.loads(path.read_text())
                if not isinstance(data, dict) or "status" not in data:
                    raise ValueError("not a metrics record (no 'status')")
                acc = data.get("accuracy")
                if data["status"] == "ok" and not (
                    isinstance(acc, dict) and all(isinstance(acc.get(k), (int, float)) for k in ("best", "last"))
                ):
                    raise ValueError("status 'ok' but no numeric accuracy.best / accuracy.last")
            except (OSError, ValueError) as exc:
                problems.append(
                    f"{path}: corrupt results file ({exc}); its cells show 'not run'. Re-run its "
                    f"evaluate stage (dvc repro -f evaluate@{path.parent.name})."
                )
                data = {"status": "failed", "reason": f"corrupt results file {path}"}
            metrics[path.stem] = data
            files[path.stem] = str(path)
        profile: dict[str, dict[str, Any]] = {}
        pfile = Path(profile_csv)
        if pfile.is_file():
            try:
                profile = read_profile(pfile)
            except (OSError, ValueError, csv.Error) as exc:
                problems.append(
                    f"{pfile}: corrupt profile file ({exc}); params/MACs/memory cells show 'not run'. "
                    "Re-run: dvc repro -f profile"
                )
        else:
            problems.append(f"{pfile}: missing; params/MACs/memory cells show 'not run' (run: dvc repro profile)")
        cell_values: dict[tuple[str, str], dict[str, Any]] = {}
        cfile = pfile.with_name("profile_cells.csv")
        if cfile.is_file():
            try:
                with cfile.open(newline="") as fh:
                    for row in csv.DictReader(fh):
                        cell_values[(row["table"], row["cell"])] = row
            except (OSError, KeyError, csv.Error) as exc:
                problems.append(f"{cfile}: corrupt ({exc}); cells with their own model block use the entry profile")
        return cls(
            metrics,
            files,
            profile,
            str(pfile) if pfile.is_file() else None,
            problems,
            None,
            cell_values,
            str(cfile) if cfile.is_file() else None,
        )


def _number(text: Any) -> float | None:
    if text is None or text == "":
        return None
    value = float(text)
    return None if math.isnan(value) else value


def read_profile(path: Path) -> dict[str, dict[str, Any]]:
    """``results/profile.csv`` rows keyed by entry id (numeric columns as floats)."""
    rows: dict[str, dict[str, Any]] = {}
    with path.open(newline="") as fh:
        reader = csv.DictReader(fh)
        if not reader.fieldnames or not ({"entry", "id"} & set(reader.fieldnames)):
            raise ValueError("no 'entry' column")
        for line, row in enumerate(reader, start=2):
            key = row.get("entry") or row.get("id")
            if not key:
                raise ValueError(f"line {line}: empty entry id")
            parsed: dict[str, Any] = {}
            for name, text in row.items():
                try:
                    parsed[name] = _number(text)
                except (TypeError, ValueError):
                    parsed[name] = text
            if key in rows and row.get("convention"):  # long format: one row per (entry, convention)
                rows[key].update({f"peak_memory_{row['convention']}_bytes": parsed.get("peak_memory_bytes")})
                continue
            if row.get("convention"):
                parsed[f"peak_memory_{row['convention']}_bytes"] = parsed.get("peak_memory_bytes")
            rows[key] = parsed
    return rows


def _first(row: dict[str, Any], names: list[str]) -> float | None:
    for name in names:
        value = row.get(name)
        if isinstance(value, (int, float)):
            return float(value)
    return None


def profile_value(row: dict[str, Any], cell: ReportedCell) -> float | None:
    """The profile value of ``cell``'s metric, converted to the cell's unit."""
    if cell.metric == "params":
        raw = _first(row, ["params", "num_params", "parameters"])
    elif cell.metric == "macs":
        raw = _first(row, ["macs", "madds", "mac"])
    else:
        conv = (cell.convention or DEFAULT_CONVENTION).replace("_", "-")
        names = [f"peak_memory_{conv}_bytes", f"peak_{conv}_bytes", f"{conv}_bytes", f"memory_{conv}_bytes"]
        names += [n.replace("-", "_") for n in names]
        if conv == DEFAULT_CONVENTION:
            names.append("peak_memory_bytes")
        raw = _first(row, names)
        if raw is not None and cell.unit in ("MB", "KB"):
            return raw / UNIT_SCALE[cell.unit]
        return raw
    if raw is None:
        return None
    return raw / UNIT_SCALE.get(cell.unit, 1.0)


def join_cell(table: PaperTable, cell: ReportedCell, results: Results) -> JoinedCell:
    """Our value for ``cell`` and its verdict."""
    key = table.key
    if not cell.entry:
        return JoinedCell(
            key, cell, None, decide(cell, None, comparable=False), None, None, f"no pipeline entry: {cell.notes}"
        )
    if cell.metric in ("params", "macs", "peak_memory"):
        own = (results.cell_values or {}).get((key, cell.id))
        if own is not None:  # the cell's own model block (dtype, convention, options), computed by the profile stage
            value = _number(own.get("value")) if own.get("value") else None
            reason = f"profile failed: {own['error']}" if own.get("error") else None
            return JoinedCell(
                key,
                cell,
                value,
                decide(cell, value, comparable=True),
                "profile" if value is not None else None,
                results.cells_file,
                reason,
            )
        row = results.profile.get(cell.entry or "")
        value = profile_value(row, cell) if row else None
        reason = None
        if row is None:
            reason = f"entry {cell.entry!r} not in {results.profile_file or 'results/profile.csv'}"
        elif value is None:
            reason = f"no {cell.metric} ({cell.convention or DEFAULT_CONVENTION}) in the profile of {cell.entry!r}"
        if row and row.get("error"):
            reason = f"profile failed: {row['error']}"
        return JoinedCell(
            key,
            cell,
            value,
            decide(cell, value, comparable=True),
            "profile" if value is not None else None,
            results.profile_file,
            reason,
        )
    if cell.metric in ("accuracy", "map"):
        record = results.metrics.get(cell.entry or "")
        file = results.metrics_files.get(cell.entry or "")
        if record is None:
            return JoinedCell(
                key,
                cell,
                None,
                decide(cell, None, comparable=False),
                None,
                None,
                f"no results/metrics file for entry {cell.entry!r}",
            )
        value = None
        block = record.get(cell.metric)
        if record.get("status") == "ok" and isinstance(block, dict):
            value = block.get(cell.selection)
            if cell.metric == "accuracy" and cell.unit == "fraction" and value is not None:
                value = value / 100.0
        profile = record.get("profile")
        verdict = decide(cell, value, comparable=profile == "full")
        return JoinedCell(key, cell, value, verdict, profile, file, None if value is not None else record.get("reason"))
    raise ValueError(f"{table.path}: cell {cell.id!r}: claims are joined by repro.tables.claims")


def join_table(table: PaperTable, results: Results) -> list[JoinedCell]:
    from repro.tables.claims import join_claim

    return [join_claim(table, c, results) if c.metric == "claim" else join_cell(table, c, results) for c in table.cells]
