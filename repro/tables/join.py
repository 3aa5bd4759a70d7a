"""Join each reported cell with our value: trained metrics from the entry's :class:`MetricsRecord`, exact params /
MACs / memory from the profile stage (the cell's own model block first, else its entry's row), claims from
:mod:`repro.tables.claims`."""

from __future__ import annotations

import math

from repro.records.profile import DEFAULT_CONVENTION
from repro.records.reported import PROFILE_METRICS, PaperTable, ReportedCell
from repro.records.runs import SELECTIONS
from repro.records.verdict import CellVerdict
from repro.tables.claims import join_claim
from repro.tables.results import Results


def _profile_cell(table: PaperTable, cell: ReportedCell, results: Results) -> CellVerdict:
    own = results.cell_values.get((table.key, cell.id))
    if own is not None:  # the cell's own model block (dtype, convention, options), computed by the profile stage
        reason = f"profile failed: {own.error}" if own.error else None
        return CellVerdict.of(
            table.key,
            cell,
            own.value,
            comparable=True,
            source_profile="profile",
            result_file=results.cells_file,
            reason=reason,
        )
    row = results.profile.get(cell.entry or "")
    value = None if row is None else row.metric(cell.metric, cell.unit, cell.convention)
    if row is None:
        reason = f"entry {cell.entry!r} not in {results.profile_file or 'results/profile.csv'}"
    elif row.error:
        reason = f"profile failed: {row.error}"
    elif value is None:
        reason = f"no {cell.metric} ({cell.convention or DEFAULT_CONVENTION}) in the profile of {cell.entry!r}"
    else:
        reason = None
    return CellVerdict.of(
        table.key,
        cell,
        value,
        comparable=True,
        source_profile="profile",
        result_file=results.profile_file,
        reason=reason,
    )


def _powers_of_two(ours: float, reported: float) -> str:
    """How far apart two hidden sizes are, in powers of two (Table 7's verdict per cell)."""
    if ours <= 0 or reported <= 0:
        return ""
    steps = round(abs(math.log2(ours / reported)))
    return "the same size" if steps == 0 else "one power of two away" if steps == 1 else f"{steps} powers of two away"


def _trained_cell(table: PaperTable, cell: ReportedCell, results: Results) -> CellVerdict:
    record = results.metrics.get(cell.entry or "")
    if record is None:
        entry = results.entries.get(cell.entry or "")
        if entry is not None and not entry.trainable:
            reason = f"not trained by the train stage: {entry.reason}"
        else:
            reason = f"no results/metrics file for entry {cell.entry!r}"
        return CellVerdict.of(table.key, cell, None, comparable=False, reason=reason)
    value = record.value(cell.metric, cell.selection)
    if cell.metric == "accuracy" and cell.unit == "fraction" and value is not None:
        value /= 100.0
    if cell.metric == "map" and cell.unit in ("%", "pp") and value is not None:
        value *= 100.0
    reason = None
    if value is None:
        reason = record.reason or f"the run of {cell.entry!r} reports no {cell.metric} {cell.selection!r}"
    elif cell.metric == "hidden_size" and cell.value:
        reason = _powers_of_two(value, cell.value)
    return CellVerdict.of(
        table.key,
        cell,
        value,
        comparable=record.is_comparable,
        source_profile=record.profile,
        result_file=results.metrics_files.get(record.entry),
        reason=reason,
    )


def join_cell(table: PaperTable, cell: ReportedCell, results: Results) -> CellVerdict:
    """Our value for ``cell`` and its verdict."""
    if cell.metric == "claim":
        return join_claim(table, cell, results)
    if not cell.entry:
        return CellVerdict.of(table.key, cell, None, comparable=False, reason=f"no pipeline entry: {cell.notes}")
    if cell.metric in PROFILE_METRICS:
        return _profile_cell(table, cell, results)
    if cell.metric in SELECTIONS:
        return _trained_cell(table, cell, results)
    raise ValueError(f"{table.path}: cell {cell.id!r}: metric {cell.metric!r} has no join")


def join_table(table: PaperTable, results: Results) -> list[CellVerdict]:
    return [join_cell(table, cell, results) for cell in table.cells]
