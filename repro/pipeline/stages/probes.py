"""The ``rnnpool_probes`` stage: RNNPool Table 7 (App. C.1) and the App. C.2 single-operator probes, trained for
real on the CPU (:mod:`repro.experiments`), with the budgets of ``params.yaml: probes``.

Writes ``results/probes/table7/`` and ``results/probes/c2/`` (records, tables, plots, a run cache that lets a killed
stage continue) and one :class:`~repro.records.MetricsRecord` per Table 7 cell entry
(``pipelines/rnnpool_probes.yaml``) under ``results/metrics/rnnpool_probes/``: the minimal ``h1``/``h2`` the search
found, which the tables judge against ``paper_tables/rnnpool/table7.yaml``. A cell outside the run's budget is
recorded as not run, with the command that runs it.
"""

from __future__ import annotations

import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from repro.experiments.c2_probes import run_c2_probes
from repro.experiments.table7 import run_table7
from repro.pipeline.params import PipelineParams
from repro.records.entries import Entry
from repro.records.runs import MetricsRecord
from repro.utils.atomic import write_json_atomic
from repro.utils.provenance import git_revision

OUT_DIR = "results/probes"
GROUP = "rnnpool_probes"
METRICS_DIR = f"results/metrics/{GROUP}"
ENTRY_PREFIX = "rnnpool-t7-"


def _record(entry: Entry, params: PipelineParams, row: Mapping[str, Any] | None, settings: Mapping) -> MetricsRecord:
    common = dict(
        entry=entry.id,
        group=entry.group,
        task=entry.task,
        arch=entry.arch,
        pipeline_file=entry.file,
        profile=params.profile,
        git_revision=git_revision(),
    )
    if row is None:
        reason = (
            "not in this run's budget (params.yaml: probes.table7.rows / conv); the full table: repro experiment "
            'table7 --out results/probes/table7 --set \'{"rows": ["lines@32", "multi_lines@32", '
            '"multi_lines@64", "polygons@64"], "conv": [true, false]}\' (docs/experiments.md)'
        )
        return MetricsRecord(**common, status="not_run", reason=reason)
    trained_on = {
        "dataset": row["set"],
        "image_size": row["image_size"],
        "seeds": list(settings.get("seeds", [])),
        "seeds_passed": row["seeds_passed"],
        "test_accuracy": row["test_accuracy"],
    }
    if not row["reached"]:
        closest = row["closest"]
        reason = (
            f"no configuration reached the target accuracy; closest h1={closest['h1']}, h2={closest['h2']} "
            f"(accuracy {max(row['test_accuracy'].values()):.3f})"
        )
        return MetricsRecord(**common, status="failed", reason=reason, trained_on=trained_on)
    # learned results on the paper's synthetic tasks (generated as App. C.1 describes): judged in every profile
    values = {"hidden_size": {"h1": float(row["h1"]), "h2": float(row["h2"])}}
    return MetricsRecord(**common, status="ok", values=values, trained_on=trained_on, comparable=True)


def run(
    entries: Mapping[str, Entry],
    params: PipelineParams,
    *,
    out: str | Path = OUT_DIR,
    metrics: str | Path = METRICS_DIR,
    progress: bool = False,
) -> dict[str, Any]:
    """Run Table 7 and C.2 with ``params.section('probes')`` (``table7:``, ``c2:``); returns their records."""
    section = params.section("probes")
    out = Path(out)
    table7 = run_table7(section.get("table7", {}), out / "table7", progress=progress)
    c2 = run_c2_probes(section.get("c2", {}), out / "c2", progress=progress)
    rows = {
        f"{ENTRY_PREFIX}{r['set']}-{r['image_size']}-{'conv' if r['conv'] else 'noconv'}": r for r in table7["rows"]
    }
    metrics = Path(metrics)
    shutil.rmtree(metrics, ignore_errors=True)
    for entry in entries.values():
        if entry.group == GROUP:
            record = _record(entry, params, rows.get(entry.id), table7["settings"])
            write_json_atomic(metrics / f"{entry.id}.json", record.to_dict())
    return {"table7": table7, "c2": c2}
