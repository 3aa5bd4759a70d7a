"""``repro check-tables``: sanity checks on regenerated tables (used by CI after the reduced smoke pipeline)."""

from __future__ import annotations

import csv
from pathlib import Path

from repro.records.reported import PROFILE_METRICS, TRAINED_METRICS, load_tables


def check_tables(
    paper_tables: str | Path = "paper_tables",
    results: str | Path = "results",
    *,
    profiled: tuple[str, ...] = ("rnnpool/table1", "rnnpool/table2", "rnnpool/table3"),
    smoke: bool = True,
) -> tuple[list[str], list[str]]:
    """``(errors, notes)``. Errors: a table without its md/tex/csv, no results/README.md, a profile-derived cell of
    ``profiled`` tables that was not computed, a trained cell of a smoke run judged against the paper."""
    results = Path(results)
    errors: list[str] = []
    notes: list[str] = []
    if not (results / "README.md").is_file():
        errors.append(f"{results / 'README.md'} is missing")
    tables, problems = load_tables(paper_tables)
    errors += [p.message for p in problems]
    for table in tables:
        base = results / "tables" / table.paper / table.table
        missing = [s for s in ("md", "tex", "csv") if not base.with_suffix(f".{s}").is_file()]
        if missing:
            errors.append(f"{table.key}: no {', '.join(missing)} output under {base.parent}")
            continue
        with base.with_suffix(".csv").open(newline="") as fh:
            rows = list(csv.DictReader(fh))
        for row in rows:
            if table.key in profiled and row["metric"] in PROFILE_METRICS and row["verdict"] == "not_run":
                errors.append(f"{table.key} {row['cell']}: profile value missing ({row['reason']})")
            if smoke and row["metric"] in TRAINED_METRICS and row["verdict"] in ("within", "outside"):
                errors.append(f"{table.key} {row['cell']}: a smoke result was judged against the paper")
        if table.key in profiled:
            prof = [r for r in rows if r["metric"] in PROFILE_METRICS and r["reported"]]
            inside = sum(r["verdict"] == "within" for r in prof)
            notes.append(f"{table.key}: {inside}/{len(prof)} profile-derived cells within tolerance")
            notes += [
                f"  outside: {r['cell']} ours {r['reproduced']} vs {r['reported']} {r['unit']}"
                for r in prof
                if r["verdict"] == "outside"
            ]
    return errors, notes
