"""Our values of reported cells that carry their own ``model`` block (a dtype, a memory convention such as
``patch-recompute``, build options): computed by :class:`CellEvaluator`, sharing built models and traces
(:class:`~repro.metrics.model_cache.ModelCache`)."""

from __future__ import annotations

from collections.abc import Iterable

from repro.metrics.memory import peak_memory
from repro.metrics.model_cache import ModelCache
from repro.metrics.params import count_params
from repro.metrics.recompute import patch_recompute_memory
from repro.metrics.trace import mac_report
from repro.records.entries import parse_size
from repro.records.profile import DEFAULT_CONVENTION, CellValue, in_unit
from repro.records.reported import PROFILE_METRICS, PaperTable, ReportedCell

__all__ = ["CellEvaluator", "cell_value", "cell_values", "model_cells"]


class CellEvaluator:
    """Compute the value of ``paper_tables`` cells from their ``model`` block.

    ``model`` keys: ``name``, ``num_classes``, ``image_size``, ``opts`` (build options), and optionally ``dtype``
    (``int8`` for quantized models) and ``recompute: {budget_from, until}`` (convention ``patch-recompute``: the
    budget is the ``layerwise`` peak of model ``budget_from``; the recomputed steps end at or before ``until``).
    """

    def __init__(self, models: ModelCache | None = None) -> None:
        self.models = models or ModelCache()

    def value(self, cell: ReportedCell) -> float:
        """Our value of ``cell`` in the cell's unit."""
        spec = cell.model
        if not spec or "name" not in spec:
            raise ValueError(f"cell {cell.id!r} has no model block with a name")
        if cell.metric not in PROFILE_METRICS:
            raise ValueError(f"cell {cell.id!r}: metric {cell.metric!r} is not computed by the profiler")
        size = parse_size(spec.get("image_size", 224), f"cell {cell.id!r}: model.image_size")
        num_classes, opts = int(spec.get("num_classes", 10)), dict(spec.get("opts") or {})
        dtype = str(spec.get("dtype", "fp32"))
        trace = self.models.trace(spec["name"], num_classes, opts, size)
        params = count_params(self.models.model(spec["name"], num_classes, opts)).total
        convention = cell.convention or DEFAULT_CONVENTION
        if convention == "patch-recompute":
            recompute = spec.get("recompute") or {}
            if "budget_from" not in recompute:
                raise ValueError(f"cell {cell.id!r}: patch-recompute needs model.recompute.budget_from")
            budget_trace = self.models.trace(recompute["budget_from"], num_classes, opts, size)
            budget = peak_memory(budget_trace, convention="layerwise", dtype=dtype).peak_bytes
            result = patch_recompute_memory(trace, budget, dtype, recompute_until=recompute.get("until"))
            raw = {"peak_memory": result.report.peak_bytes, "macs": result.macs, "params": params}[cell.metric]
        elif cell.metric == "peak_memory":
            raw = peak_memory(trace, convention=convention, dtype=dtype).peak_bytes
        elif cell.metric == "macs":
            raw = mac_report(trace).total
        else:
            raw = params
        return in_unit(float(raw), cell.unit)


def model_cells(tables: Iterable[PaperTable]) -> list[tuple[str, ReportedCell]]:
    """``(table key, cell)`` of every profile-metric cell with a ``model`` block, in table order."""
    return [
        (table.key, cell) for table in tables for cell in table.cells if cell.model and cell.metric in PROFILE_METRICS
    ]


def cell_value(table: str, cell: ReportedCell, evaluator: CellEvaluator) -> CellValue:
    """The :class:`CellValue` of one cell of table ``table`` (a failure is recorded in it, not raised)."""
    value, error = None, None
    try:
        value = evaluator.value(cell)
    except Exception as exc:  # one cell's failure is recorded, the others are still computed
        error = f"{type(exc).__name__}: {exc}".splitlines()[0]
    return CellValue(
        table=table,
        cell=cell.id,
        entry=cell.entry or "",
        metric=cell.metric,
        unit=cell.unit,
        convention=cell.convention or "",
        value=value,
        error=error,
    )


def cell_values(tables: Iterable[PaperTable], evaluator: CellEvaluator | None = None) -> list[CellValue]:
    """The value of every profile-metric cell with a ``model`` block (a failure is recorded per cell, not raised)."""
    evaluator = evaluator or CellEvaluator()
    return [cell_value(table, cell, evaluator) for table, cell in model_cells(tables)]
