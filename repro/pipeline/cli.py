"""Bodies of the pipeline commands of ``repro`` (``run-entries``, ``evaluate-entries``, ``pipeline-groups``,
``prepare-stage``, ``tables``): errors become one line on stderr and an exit code."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import yaml


def _error(msg: str) -> int:
    print(f"error: {msg}", file=sys.stderr)
    return 2


def run_entries_command(group: str, *, only, pipelines: str, params: str, runs: str, strict: bool) -> int:
    from repro.pipeline.entries import EntryError
    from repro.pipeline.params import ParamsError
    from repro.pipeline.run import train_group

    try:
        statuses = train_group(group, pipelines=pipelines, params_file=params, runs=runs, only=list(only or []))
    except (EntryError, ParamsError) as exc:
        return _error(str(exc))
    failed = [k for k, v in statuses.items() if v == "failed"]
    print(
        f"[{group}] {len(statuses)} entries: "
        + ", ".join(f"{s} {list(statuses.values()).count(s)}" for s in ("ok", "failed", "not_run"))
    )
    return 1 if strict and failed else 0


def evaluate_entries_command(group: str, *, pipelines: str, params: str, runs: str, results: str) -> int:
    from repro.pipeline.entries import EntryError
    from repro.pipeline.params import ParamsError
    from repro.pipeline.run import evaluate_group

    try:
        evaluate_group(group, pipelines=pipelines, params_file=params, runs=runs, results=results)
    except (EntryError, ParamsError) as exc:
        return _error(str(exc))
    return 0


def groups_command(pipelines: str, *, write: bool, check: bool) -> int:
    from repro.pipeline.entries import GROUPS_FILE, EntryError, groups_index, write_groups_index

    try:
        index = groups_index(pipelines)
    except EntryError as exc:
        return _error(str(exc))
    if write:
        print(f"wrote {write_groups_index(pipelines)}")
        return 0
    if check:
        path = Path(pipelines) / GROUPS_FILE
        current = yaml.safe_load(path.read_text()) if path.is_file() else None
        if current != index:
            return _error(f"{path} is out of date with pipelines/*.yaml; run: repro pipeline-groups --write")
        return 0
    for name, info in index["groups"].items():
        print(f"{name}\t{info['entries']}\t{info['file']}")
    return 0


def prepare_stage_command(dataset: str, *, params: str, marker_dir: str) -> int:
    from repro.pipeline.params import ParamsError, load_params
    from repro.utils.atomic import write_json_atomic

    try:
        p = load_params(params)
    except ParamsError as exc:
        return _error(str(exc))
    smoke_sets = [str(d) for d in (p.smoke.get("datasets") or [p.smoke.get("dataset", "shapes")])]
    needed = dataset in smoke_sets if p.is_smoke else True
    record = {"dataset": dataset, "profile": p.profile, "prepared": False, "path": None, "note": None}
    if not needed:
        record["note"] = f"not needed by the {p.profile} profile"
    else:
        try:
            from repro.data import prepare

            root = p.smoke.get("data_root", p.data_root) if p.is_smoke else p.data_root
            opts = dict(p.smoke.get("prepare", {}).get(dataset, {})) if p.is_smoke else {}
            path = prepare(dataset, root, **opts)
            record.update(prepared=True, path=str(path))
        except (ValueError, OSError) as exc:  # DatasetError is a ValueError: the message says how to get the data
            if p.is_smoke:
                return _error(str(exc))
            record["note"] = f"not available: {exc}"
            print(f"warning: {dataset}: {exc}", file=sys.stderr)
    write_json_atomic(Path(marker_dir) / f"{dataset}.json", record)
    print(json.dumps(record))
    return 0


def tables_command(paper_tables: str, results: str, pipelines: str, params: str, *, plots: bool, strict: bool) -> int:
    from repro.tables.build import make_tables
    from repro.tables.schema import PaperTableError
    from repro.tables.verdict import Verdict

    try:
        report = make_tables(
            paper_tables=paper_tables, results_dir=results, pipelines=pipelines, params_file=params, plots=plots
        )
    except PaperTableError as exc:
        return _error(str(exc))
    counts = report.counts
    print(
        f"{len(report.tables)} tables -> {Path(results) / 'tables'}; "
        + ", ".join(f"{v.label}: {counts.get(v, 0)}" for v in Verdict)
    )
    for problem in report.problems:
        print(f"warning: {problem}", file=sys.stderr)
    if strict and report.outside:
        for j in report.outside[:20]:
            print(
                f"outside tolerance: {j.table} {j.cell.id}: ours {j.reproduced:.4g} vs reported {j.cell.value} "
                f"{j.cell.unit} (|Δ| > {j.tolerance:.3g})",
                file=sys.stderr,
            )
        return 1
    return 0
