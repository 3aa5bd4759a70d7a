"""``python -m repro.faults``: run the fault-injection families and write the figures of ``docs/reliability.md``."""

from __future__ import annotations

import argparse
import logging
import shlex
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from repro.faults import FAMILIES, FaultContext, run_family
from repro.faults.report import render, write_section
from repro.utils.atomic import write_json_atomic
from repro.utils.provenance import git_revision


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m repro.faults", description=__doc__)
    parser.add_argument("--families", default=",".join(FAMILIES), help="comma-separated families (default: all)")
    parser.add_argument(
        "--count", action="append", default=[], metavar="FAMILY=N", help="trials of one family (repeatable)"
    )
    parser.add_argument("--scale", type=float, default=1.0, help="multiply every default count (at least 1 trial)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random kill points and damage")
    parser.add_argument("--work-dir", help="where trials run (default: a temporary folder, removed afterwards)")
    parser.add_argument("--doc", default="docs/reliability.md", help="document whose generated section is written")
    parser.add_argument("--no-doc", action="store_true", help="do not write the document")
    parser.add_argument("--json", help="also write every trial record here")
    parser.add_argument("--list", action="store_true", help="list the families and their default counts")
    return parser


def _counts(args: argparse.Namespace) -> dict[str, int]:
    names = [n for n in args.families.split(",") if n]
    unknown = [n for n in names if n not in FAMILIES]
    if unknown:
        raise SystemExit(f"error: unknown families {unknown}; known: {', '.join(FAMILIES)}")
    counts = {n: max(1, round(FAMILIES[n].default_count * args.scale)) for n in names}
    for item in args.count:
        name, _, value = item.partition("=")
        if name not in counts or not value.isdigit():
            raise SystemExit(f"error: --count {item!r} is not FAMILY=N for a selected family")
        counts[name] = int(value)
    return counts


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.list:
        for family in FAMILIES.values():
            print(f"{family.name} ({family.default_count}): {family.description}")
        return 0
    counts = _counts(args)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    work = Path(args.work_dir) if args.work_dir else Path(tempfile.mkdtemp(prefix="repro-faults-"))
    started = time.perf_counter()
    records, notes = [], []
    try:
        for name, count in counts.items():
            ctx = FaultContext(work / name, seed=args.seed, log=lambda m: print(m, flush=True), shared_dir=work)
            print(f"== {name}: {count} trials", flush=True)
            records += run_family(FAMILIES[name], ctx, count)
            notes += ctx.notes
    finally:
        if not args.work_dir:
            shutil.rmtree(work, ignore_errors=True)
    seconds = time.perf_counter() - started
    survived = sum(r.survived for r in records)
    print(f"{survived}/{len(records)} trials survived in {seconds:.0f} s")
    command = "python -m repro.faults" + (
        "" if argv is None and len(sys.argv) == 1 else " " + shlex.join(argv or sys.argv[1:])
    )
    if not args.no_doc:
        section = render(
            records, command=command, seconds=seconds, revision=git_revision(), notes=notes, work_dir=str(work)
        )
        print(f"wrote {write_section(args.doc, section)}")
    if args.json:
        write_json_atomic(args.json, [r.as_dict() for r in records])
    return 0 if survived == len(records) else 1


if __name__ == "__main__":
    sys.exit(main())
