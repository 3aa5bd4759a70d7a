"""Everything the pipeline produced, as typed records keyed by entry: the train stage's :class:`MetricsRecord` s, the
profile stage's :class:`ProfileRow` s and :class:`CellValue` s. Unreadable files become ``problems`` (one line each,
naming the file and the stage to re-run); their cells then show "not run"."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from repro.records.entries import Entry
from repro.records.profile import CellValue, ProfileRow, read_cell_values, read_profile
from repro.records.runs import MetricsRecord
from repro.records.schema import RecordError

PROFILE_FILE = "profile.csv"
CELLS_FILE = "profile_cells.csv"
METRICS_DIR = "metrics"


@dataclass
class Results:
    """The pipeline's outputs under one results directory, and the entries they belong to."""

    entries: Mapping[str, Entry]
    metrics: dict[str, MetricsRecord] = field(default_factory=dict)
    metrics_files: dict[str, str] = field(default_factory=dict)
    profile: dict[str, ProfileRow] = field(default_factory=dict)
    profile_file: str | None = None
    cell_values: dict[tuple[str, str], CellValue] = field(default_factory=dict)
    cells_file: str | None = None
    problems: list[str] = field(default_factory=list)

    @classmethod
    def load(cls, results_dir: str | Path, entries: Mapping[str, Entry]) -> Results:
        root = Path(results_dir)
        out = cls(entries=entries)
        mdir = root / METRICS_DIR
        for path in sorted(mdir.rglob("*.json")) if mdir.is_dir() else []:
            try:
                record = MetricsRecord.read(path)
            except RecordError as exc:
                out.problems.append(f"{exc}; its cells show 'not run'")
                continue
            out.metrics[record.entry] = record
            out.metrics_files[record.entry] = str(path)
        pfile = root / PROFILE_FILE
        if pfile.is_file():
            try:
                out.profile = read_profile(pfile)
                out.profile_file = str(pfile)
            except RecordError as exc:
                out.problems.append(f"{exc}; params/MACs/memory cells show 'not run'")
        else:
            out.problems.append(f"{pfile}: missing; params/MACs/memory cells show 'not run' (run: dvc repro profile)")
        cfile = root / CELLS_FILE
        if cfile.is_file():
            try:
                out.cell_values = read_cell_values(cfile)
                out.cells_file = str(cfile)
            except RecordError as exc:
                out.problems.append(f"{exc}; cells with their own model block use their entry's profile")
        return out
