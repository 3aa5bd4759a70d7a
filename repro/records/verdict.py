"""The verdict of one table cell (DESIGN: "honest status") and :class:`CellVerdict`, a cell joined with our value."""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass

from repro.records.reported import ReportedCell


class Verdict(str, enum.Enum):
    """The status of one table cell."""

    WITHIN = "within"
    OUTSIDE = "outside"
    NOT_RUN = "not_run"
    SMOKE = "smoke"
    NO_REPORTED = "no_reported"

    @property
    def label(self) -> str:
        return _LABELS[self]


_LABELS = {
    Verdict.WITHIN: "within tolerance",
    Verdict.OUTSIDE: "outside tolerance",
    Verdict.NOT_RUN: "not run",
    Verdict.SMOKE: "smoke — not comparable",
    Verdict.NO_REPORTED: "no reported value",
}


def judge(cell: ReportedCell, ours: float | None, *, comparable: bool) -> Verdict:
    """The verdict for ``cell`` given our value (``None`` = not run).

    ``comparable`` is False when the value came from a smoke run (generated data, a few steps): such a value is shown
    but never judged against the paper. Profile-derived values (params, MACs, memory) are exact and comparable.
    """
    if cell.value is None:
        return Verdict.NO_REPORTED
    if ours is None or math.isnan(ours):
        return Verdict.NOT_RUN
    if not comparable:
        return Verdict.SMOKE
    return Verdict.WITHIN if cell.allows(ours) else Verdict.OUTSIDE


@dataclass(frozen=True)
class CellVerdict:
    """One reported cell with our value, the verdict and where each number comes from."""

    table: str  # "<paper>/<table>"
    cell: ReportedCell
    reproduced: float | None
    verdict: Verdict
    source_profile: str | None  # the profile that produced ``reproduced`` ("profile" = exact, from the profile stage)
    result_file: str | None
    reason: str | None = None
    computation: str | None = None  # claims: how the value was computed

    @property
    def delta(self) -> float | None:
        if self.reproduced is None or self.cell.value is None:
            return None
        return self.reproduced - self.cell.value

    @classmethod
    def of(
        cls,
        table: str,
        cell: ReportedCell,
        ours: float | None,
        *,
        comparable: bool,
        source_profile: str | None = None,
        result_file: str | None = None,
        reason: str | None = None,
        computation: str | None = None,
    ) -> CellVerdict:
        """Judge ``ours`` against ``cell`` (the one place a verdict is decided)."""
        return cls(
            table,
            cell,
            ours,
            judge(cell, ours, comparable=comparable),
            source_profile if ours is not None else None,
            result_file,
            reason,
            computation,
        )
