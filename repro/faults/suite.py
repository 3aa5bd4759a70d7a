"""Run fault-injection families and write the figures section of ``docs/reliability.md`` (``repro faults``)."""

from __future__ import annotations

import logging
import shutil
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from repro.faults.registry import FAMILIES, FaultContext, TrialRecord, run_family
from repro.faults.report import render, write_section
from repro.utils.atomic import write_json_atomic
from repro.utils.provenance import git_revision


@dataclass(frozen=True)
class SuiteResult:
    records: list[TrialRecord]
    seconds: float
    doc: Path | None

    @property
    def survived(self) -> int:
        return sum(r.survived for r in self.records)


def trial_counts(
    families: Sequence[str], scale: float = 1.0, counts: Mapping[str, int] | None = None
) -> dict[str, int]:
    """Trials per family: each family's default count times ``scale`` (at least 1), overridden by ``counts``."""
    unknown = [n for n in [*families, *(counts or {})] if n not in FAMILIES]
    if unknown:
        raise ValueError(f"unknown fault families {unknown}; known: {', '.join(FAMILIES)}")
    out = {n: max(1, round(FAMILIES[n].default_count * scale)) for n in families}
    out.update({n: int(c) for n, c in (counts or {}).items() if n in out})
    return out


def run_suite(
    counts: Mapping[str, int],
    *,
    seed: int = 0,
    work_dir: str | Path | None = None,
    doc: str | Path | None = "docs/reliability.md",
    json_out: str | Path | None = None,
    command: str = "repro faults",
) -> SuiteResult:
    """Run every family of ``counts`` (name -> trials) in a work folder (a temporary one by default, removed at the
    end), then write the generated section of ``doc`` and, optionally, every record as JSON."""
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    work = Path(work_dir) if work_dir else Path(tempfile.mkdtemp(prefix="repro-faults-"))
    started = time.perf_counter()
    records: list[TrialRecord] = []
    notes: list[str] = []
    try:
        for name, count in counts.items():
            ctx = FaultContext(work / name, seed=seed, log=lambda m: print(m, flush=True), shared_dir=work)
            print(f"== {name}: {count} trials", flush=True)
            records += run_family(FAMILIES[name], ctx, count)
            notes += ctx.notes
    finally:
        if not work_dir:
            shutil.rmtree(work, ignore_errors=True)
    seconds = time.perf_counter() - started
    written = None
    if doc is not None:
        section = render(
            records, command=command, seconds=seconds, revision=git_revision(), notes=notes, work_dir=str(work)
        )
        written = write_section(doc, section)
    if json_out:
        write_json_atomic(json_out, [r.as_dict() for r in records])
    return SuiteResult(records, seconds, written)
