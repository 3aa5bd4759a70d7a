"""Regenerate every table: load the reported numbers and the results, join, render tables, plots, claims, the index
and the summary metrics. The caller passes the entries (``repro.records.load_entries``) and the profile's name."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from repro.records.entries import Entry
from repro.records.reported import PaperTable, load_tables
from repro.records.verdict import CellVerdict, Verdict
from repro.tables.index import run_stats, write_index
from repro.tables.join import join_table
from repro.tables.plots import accuracy_vs_memory, reported_vs_reproduced
from repro.tables.render import write_table
from repro.tables.results import Results
from repro.tables.summary import write_summary

SUMMARY_FILE = "summary.json"


@dataclass
class TablesReport:
    tables: list[tuple[PaperTable, list[CellVerdict]]] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    written: list[Path] = field(default_factory=list)

    @property
    def counts(self) -> Counter:
        return Counter(j.verdict for _, joined in self.tables for j in joined)

    @property
    def outside(self) -> list[CellVerdict]:
        return [j for _, joined in self.tables for j in joined if j.verdict is Verdict.OUTSIDE]

    def cells(self) -> list[CellVerdict]:
        return [j for _, joined in self.tables for j in joined]


def make_tables(
    *,
    entries: Mapping[str, Entry],
    profile: str,
    paper_tables: str | Path = "paper_tables",
    results_dir: str | Path = "results",
    plots: bool = True,
) -> TablesReport:
    """Write ``results/tables/<paper>/<table>.{md,tex,csv}``, ``results/plots/*``, ``results/README.md`` and
    ``results/summary.json``; a malformed table file is reported and skipped, the others are still produced."""
    results_dir = Path(results_dir)
    report = TablesReport()
    tables, load_problems = load_tables(paper_tables)
    report.problems += [p.message + " — this table is skipped; the others are produced." for p in load_problems]
    results = Results.load(results_dir, entries)
    report.problems += results.problems
    out = results_dir / "tables"
    for table in tables:
        unknown = sorted({c.entry for c in table.cells if c.entry and c.entry not in entries})
        if unknown:
            report.problems.append(
                f"{table.path}: cells name entries not in pipelines/*.yaml: {unknown[:5]}"
                + (" ..." if len(unknown) > 5 else "")
            )
        joined = join_table(table, results)
        report.tables.append((table, joined))
        report.written += write_table(out, table, joined, profile=profile)
    plot_paths: list[Path] = []
    if plots:
        plot_paths += accuracy_vs_memory(results, results_dir / "plots", profile)
        plot_paths += reported_vs_reproduced(report.cells(), results_dir / "plots", profile)
        report.written += plot_paths
    report.written.append(write_summary(results_dir / SUMMARY_FILE, report.tables, profile=profile))
    report.written.append(
        write_index(
            results_dir / "README.md",
            report.tables,
            profile=profile,
            problems=report.problems,
            plots=[p for p in plot_paths if p.suffix == ".png"],
            stats=run_stats(results),
        )
    )
    return report
