"""The one tolerance rule: when is our value "within tolerance" of a reported one.

A reported number is judged against an interval. Two things widen it:

* **how the number was printed.** Exact quantities (parameters, peak memory) are printed from the exact value at some
  precision. The printed text keeps that precision (``2.0`` is one decimal, ``2`` none, ``4.03`` two), and the table
  declares how the authors printed (:data:`PRINTING`): ``rounded`` (``2.2`` covers [2.15, 2.25]), ``truncated``
  (``2.2`` covers [2.2, 2.3)) or ``rounded_or_truncated`` (the paper is not consistent: either reading);
* **a slack** ``abs + rel·|reported|`` (they add up): the seed-to-seed spread of a trained accuracy, MAC counting
  conventions, a claim's wording.

:func:`tolerance_for` gives every cell its rule: the cell's own ``tolerance`` if it has one, else the default of its
metric (:data:`DEFAULT_SLACK`, and the printing rule for ``params`` and ``peak_memory``).
"""

from __future__ import annotations

from dataclasses import dataclass

PRINTING = ("rounded", "truncated", "rounded_or_truncated")
DEFAULT_PRINTING = "rounded"
PRINTED_METRICS = ("params", "peak_memory")  # exact values, judged by how they were printed

# Slack per metric, in the cell's unit. accuracy: 1 pp (seed spread on a few thousand test images); map: 0.01 on the
# 0-1 scale (1 pp in %); macs: 2 % (what counts as a multiply-accumulate differs between counters); claims: 10 %.
DEFAULT_SLACK: dict[str, dict[str, float]] = {
    "accuracy": {"abs": 1.0},
    "map": {"abs": 0.01},
    "macs": {"rel": 0.02},
    "claim": {"rel": 0.10},
    "params": {},
    "peak_memory": {},
    "hidden_size": {},
}
PERCENT_UNITS = ("%", "pp")


def printed_decimals(text: str) -> int:
    """Decimals of a number as printed: ``"2.0"`` -> 1, ``"33.68"`` -> 2, ``"300"`` -> 0, ``"1e-3"`` -> 3."""
    text = text.strip().lower()
    mantissa, _, exponent = text.partition("e")
    decimals = len(mantissa.split(".")[1]) if "." in mantissa else 0
    return max(0, decimals - int(exponent or 0))


@dataclass(frozen=True)
class Tolerance:
    """``printing`` + ``decimals`` (how the reported value was printed) and a slack ``abs + rel·|reported|``."""

    abs: float = 0.0
    rel: float = 0.0
    printing: str | None = None
    decimals: int = 0

    def __post_init__(self) -> None:
        if self.printing is not None and self.printing not in PRINTING:
            raise ValueError(f"printing {self.printing!r} is not one of {PRINTING}")
        if self.abs < 0 or self.rel < 0 or self.decimals < 0:
            raise ValueError(f"tolerance values must be >= 0: {self}")

    def bounds(self, reported: float) -> tuple[float, float]:
        """The closed interval of values this rule accepts for ``reported``."""
        lo = hi = reported
        if self.printing is not None:
            step = 10.0**-self.decimals
            if self.printing in ("rounded", "rounded_or_truncated"):
                lo, hi = lo - step / 2, hi + step / 2
            if self.printing in ("truncated", "rounded_or_truncated"):
                hi = reported + step
        slack = self.abs + self.rel * abs(reported)
        return lo - slack, hi + slack

    def allows(self, ours: float, reported: float) -> bool:
        lo, hi = self.bounds(reported)
        eps = 1e-9 * max(1.0, abs(reported))
        return lo - eps <= ours <= hi + eps

    def describe(self) -> str:
        """E.g. ``rounded at 1 decimal + 2 %``."""
        parts = []
        if self.printing is not None:
            parts.append(f"{self.printing.replace('_', ' ')} at {self.decimals} decimal{'s' * (self.decimals != 1)}")
        if self.abs:
            parts.append(f"±{self.abs:g}")
        if self.rel:
            parts.append(f"±{100 * self.rel:g} %")
        return " + ".join(parts) or "exact"


def tolerance_for(
    metric: str,
    unit: str,
    printed: str | None,
    *,
    own: dict[str, float] | None = None,
    printing: str = DEFAULT_PRINTING,
) -> Tolerance:
    """The rule for a reported cell: its own ``{abs, rel}`` if given, else its metric's default.

    ``printed`` is the reported value as printed (its decimals set the printing interval of exact metrics);
    ``printing`` how the table printed them.
    """
    if own:
        return Tolerance(abs=float(own.get("abs", 0.0)), rel=float(own.get("rel", 0.0)))
    slack = dict(DEFAULT_SLACK[metric])
    if metric == "map" and unit in PERCENT_UNITS:
        slack = {"abs": 1.0}
    if metric == "accuracy" and unit == "fraction":
        slack = {"abs": 0.01}
    if metric in PRINTED_METRICS and printed is not None:
        return Tolerance(**slack, printing=printing, decimals=printed_decimals(printed))
    return Tolerance(**slack)
