"""The ``profile`` stage: params, MACs and analytic peak memory of every entry, and of every profile-derived cell.

* ``results/profile.csv`` — one :class:`~repro.records.ProfileRow` per entry of ``pipelines/*.yaml`` at its paper
  input size, every memory convention (models on the ``meta`` device: exact and cheap);
* ``results/profile_cells.csv`` — one :class:`~repro.records.CellValue` per ``paper_tables`` cell with its own
  ``model`` block (dtype, convention such as ``patch-recompute``, options); the tables prefer it over the entry's row.

Both are profile-independent: smoke and full give the same numbers.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from repro.metrics.cells import model_cells
from repro.metrics.profile import profile_entries_and_cells
from repro.models.registry import model_defaults
from repro.records.entries import Entry
from repro.records.profile import CellValue, ProfileRow, cells_csv_text, profile_csv_text
from repro.records.reported import PaperTable
from repro.utils.atomic import write_text_atomic

PROFILE_CSV = "results/profile.csv"
CELLS_CSV = "results/profile_cells.csv"


def entry_dtype(entry: Entry) -> str:
    """The dtype a model is deployed in (registered models say so; e.g. RNNPool-Face-Quant is int8)."""
    try:
        return model_defaults(entry.arch).dtype
    except ValueError:
        return "fp32"


def run(
    entries: Mapping[str, Entry],
    tables: list[PaperTable],
    *,
    out: str | Path = PROFILE_CSV,
    cells_out: str | Path = CELLS_CSV,
    workers: int = 2,
    progress: bool = False,
) -> tuple[list[ProfileRow], list[CellValue]]:
    """Profile every entry and every cell with a model block (a cell beside the entries that build its model,
    ``workers`` processes); write both files atomically."""
    rows, values = profile_entries_and_cells(
        entries.values(), model_cells(tables), dtype=entry_dtype, workers=workers, progress=progress
    )
    write_text_atomic(out, profile_csv_text(rows))
    write_text_atomic(cells_out, cells_csv_text(values))
    return rows, values
