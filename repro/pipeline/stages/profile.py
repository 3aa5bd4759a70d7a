"""The ``profile`` stage: params, MACs and analytic peak memory of every entry, and of every profile-derived cell.

* ``results/profile.csv`` — one :class:`~repro.records.ProfileRow` per entry of ``pipelines/*.yaml`` at its paper
  input size, every memory convention (models on the ``meta`` device: exact and cheap);
* ``results/profile_cells.csv`` — one :class:`~repro.records.CellValue` per ``paper_tables`` cell with its own
  ``model`` block (dtype, convention such as ``patch-recompute``, options); the tables prefer it over the entry's row.

Both are profile-independent: smoke and full give the same numbers.
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Mapping
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from repro.metrics.cells import cell_values
from repro.metrics.profile import profile_entries
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
    """Profile every entry and every cell with a model block; write both files atomically. With ``workers`` > 1
    the cells are computed in a process of their own while the entries are spread over ``workers`` others."""
    if workers > 1 and "fork" in multiprocessing.get_all_start_methods():
        with ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("fork")) as pool:
            cells_job = pool.submit(cell_values, tables)
            rows = profile_entries(entries.values(), dtype=entry_dtype, workers=workers, progress=progress)
            values = cells_job.result()
    else:
        rows = profile_entries(entries.values(), dtype=entry_dtype, workers=1, progress=progress)
        values = cell_values(tables)
    write_text_atomic(out, profile_csv_text(rows))
    write_text_atomic(cells_out, cells_csv_text(values))
    return rows, values
