"""Typed, versioned records: everything that crosses a pipeline stage boundary (plain data, no torch).

* :mod:`~repro.records.entries` — :class:`Entry`, the one loader of ``pipelines/*.yaml``;
* :mod:`~repro.records.runs` — :class:`RunRecord` (a trainer's summary), :class:`MetricsRecord` (an entry's result
  for the tables), :class:`PreparedRecord`;
* :mod:`~repro.records.profile` — :class:`ProfileRow`, :class:`CellValue` and the memory conventions;
* :mod:`~repro.records.reported` — :class:`PaperTable`, :class:`ReportedCell` (value, printed text, unit, source,
  tolerance);
* :mod:`~repro.records.tolerance` — the one tolerance rule; :mod:`~repro.records.verdict` — :class:`Verdict`,
  :class:`CellVerdict`.
"""

from repro.records.entries import ClaimRole, Entry, EntryError, load_entries
from repro.records.profile import CellValue, ProfileRow
from repro.records.reported import PaperTable, PaperTableError, ReportedCell, load_tables
from repro.records.runs import MetricsRecord, PreparedRecord, RunRecord
from repro.records.schema import RecordError
from repro.records.tolerance import Tolerance
from repro.records.verdict import CellVerdict, Verdict

__all__ = [
    "CellValue",
    "CellVerdict",
    "ClaimRole",
    "Entry",
    "EntryError",
    "MetricsRecord",
    "PaperTable",
    "PaperTableError",
    "PreparedRecord",
    "ProfileRow",
    "RecordError",
    "ReportedCell",
    "RunRecord",
    "Tolerance",
    "Verdict",
    "load_entries",
    "load_tables",
]
