"""Tolerances per metric and the verdict of one cell."""

from __future__ import annotations

import enum
import math

from repro.tables.schema import ReportedCell


class Verdict(str, enum.Enum):
    """The status of one table cell (DESIGN: "honest status")."""

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

# Default tolerances, in the unit of the reported cell; ``abs`` and ``rel`` add up:
# |ours - reported| <= abs + rel * |reported|. They agree with the profiler's defaults
# (repro.metrics.profile.default_tolerance) so that both judge a profile cell alike:
# accuracy 1 pp (seed-to-seed spread on a few thousand test images); map 0.01 on the 0-1 scale (1 pp when in %);
# peak_memory 0.01 MB (the papers print 2 decimals, sometimes truncated), in KB one unit of the last printed digit;
# macs 2 %; params half a unit of the last printed digit (2.2M -> 0.05M); claims 10 %.
DEFAULT_TOLERANCE: dict[str, dict[str, float]] = {
    "accuracy": {"abs": 1.0},
    "map": {"abs": 0.01},
    "macs": {"rel": 0.02},
    "claim": {"rel": 0.10},
}
# metrics whose reproduced value depends on training (a smoke run can never be compared with the paper)
TRAINED_METRICS = ("accuracy", "map")


def printed_decimals(value: float) -> int:
    """Decimals of ``value`` as written in the YAML file (2.2 -> 1, 33.68 -> 2, 300 -> 0)."""
    text = repr(float(value))
    if "e" in text:
        return 0
    return len(text.split(".")[1].rstrip("0"))


def tolerance_for(cell: ReportedCell) -> dict[str, float]:
    """The cell's own tolerance, else the metric's default."""
    if cell.tolerance:
        return dict(cell.tolerance)
    if cell.metric == "map" and cell.unit in ("%", "pp"):
        return {"abs": 1.0}
    if cell.metric == "peak_memory":
        if cell.unit == "MB" or cell.value is None:
            return {"abs": 0.01}
        return {"abs": max(10.0 ** -printed_decimals(cell.value), 0.01)}
    if cell.metric == "params":
        return {"abs": 0.5 * 10.0 ** -printed_decimals(cell.value or 0.0)}
    return dict(DEFAULT_TOLERANCE[cell.metric])


def allowed_delta(cell: ReportedCell) -> float:
    tol = tolerance_for(cell)
    return tol.get("abs", 0.0) + tol.get("rel", 0.0) * abs(cell.value or 0.0)


def decide(cell: ReportedCell, reproduced: float | None, *, comparable: bool) -> Verdict:
    """The verdict for ``cell`` given our value (``None`` = not run).

    ``comparable`` is False when the value came from a smoke run (generated data, a few steps): such a value is shown
    but never judged against the paper. Profile-derived values (params, MACs, memory) are exact and comparable.
    """
    if cell.value is None:
        return Verdict.NO_REPORTED
    if reproduced is None or (isinstance(reproduced, float) and math.isnan(reproduced)):
        return Verdict.NOT_RUN
    if not comparable:
        return Verdict.SMOKE
    return Verdict.WITHIN if abs(reproduced - cell.value) <= allowed_delta(cell) + 1e-12 else Verdict.OUTSIDE
