"""``results/summary.json``: a small metrics file for ``dvc metrics`` / ``dvc exp show`` / ``dvc exp diff`` —
verdict counts overall and per table, and headline numbers (our mean accuracy, mAP and peak memory per table)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from statistics import fmean

from repro.records.reported import PaperTable
from repro.records.verdict import CellVerdict, Verdict
from repro.utils.atomic import write_json_atomic

HEADLINES = {"accuracy": "mean_accuracy", "map": "mean_map", "peak_memory": "mean_peak_memory"}


def summary(tables: Sequence[tuple[PaperTable, list[CellVerdict]]], *, profile: str) -> dict:
    """Nested plain numbers (DVC flattens them to ``verdicts.within``, ``tables.rnnpool/table1.within``, ...)."""
    total: Counter = Counter(j.verdict for _, joined in tables for j in joined)
    out: dict = {"profile": profile, "verdicts": {v.value: total.get(v, 0) for v in Verdict}, "tables": {}}
    for table, joined in tables:
        counts = Counter(j.verdict for j in joined)
        entry: dict = {v.value: counts.get(v, 0) for v in Verdict}
        for metric, name in HEADLINES.items():
            values = [j.reproduced for j in joined if j.cell.metric == metric and j.reproduced is not None]
            units = {j.cell.unit for j in joined if j.cell.metric == metric}
            if values and len(units) == 1:
                entry[f"{name}_{units.pop().replace('%', 'pct')}"] = round(fmean(values), 6)
        out["tables"][table.key] = entry
    return out


def write_summary(path: Path, tables: Sequence[tuple[PaperTable, list[CellVerdict]]], *, profile: str) -> Path:
    return write_json_atomic(path, summary(tables, profile=profile))
