"""Trial families of the fault-injection suite: a registry of functions that each return trial records.

A family is ``fn(ctx: FaultContext, count: int) -> list[TrialRecord]``, registered with
:func:`register_family`; :func:`run_family` times it and turns an unexpected exception into a failed trial, so one
broken family never hides the figures of the others. To add a family (e.g. ``dvc-repro-kill``), write the function
in a module of this package, decorate it, and import the module in :mod:`repro.faults`.
"""

from __future__ import annotations

import dataclasses
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["FAMILIES", "Family", "FaultContext", "TrialRecord", "register_family", "run_family"]


@dataclass
class TrialRecord:
    """One fault injected and what came of it.

    ``what``: the fault and where it hit; ``survived``: the suite behaved as promised (refused cleanly, or recovered
    with a result identical to a fault-free run); ``lost``: what the fault cost (``"nothing"``, work to redo, or the
    damage when it did not survive); ``detail``: one line of evidence (the error printed, the differences found).
    """

    family: str
    trial: int
    what: str
    survived: bool
    lost: str
    detail: str = ""
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class FaultContext:
    """Where a family works (``work_dir``, a fresh folder per family; ``shared_dir`` for what families share, such
    as the reference training run), its random ``seed`` and ``log`` for progress."""

    work_dir: Path
    seed: int = 0
    log: Callable[[str], None] = print
    shared_dir: Path | None = None
    notes: list[str] = field(default_factory=list)
    """Lines a family adds to the report (e.g. which way it injected a full disk)."""

    def __post_init__(self) -> None:
        self.shared_dir = self.shared_dir or self.work_dir


FamilyFn = Callable[[FaultContext, int], list[TrialRecord]]


@dataclass(frozen=True)
class Family:
    name: str
    fn: FamilyFn
    default_count: int
    description: str


FAMILIES: dict[str, Family] = {}


def register_family(name: str, *, default_count: int, description: str) -> Callable[[FamilyFn], FamilyFn]:
    """Decorator: register ``fn(ctx, count) -> list[TrialRecord]`` as family ``name``."""

    def wrap(fn: FamilyFn) -> FamilyFn:
        if name in FAMILIES:
            raise ValueError(f"fault family {name!r} is registered twice")
        FAMILIES[name] = Family(name, fn, default_count, description)
        return fn

    return wrap


def run_family(family: Family, ctx: FaultContext, count: int) -> list[TrialRecord]:
    """Run ``family``; an exception escaping it becomes one failed trial that quotes it."""
    ctx.work_dir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    try:
        records = family.fn(ctx, count)
    except Exception as exc:  # a broken family must show up in the report, not abort the others
        last = traceback.format_exc().strip().splitlines()[-1]
        records = [TrialRecord(family.name, 0, "the family itself", False, "its remaining trials", last)]
        ctx.log(f"[{family.name}] crashed: {exc!r}")
    elapsed = time.perf_counter() - started
    if records and not any(r.seconds for r in records):
        for record in records:
            record.seconds = elapsed / len(records)
    return records
