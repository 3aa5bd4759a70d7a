"""The ``tables`` stage: every ``paper_tables`` table regenerated beside our results (:mod:`repro.tables`)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from repro.records.entries import Entry
from repro.tables.build import TablesReport, make_tables


def run(
    entries: Mapping[str, Entry],
    profile: str,
    *,
    paper_tables: str | Path = "paper_tables",
    results: str | Path = "results",
    plots: bool = True,
) -> TablesReport:
    return make_tables(entries=entries, profile=profile, paper_tables=paper_tables, results_dir=results, plots=plots)
