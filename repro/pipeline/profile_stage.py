"""The ``profile`` stage: params, MACs and analytic peak memory of every entry, and of every profile-derived cell.

* ``results/profile.csv`` — one row per entry of ``pipelines/*.yaml`` (at its paper input size; models on the
  ``meta`` device, so exact and cheap) with ``peak_<convention>_bytes`` for each convention;
* ``results/profile_cells.csv`` — the value of every ``paper_tables`` cell that carries its own ``model`` block
  (dtype, convention such as ``patch-recompute``, options), in the cell's unit, computed by
  :class:`repro.metrics.profile.CellEvaluator`. The tables stage prefers this value over the entry's row.

Both are profile-independent: smoke and full give the same numbers.
"""

from __future__ import annotations

import csv
import io
import sys
from dataclasses import asdict
from pathlib import Path

from repro.pipeline.entries import GROUPS_FILE
from repro.utils.atomic import write_text_atomic

CONVENTIONS = ("layerwise", "largest-map")
CELL_FIELDS = ["table", "cell", "entry", "metric", "unit", "convention", "value", "error"]


def profile_items(pipelines: str | Path) -> list[dict]:
    """Every entry of every pipelines file (the mapping layout and the list layout), first definition of an id wins."""
    from repro.metrics.profile import load_entries

    items: dict[str, dict] = {}
    for path in sorted(Path(pipelines).glob("*.yaml")):
        if path.name == GROUPS_FILE:
            continue
        try:
            loaded = load_entries(path)
        except (OSError, ValueError) as exc:  # one malformed file is reported; the others are still profiled
            print(f"warning: {exc}; its entries are not profiled", file=sys.stderr)
            continue
        for item in loaded:
            items.setdefault(str(item.get("id")), item)
    return list(items.values())


def profile_cells(paper_tables: str | Path) -> list[dict]:
    """Values of the cells with a ``model`` block (errors recorded per cell, never raised)."""
    from repro.metrics.profile import CellEvaluator
    from repro.tables.load import load_tables

    evaluator = CellEvaluator()
    rows = []
    tables, _ = load_tables(paper_tables)
    for table in tables:
        for cell in table.cells:
            if not cell.model or cell.metric not in ("params", "macs", "peak_memory"):
                continue
            row = {
                "table": table.key,
                "cell": cell.id,
                "entry": cell.entry or "",
                "metric": cell.metric,
                "unit": cell.unit,
                "convention": cell.convention or "",
                "value": "",
                "error": "",
            }
            try:
                row["value"] = repr(float(evaluator.value(asdict(cell))))
            except Exception as exc:  # one cell's failure is recorded, the others are still computed
                row["error"] = f"{type(exc).__name__}: {exc}".splitlines()[0]
            rows.append(row)
    return rows


def run_profile_stage(
    pipelines: str | Path = "pipelines",
    paper_tables: str | Path = "paper_tables",
    out: str | Path = "results/profile.csv",
    cells_out: str | Path = "results/profile_cells.csv",
) -> tuple[int, int]:
    """Write both files; returns (profiled rows, cell values)."""
    from repro.metrics.profile import profile_entries

    frame = profile_entries(profile_items(pipelines), conventions=CONVENTIONS, errors="record")
    frame = frame.rename(columns={"id": "entry"})
    write_text_atomic(Path(out), frame.to_csv(index=False))
    rows = profile_cells(paper_tables)
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=CELL_FIELDS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    write_text_atomic(Path(cells_out), buf.getvalue())
    return len(frame), len(rows)
