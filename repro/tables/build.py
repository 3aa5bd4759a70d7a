"""``repro tables``: load reported numbers and results, join, render every table, plots, claims and the index."""

from __future__ import annotations

import contextlib
import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from repro.tables.index import write_index
from repro.tables.join import JoinedCell, Results, join_table
from repro.tables.load import load_tables
from repro.tables.plots import accuracy_vs_memory, reported_vs_reproduced
from repro.tables.render import write_table
from repro.tables.schema import PaperTable
from repro.tables.verdict import Verdict


@dataclass
class TablesReport:
    tables: list[tuple[PaperTable, list[JoinedCell]]] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    written: list[Path] = field(default_factory=list)

    @property
    def counts(self) -> Counter:
        return Counter(j.verdict for _, joined in self.tables for j in joined)

    @property
    def outside(self) -> list[JoinedCell]:
        return [j for _, joined in self.tables for j in joined if j.verdict is Verdict.OUTSIDE]


def _profile(params_file: Path) -> str:
    from repro.pipeline.params import ParamsError, load_params

    try:
        return load_params(params_file).profile
    except ParamsError:
        return "unknown"


def _run_stats(results: Results) -> dict[str, float]:
    stats: Counter = Counter()
    for rec in results.metrics.values():
        stats["entries"] += 1
        stats[rec.get("status", "failed")] += 1
        run = rec.get("run_record")
        if run and Path(run).is_file():
            with contextlib.suppress(OSError, ValueError):
                stats["train_s"] += float(json.loads(Path(run).read_text()).get("wall_time_s") or 0.0)
    return dict(stats)


def make_tables(
    *,
    paper_tables: str | Path = "paper_tables",
    results_dir: str | Path = "results",
    pipelines: str | Path = "pipelines",
    params_file: str | Path = "params.yaml",
    plots: bool = True,
) -> TablesReport:
    """Regenerate ``results/tables/<paper>/<table>.{md,tex,csv}``, ``results/plots/*``, ``results/README.md``."""
    from repro.pipeline.entries import EntryError, load_entries

    results_dir = Path(results_dir)
    report = TablesReport()
    tables, load_problems = load_tables(paper_tables)
    report.problems += [p.message + " — this table is skipped; the others are produced." for p in load_problems]
    results = Results.load(results_dir / "metrics", results_dir / "profile.csv")
    report.problems += results.problems
    try:
        results.entries = load_entries(pipelines)
    except EntryError as exc:
        report.problems.append(f"{exc} — claims and plots that select entries are incomplete")
        results.entries = {}
    profile = _profile(Path(params_file))
    out = results_dir / "tables"
    for table in tables:
        unknown = sorted({c.entry for c in table.cells if c.entry and c.entry not in results.entries})
        if unknown and results.entries:
            report.problems.append(
                f"{table.path}: cells name entries not in pipelines/*.yaml: {unknown[:5]}"
                + (" ..." if len(unknown) > 5 else "")
            )
        joined = join_table(table, results)
        report.tables.append((table, joined))
        report.written += write_table(out, table, joined, profile=profile)
    all_joined = [j for _, joined in report.tables for j in joined]
    plot_paths: list[Path] = []
    if plots:
        plot_paths += accuracy_vs_memory(results, results_dir / "plots", profile)
        plot_paths += reported_vs_reproduced(all_joined, results_dir / "plots", profile)
        report.written += plot_paths
    report.written.append(
        write_index(
            results_dir / "README.md",
            report.tables,
            profile=profile,
            problems=report.problems,
            plots=[p for p in plot_paths if p.suffix == ".png"],
            run_stats=_run_stats(results),
        )
    )
    return report
