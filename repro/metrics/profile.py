"""Profile a model, or every pipeline entry: params, MACs (attention included), analytic peak memory per convention,
feature-map sizes and, on request, measured peak memory.

:func:`profile_model` profiles one model at one input size into a :class:`ModelProfile`; :func:`profile_entries`
profiles pipeline entries (:class:`repro.records.Entry`) into :class:`repro.records.ProfileRow` s, tracing each
distinct configuration once (entries of many tables share architectures and sizes) and, with ``workers=2``, in two
processes; :func:`profile_entries_and_cells` adds the reported cells with their own model block, computed from the same
builds and traces. Models are built on the ``meta`` device (no weights, no compute), so a trace costs the Python work
of one forward pass; measured memory needs real weights and is opt-in.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from repro.metrics.cells import CellEvaluator, cell_value
from repro.metrics.measured_memory import MODES, measure_peak_memory
from repro.metrics.memory import CONVENTIONS, MemoryReport, peak_memory
from repro.metrics.memory_rules import bytes_per_element
from repro.metrics.model_cache import ModelCache, build_profile_model
from repro.metrics.params import count_params
from repro.metrics.recompute import patch_recompute_memory
from repro.metrics.trace import ModelTrace, mac_report, trace_model
from repro.records.entries import Entry, ImageSize, parse_size, size_text
from repro.records.profile import PROFILED_CONVENTIONS, CellValue, ProfileRow
from repro.records.reported import ReportedCell
from repro.utils.gc_pause import collected_once

__all__ = ["ModelProfile", "build_profile_model", "profile_entries", "profile_entries_and_cells", "profile_model"]


@dataclass
class ModelProfile:
    """Everything :func:`profile_model` measures for one model at one input size (batch 1)."""

    id: str
    model: str
    image_size: ImageSize
    num_classes: int
    opts: dict[str, Any]
    dtype: str
    params: int
    trainable_params: int
    macs: int
    attention_macs: int
    memory: dict[str, MemoryReport] = field(default_factory=dict)
    feature_shapes: list[tuple[str, tuple[int, int, int]]] | None = None
    measured: dict[str, int] = field(default_factory=dict)  # mode -> peak bytes
    measured_method: str | None = None
    recompute_macs: int | None = None  # MACs of the patch-recompute schedule (with memory["patch-recompute"])

    def peak_bytes(self, convention: str = "layerwise") -> int:
        if convention not in self.memory:
            raise KeyError(f"convention {convention!r} was not profiled; profiled: {', '.join(self.memory)}")
        return self.memory[convention].peak_bytes

    def to_row(self, entry: str | None = None) -> ProfileRow:
        """The record of this profile for ``results/profile.csv``."""
        return ProfileRow(
            entry=entry or self.id,
            model=self.model,
            image_size=size_text(self.image_size),
            num_classes=self.num_classes,
            dtype=self.dtype,
            opts=dict(self.opts),
            params=self.params,
            trainable_params=self.trainable_params,
            macs=self.macs,
            attention_macs=self.attention_macs,
            peak_bytes={c: r.peak_bytes for c, r in self.memory.items()},
            peak_step={c: r.where for c, r in self.memory.items() if r.where},
            feature_shapes=None
            if self.feature_shapes is None
            else " ".join(f"{c}x{h}x{w}" for _, (c, h, w) in self.feature_shapes),
        )

    def as_dict(self) -> dict[str, Any]:
        """Plain data for JSON output, with each convention's peak step and detail."""
        return {
            "id": self.id,
            "model": self.model,
            "image_size": size_text(self.image_size),
            "num_classes": self.num_classes,
            "opts": self.opts,
            "dtype": self.dtype,
            "params": self.params,
            "trainable_params": self.trainable_params,
            "macs": self.macs,
            "attention_macs": self.attention_macs,
            "memory": {
                name: {"peak_bytes": r.peak_bytes, "peak_MB": r.peak_mb, "step": r.where, "detail": r.detail}
                for name, r in self.memory.items()
            },
            "recompute_macs": self.recompute_macs,
            "measured": self.measured,
            "measured_method": self.measured_method,
            "feature_shapes": [[n, list(s)] for n, s in self.feature_shapes] if self.feature_shapes else None,
        }


def _feature_shapes(model: nn.Module, image_size: ImageSize):
    from repro.models.sap_common import SapBackbone
    from repro.models.summary import feature_shapes

    return feature_shapes(model, image_size) if isinstance(model, SapBackbone) else None


def profile_model(
    model: nn.Module | str,
    image_size: ImageSize | str | Sequence[int],
    *,
    num_classes: int | None = None,
    opts: Mapping[str, Any] | None = None,
    conventions: Sequence[str] = PROFILED_CONVENTIONS,
    dtype: str = "fp32",
    measure: Sequence[str] = (),
    device: str = "cpu",
    id: str | None = None,
    recompute: Mapping[str, Any] | None = None,
    trace: ModelTrace | None = None,
) -> ModelProfile:
    """Profile ``model`` (an ``nn.Module`` or a name for :func:`repro.models.build_model`) at ``image_size``.

    ``conventions``: analytic memory conventions (:data:`repro.metrics.memory.CONVENTIONS` except
    ``patch-recompute``, which needs ``recompute``). ``measure``: any of ``'inference'``, ``'train'`` adds measured
    peak memory on ``device`` (builds real weights). ``recompute``: ``{budget_from: <model name>, until: <module
    name>}`` adds ``patch-recompute`` (peak memory and MACs; the budget is the ``layerwise`` peak of ``budget_from``
    built with the same classes and input size). ``num_classes`` defaults to the model's own. ``trace``: a trace of
    ``model`` (a module) at ``image_size`` to use instead of tracing again.
    """
    bad = [c for c in conventions if c not in CONVENTIONS or c == "patch-recompute"]
    if bad:
        valid = [c for c in CONVENTIONS if c != "patch-recompute"]
        raise ValueError(f"unknown or unsupported convention(s) {bad}; valid: {', '.join(valid)}")
    bad = [m for m in measure if m not in MODES]
    if bad:
        raise ValueError(f"unknown measure mode(s) {bad}; valid: {', '.join(MODES)}")
    bytes_per_element(dtype)  # validates
    image_size = parse_size(image_size)
    name = model if isinstance(model, str) else type(model).__name__
    module = build_profile_model(model, num_classes, opts) if isinstance(model, str) else model
    if num_classes is None:
        num_classes = getattr(module, "num_classes", None) or _classifier_width(module)
    if trace is None:
        trace = trace_model(module, image_size)
    macs = mac_report(trace)
    params = count_params(module)
    profile = ModelProfile(
        id=id or name,
        model=name,
        image_size=image_size,
        num_classes=num_classes,
        opts=dict(opts or {}),
        dtype=dtype,
        params=params.total,
        trainable_params=params.trainable,
        macs=macs.total,
        attention_macs=macs.attention,
        memory={c: peak_memory(trace, convention=c, dtype=dtype) for c in conventions},
        feature_shapes=_feature_shapes(module, image_size),
    )
    if recompute:
        if "budget_from" not in recompute:
            raise ValueError("recompute needs 'budget_from' (the model whose layerwise peak is the budget)")
        budget_model = build_profile_model(recompute["budget_from"], num_classes, opts)
        budget = peak_memory(trace_model(budget_model, image_size), convention="layerwise", dtype=dtype).peak_bytes
        result = patch_recompute_memory(trace, budget, dtype, recompute_until=recompute.get("until"))
        profile.memory["patch-recompute"] = result.report
        profile.recompute_macs = result.macs
    if measure:
        real = module
        if any(p.is_meta for p in module.parameters()):
            if not isinstance(model, str):
                raise ValueError("measured memory needs real weights; pass a model that is not on the meta device")
            from repro.models import build_model

            real = build_model(model, num_classes, **dict(opts or {}))
        for mode in measure:
            result = measure_peak_memory(real, image_size, mode=mode, device=device)
            profile.measured[mode] = result.peak_bytes
            profile.measured_method = result.method
    return profile


def _classifier_width(module: nn.Module) -> int:
    last = [m for m in module.modules() if isinstance(m, nn.Linear)]
    return int(last[-1].out_features) if last else 0


# --------------------------------------------------------------------------------------------------------------------
# pipeline entries


def _config_key(entry: Entry, dtype: str) -> str:
    return json.dumps([entry.arch, entry.num_classes, dict(entry.model_opts), entry.image_size_text, dtype])


def _model_key(entry: Entry, dtype: str) -> str:
    return json.dumps([entry.arch, entry.num_classes, dict(entry.model_opts), dtype])


def _error_row(entry: Entry, dtype: str, exc: BaseException) -> ProfileRow:
    message = f"{type(exc).__name__}: {exc}".splitlines()[0]
    return ProfileRow(
        entry=entry.id,
        model=entry.arch,
        image_size=entry.image_size_text,
        num_classes=entry.num_classes,
        dtype=dtype,
        opts=dict(entry.model_opts),
        error=message,
    )


Job = tuple[Entry, str]  # an entry and its dtype
CellJob = tuple[int, str, ReportedCell]  # a cell's position in the output, its table's key, the cell


@dataclass
class _Unit:
    """The work of one model configuration: its entries (sizes, dtypes) and the reported cells that build it."""

    jobs: list[Job] = field(default_factory=list)
    cells: list[CellJob] = field(default_factory=list)


def _profile_model_group(jobs: list[Job], conventions: Sequence[str], models: ModelCache) -> list[ProfileRow]:
    """The rows of configurations that differ only in image size and dtype: built once (errors recorded)."""
    first = jobs[0][0]
    if not first.buildable:
        return [_error_row(entry, dtype, ValueError(f"not buildable: {entry.reason}")) for entry, dtype in jobs]
    try:
        module = models.model(first.arch, first.num_classes, first.model_opts)
    except Exception as exc:  # one entry's failure (bad name, bad option) is recorded; the others still run
        return [_error_row(entry, dtype, exc) for entry, dtype in jobs]
    rows = []
    for entry, dtype in jobs:
        try:
            profile = profile_model(
                module,
                entry.image_size,
                num_classes=entry.num_classes,
                opts=entry.model_opts,
                conventions=conventions,
                dtype=dtype,
                id=entry.id,
                trace=models.trace(entry.arch, entry.num_classes, entry.model_opts, entry.image_size),
            )
        except Exception as exc:  # e.g. an input too small for the architecture
            rows.append(_error_row(entry, dtype, exc))
            continue
        profile.model = entry.arch
        rows.append(profile.to_row(entry.id))
    return rows


def _profile_unit(unit: _Unit, conventions: Sequence[str]) -> tuple[list[ProfileRow], list[tuple[int, CellValue]]]:
    """One unit's rows and cell values; the cells reuse the entries' built model and traces."""
    with collected_once():  # the work's locals (models, traces) are gone when the collection runs
        return _profile_unit_work(unit, conventions)


def _profile_unit_work(unit: _Unit, conventions: Sequence[str]) -> tuple[list[ProfileRow], list]:
    models = ModelCache()
    rows = _profile_model_group(unit.jobs, conventions, models) if unit.jobs else []
    evaluator = CellEvaluator(models)
    return rows, [(index, cell_value(table, cell, evaluator)) for index, table, cell in unit.cells]


def _profile_units(units: list[_Unit], conventions: Sequence[str]) -> list[tuple[list[ProfileRow], list]]:
    torch.set_num_threads(1)  # meta-device traces are pure Python; threads would only compete
    return [_profile_unit(unit, conventions) for unit in units]


def profile_entries(
    entries: Iterable[Entry],
    *,
    conventions: Sequence[str] = PROFILED_CONVENTIONS,
    dtype: Callable[[Entry], str] | str = "fp32",
    workers: int = 1,
    progress: bool = False,
) -> list[ProfileRow]:
    """Profile every entry at its image size, in the given order; errors go into the row's ``error`` field.

    Entries with the same configuration (model, classes, options, size, dtype) are traced once, and a model is built
    once for all its sizes. ``dtype`` is a dtype name or a function of the entry (e.g. the registered model's
    default). ``workers`` > 1 spreads the models over that many processes (fork; the rows are identical to a
    single-process run).
    """
    rows, _ = profile_entries_and_cells(
        entries, (), conventions=conventions, dtype=dtype, workers=workers, progress=progress
    )
    return rows


def profile_entries_and_cells(
    entries: Iterable[Entry],
    cells: Iterable[tuple[str, ReportedCell]],
    *,
    conventions: Sequence[str] = PROFILED_CONVENTIONS,
    dtype: Callable[[Entry], str] | str = "fp32",
    workers: int = 1,
    progress: bool = False,
) -> tuple[list[ProfileRow], list[CellValue]]:
    """:func:`profile_entries`, and the value of each of ``cells`` (``(table key, cell)`` with a model block:
    :func:`repro.metrics.cells.model_cells`) in the given order. A cell is computed beside the entries that build the
    same model (one build, one trace per size, in the same process); the values equal
    :func:`~repro.metrics.cells.cell_values`'s.
    """
    entries = list(entries)
    dtype_of = dtype if callable(dtype) else (lambda _e: dtype)
    dtypes = [dtype_of(e) for e in entries]
    unique: dict[str, Job] = {}
    for entry, dt in zip(entries, dtypes):
        unique.setdefault(_config_key(entry, dt), (entry, dt))
    units: dict[str, _Unit] = {}
    by_build: dict[str | None, _Unit] = {}  # ModelCache.key of a build -> the unit that builds it
    for job in unique.values():
        unit = units.setdefault(_model_key(*job), _Unit())
        unit.jobs.append(job)
        entry = job[0]
        by_build.setdefault(ModelCache.key(entry.arch, entry.num_classes, entry.model_opts), unit)
    cell_list = list(cells)
    for index, (table, cell) in enumerate(cell_list):
        build = _cell_build_key(cell)
        unit = by_build.get(build) if build is not None else None
        if unit is None:  # no entry builds this model: a unit of its own (shared by the cells that build it)
            unit = by_build[build] = units[f"cells:{build}"] = _Unit()
        unit.cells.append((index, table, cell))
    plan = list(units.values())
    if workers > 1 and len(plan) > 1 and "fork" in _start_methods():
        results = _profile_parallel(plan, conventions, workers, progress)
    else:
        results = _profile_serial(plan, conventions, progress)
    by_key = {_config_key(*job): row for unit, (rows, _) in zip(plan, results) for job, row in zip(unit.jobs, rows)}
    out = []
    for entry, dt in zip(entries, dtypes):
        row = by_key[_config_key(entry, dt)]
        out.append(row if row.entry == entry.id else dataclasses.replace(row, entry=entry.id))
    values: list[CellValue | None] = [None] * len(cell_list)
    for _, unit_values in results:
        for index, value in unit_values:
            values[index] = value
    return out, values


def _cell_build_key(cell: ReportedCell) -> str | None:
    """The :meth:`ModelCache.key` of the build a cell's model block asks for (read as :class:`CellEvaluator` reads
    it), or None for a block the evaluator rejects."""
    spec = cell.model or {}
    try:
        return ModelCache.key(str(spec["name"]), int(spec.get("num_classes", 10)), dict(spec.get("opts") or {}))
    except (KeyError, TypeError, ValueError):
        return None


def _start_methods() -> list[str]:
    import multiprocessing

    return multiprocessing.get_all_start_methods()


def _bar(total: int, progress: bool):
    from tqdm.auto import tqdm

    disable = not progress or os.environ.get("REPRO_NO_PROGRESS") == "1"
    return tqdm(total=total, desc="profile", unit="model", disable=disable)


def _profile_serial(units: list[_Unit], conventions, progress) -> list:
    results = []
    with _bar(len(units), progress) as bar:
        for unit in units:
            results.append(_profile_unit(unit, conventions))
            bar.update(1)
    return results


def _profile_parallel(units: list[_Unit], conventions, workers: int, progress) -> list:
    """Units spread over ``workers`` forked processes in small batches (a process that finishes early takes the
    next batch), results in the order of ``units``."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    from repro.utils.processes import die_with_parent

    size = max(1, len(units) // (8 * workers))
    batches = [list(range(i, min(i + size, len(units)))) for i in range(0, len(units), size)]
    context = multiprocessing.get_context("fork")
    results: list = [None] * len(units)
    pool = ProcessPoolExecutor(max_workers=workers, mp_context=context, initializer=die_with_parent)
    with pool, _bar(len(units), progress) as bar:
        futures = {
            pool.submit(_profile_units, [units[i] for i in batch], tuple(conventions)): batch for batch in batches
        }
        for future, batch in futures.items():
            for index, result in zip(batch, future.result()):
                results[index] = result
            bar.update(len(batch))
    return results
