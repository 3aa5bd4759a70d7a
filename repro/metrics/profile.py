"""Per-model profile (params, MACs, analytic and measured peak memory, feature-map sizes) and its renderings.

:func:`profile_model` profiles one model at one input size; :func:`profile_entries` profiles a list of pipeline
entries into a :class:`pandas.DataFrame` (one row per entry and image size; ``results/profile.csv``);
:func:`render_profiles` prints them as a table, CSV or JSON. Models are built on the ``meta`` device (no weights, no
compute), so profiling the whole zoo takes seconds; measured memory needs real weights and is opt-in.

Reported-value helpers (:func:`default_tolerance`, :func:`profile_value`, :func:`check_cell`) compare a profile with a
cell of ``paper_tables/*.yaml`` (metrics ``peak_memory``, ``macs``, ``params``).
"""

from __future__ import annotations

import io
import json
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from repro.metrics.macs import mac_report
from repro.metrics.measured_memory import MODES, measure_peak_memory
from repro.metrics.memory import CONVENTIONS, MemoryReport, bytes_per_element, peak_memory, trace_model
from repro.metrics.params import count_params
from repro.models.sap import STANDARD_STRIDES
from repro.utils.atomic import write_text_atomic  # the "standard strided-conv network" per backbone

__all__ = [
    "DEFAULT_CONVENTIONS",
    "FORMATS",
    "STANDARD_STRIDES",
    "CellCheck",
    "CellEvaluator",
    "ModelProfile",
    "aggressive_baselines",
    "build_profile_model",
    "cells_report",
    "check_cell",
    "default_tolerance",
    "downsampling_ratios",
    "load_entries",
    "profile_command",
    "profile_entries",
    "profile_model",
    "profile_value",
    "profiles_to_frame",
    "render_profiles",
    "within",
    "write_frame",
]

DEFAULT_CONVENTIONS: tuple[str, ...] = ("layerwise", "largest-map", "io-sum", "liveness")
FORMATS: tuple[str, ...] = ("table", "csv", "json")
UNIT_SCALE: dict[str, float] = {"MB": 2**20, "KB": 2**10, "B": 1, "G": 1e9, "M": 1e6, "K": 1e3, "": 1}


@dataclass
class ModelProfile:
    """Everything :func:`profile_model` measures for one model at one input size (batch 1)."""

    id: str
    model: str
    image_size: int | tuple[int, int]
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

    def as_row(self) -> dict[str, Any]:
        """Flat record for a table row / CSV line (bytes as integers, MB = 2^20 bytes)."""
        row: dict[str, Any] = {
            "id": self.id,
            "model": self.model,
            "image_size": _size_text(self.image_size),
            "num_classes": self.num_classes,
            "opts": json.dumps(self.opts, sort_keys=True) if self.opts else "",
            "dtype": self.dtype,
            "params": self.params,
            "trainable_params": self.trainable_params,
            "macs": self.macs,
            "attention_macs": self.attention_macs,
        }
        for name, report in self.memory.items():
            row[f"peak_{name}_bytes"] = report.peak_bytes
            row[f"peak_{name}_MB"] = round(report.peak_mb, 4)
            row[f"peak_{name}_step"] = report.where
        if self.recompute_macs is not None:
            row["macs_patch-recompute"] = self.recompute_macs
        for mode, value in self.measured.items():
            row[f"measured_{mode}_bytes"] = value
        if self.feature_shapes is not None:
            row["feature_shapes"] = " ".join(f"{c}x{h}x{w}" for _, (c, h, w) in self.feature_shapes)
        return row

    def as_dict(self) -> dict[str, Any]:
        data = self.as_row()
        data["memory"] = {
            name: {"peak_bytes": r.peak_bytes, "peak_MB": r.peak_mb, "step": r.where, "detail": r.detail}
            for name, r in self.memory.items()
        }
        data["feature_shapes"] = [[n, list(s)] for n, s in self.feature_shapes] if self.feature_shapes else None
        data["opts"] = self.opts
        return data


def _size_text(image_size: int | Sequence[int]) -> str:
    if isinstance(image_size, int):
        return str(image_size)
    return "x".join(str(int(v)) for v in image_size)


def _parse_size(value: Any) -> int | tuple[int, int]:
    """``224``, ``"224"``, ``[480, 640]`` or ``"480x640"`` (height x width)."""
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        parts = re.split(r"[x, ]+", value.strip())
        if len(parts) == 1 and parts[0].isdigit():
            return int(parts[0])
        if len(parts) == 2 and all(p.isdigit() for p in parts):
            return int(parts[0]), int(parts[1])
    if isinstance(value, Sequence) and len(value) == 2:
        return int(value[0]), int(value[1])
    raise ValueError(f"image size must be an int or (height, width), got {value!r}")


def build_profile_model(name: str, num_classes: int = 10, opts: Mapping[str, Any] | None = None) -> nn.Module:
    """Build ``name`` (registered model or SAP architecture string) on the ``meta`` device, falling back to the CPU
    for models whose constructors need real tensors."""
    from repro.models import build_model

    opts = dict(opts or {})
    try:
        with torch.device("meta"):
            return build_model(name, num_classes=num_classes, **opts)
    except (NotImplementedError, RuntimeError):
        return build_model(name, num_classes=num_classes, **opts)


def _feature_shapes(model: nn.Module, image_size):
    try:
        from repro.models.summary import feature_shapes
    except ImportError:  # pragma: no cover - the summary module ships with the models
        return None
    try:
        return feature_shapes(model, image_size)
    except (TypeError, ValueError):  # not a SAP backbone (RNNPool, torchvision, detectors)
        return None


def profile_model(
    model: nn.Module | str,
    image_size: int | Sequence[int],
    *,
    num_classes: int = 10,
    opts: Mapping[str, Any] | None = None,
    conventions: Sequence[str] = DEFAULT_CONVENTIONS,
    dtype: str = "fp32",
    measure: Sequence[str] = (),
    device: str = "cpu",
    id: str | None = None,
    recompute: Mapping[str, Any] | None = None,
) -> ModelProfile:
    """Profile ``model`` (an ``nn.Module`` or a name for :func:`repro.models.build_model`) at ``image_size``.

    ``conventions``: analytic memory conventions (:data:`repro.metrics.memory.CONVENTIONS`, except
    ``patch-recompute``, which needs a budget: use :func:`repro.metrics.memory.patch_recompute_memory`).
    ``measure``: any of ``'inference'``, ``'train'`` to add measured peak memory on ``device`` (builds real weights).
    ``recompute``: ``{budget_from: <model name>, until: <module name>}`` adds ``patch-recompute`` (peak memory and
    MACs; the budget is the ``layerwise`` peak of ``budget_from`` built with the same classes and input size).
    """
    bad = [c for c in conventions if c not in CONVENTIONS or c == "patch-recompute"]
    if bad:
        valid = [c for c in CONVENTIONS if c != "patch-recompute"]
        raise ValueError(f"unknown or unsupported convention(s) {bad}; valid: {', '.join(valid)}")
    bad = [m for m in measure if m not in MODES]
    if bad:
        raise ValueError(f"unknown measure mode(s) {bad}; valid: {', '.join(MODES)}")
    bytes_per_element(dtype)  # validates
    image_size = _parse_size(image_size)
    name = model if isinstance(model, str) else type(model).__name__
    module = build_profile_model(model, num_classes, opts) if isinstance(model, str) else model
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
        from repro.metrics.memory import patch_recompute_memory

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

            real = build_model(model, num_classes=num_classes, **dict(opts or {}))
        for mode in measure:
            result = measure_peak_memory(real, image_size, mode=mode, device=device)
            profile.measured[mode] = result.peak_bytes
            profile.measured_method = result.method
    return profile


# --------------------------------------------------------------------------------------------------------------------
# Entries
# --------------------------------------------------------------------------------------------------------------------


def load_entries(path: str | os.PathLike) -> list[dict[str, Any]]:
    """Read an entries YAML: a list of ``{id, arch|model, image_size | image_sizes, num_classes, opts}`` or a mapping
    ``{entries: {id: {...}}}`` (the pipeline layout). ``image_size`` is one size (``224``, ``[480, 640]`` or
    ``"480x640"``, height x width); ``image_sizes`` a list of them."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"entries file {path} does not exist")
    data = yaml.safe_load(path.read_text())
    if isinstance(data, Mapping) and "entries" in data:
        data = data["entries"]
    if isinstance(data, Mapping):
        data = [{"id": key, **value} for key, value in data.items()]
    if not isinstance(data, list):
        raise ValueError(f"{path}: expected a list of entries or a mapping 'entries: {{id: {{...}}}}'")
    return [dict(e) for e in data]


def _entry_fields(entry: Mapping[str, Any], index: int) -> tuple[str, str, list, int, dict]:
    name = entry.get("arch") or entry.get("model")
    if isinstance(name, Mapping):  # paper_tables cell style: model: {name, num_classes, image_size, opts}
        spec = name
        name = spec.get("name")
        entry = {**spec, **{k: v for k, v in entry.items() if k != "model"}}
    if not name:
        raise ValueError(f"entry #{index} ({entry.get('id', '?')}) has neither 'arch' nor 'model'")
    sizes = list(entry["image_sizes"]) if "image_sizes" in entry else [entry.get("image_size", 224)]
    entry_id = str(entry.get("id", name))
    opts = dict(entry.get("opts") or entry.get("model_opts") or {})
    return entry_id, str(name), [_parse_size(v) for v in sizes], int(entry.get("num_classes", 10)), opts


def profile_entries(
    entries: Iterable[Mapping[str, Any]],
    *,
    conventions: Sequence[str] = DEFAULT_CONVENTIONS,
    dtype: str = "fp32",
    measure: Sequence[str] = (),
    device: str = "cpu",
    errors: str = "raise",
):
    """Profile every entry (and every one of its image sizes) into a DataFrame, one row each.

    An entry has ``image_size`` (one size) or ``image_sizes`` (a list; row ids then get an ``@<size>`` suffix),
    ``opts`` or ``model_opts`` (build options) and optionally ``dtype`` (default ``dtype``) and ``recompute``
    (``{budget_from, until}``: adds ``peak_patch-recompute_bytes`` and ``macs_patch-recompute``). Each model is built
    once per entry.
    ``errors='record'`` puts a failure (bad name, input too small, ...) in an ``error`` column instead of raising.
    """
    import pandas as pd

    if errors not in ("raise", "record"):
        raise ValueError(f"errors must be 'raise' or 'record', got {errors!r}")
    rows = []
    for index, entry in enumerate(entries):
        entry_id, name, sizes, num_classes, opts = _entry_fields(entry, index)
        entry_dtype = str(entry.get("dtype", dtype))
        try:
            module = build_profile_model(name, num_classes, opts) if not measure else None
        except Exception as exc:
            if errors == "raise":
                raise
            rows += [_error_row(_row_id(entry_id, z, len(sizes)), name, z, num_classes, exc) for z in sizes]
            continue
        for size in sizes:
            try:
                profile = profile_model(
                    module if module is not None else name,
                    size,
                    num_classes=num_classes,
                    opts=opts,
                    conventions=conventions,
                    dtype=entry_dtype,
                    measure=measure,
                    device=device,
                    id=_row_id(entry_id, size, len(sizes)),
                    recompute=entry.get("recompute"),
                )
            except Exception as exc:
                if errors == "raise":
                    raise
                rows.append(_error_row(_row_id(entry_id, size, len(sizes)), name, size, num_classes, exc))
                continue
            profile.model = name
            rows.append(profile.as_row())
    return pd.DataFrame(rows)


def _row_id(entry_id: str, size, count: int) -> str:
    """The entry id, suffixed with ``@<size>`` when the entry is profiled at several sizes."""
    return entry_id if count == 1 else f"{entry_id}@{_size_text(size)}"


def _error_row(entry_id: str, name: str, size, num_classes: int, exc: Exception) -> dict[str, Any]:
    message = f"{type(exc).__name__}: {exc}".splitlines()[0]
    return {"id": entry_id, "model": name, "image_size": _size_text(size), "num_classes": num_classes, "error": message}


def profiles_to_frame(profiles: Iterable[ModelProfile]):
    import pandas as pd

    return pd.DataFrame([p.as_row() for p in profiles])


def write_frame(frame, path: str | os.PathLike) -> Path:
    """Write ``frame`` as CSV atomically (temporary file + rename)."""
    return write_text_atomic(path, frame.to_csv(index=False))


# --------------------------------------------------------------------------------------------------------------------
# Rendering
# --------------------------------------------------------------------------------------------------------------------


def render_profiles(profiles: Sequence[ModelProfile], fmt: str = "table") -> str:
    """``'table'`` (human-readable, with feature-map sizes), ``'csv'`` or ``'json'``."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; valid choices: {', '.join(FORMATS)}")
    if fmt == "json":
        return json.dumps([p.as_dict() for p in profiles], indent=2)
    if fmt == "csv":
        buffer = io.StringIO()
        profiles_to_frame(profiles).to_csv(buffer, index=False)
        return buffer.getvalue()
    from tabulate import tabulate

    rows = []
    for p in profiles:
        row = {
            "id": p.id,
            "size": _size_text(p.image_size),
            "params (M)": f"{p.params / 1e6:.3f}",
            "MACs (G)": f"{p.macs / 1e9:.4f}",
            "attention MACs (G)": f"{p.attention_macs / 1e9:.4f}",
        }
        unit = "KB" if p.dtype == "int8" else "MB"
        for name, report in p.memory.items():
            row[f"{name} ({unit}, {p.dtype})"] = f"{report.peak_bytes / UNIT_SCALE[unit]:.4f}"
        for mode, value in p.measured.items():
            row[f"measured {mode} (MB)"] = f"{value / 2**20:.2f}"
        rows.append(row)
    lines = [tabulate(rows, headers="keys", tablefmt="github")]
    for p in profiles:
        lines.append("")
        lines.append(f"{p.id} @ {_size_text(p.image_size)}:")
        for name, report in p.memory.items():
            lines.append(f"  {name:12s} peak at {report.where}: {report.detail}")
        if p.feature_shapes:
            shapes = ", ".join(f"{n} {c}x{h}x{w}" for n, (c, h, w) in p.feature_shapes)
            lines.append(f"  feature maps (C x H x W): {shapes}")
        if p.measured_method:
            lines.append(f"  measured with {p.measured_method} (batch 1 inference, batch 2 training step)")
    lines.append("")
    lines.append("MB = 2^20 bytes, KB = 2^10 bytes; MACs = multiply-accumulates at batch 1.")
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------------------------------
# Reported values
# --------------------------------------------------------------------------------------------------------------------


def _decimals(value: float) -> int:
    text = repr(float(value))
    if "e" in text:
        return 0
    return len(text.split(".")[1].rstrip("0")) if "." in text else 0


def default_tolerance(metric: str, value: float, unit: str) -> dict[str, float] | None:
    """Default tolerance of a reported cell: peak memory ±0.01 (MB) or one unit of the last printed digit (KB);
    MACs ±2 %; params half a unit of the last printed digit (e.g. 2.2M → ±0.05M). None for other metrics."""
    if metric == "peak_memory":
        if unit == "MB":
            return {"abs": 0.01}
        return {"abs": max(10.0 ** -_decimals(value), 0.01)}
    if metric == "macs":
        return {"rel": 0.02}
    if metric == "params":
        return {"abs": 0.5 * 10.0 ** -_decimals(value)}
    return None


def profile_value(profile: ModelProfile, metric: str, unit: str, convention: str = "layerwise") -> float:
    """The value of ``metric`` in ``unit`` (MB/KB binary; G/M/K decimal) from ``profile``."""
    if unit not in UNIT_SCALE:
        raise ValueError(f"unknown unit {unit!r}; valid: {', '.join(u for u in UNIT_SCALE if u)}")
    if metric == "peak_memory":
        raw = profile.peak_bytes(convention)
    elif metric == "macs":
        raw = profile.macs
    elif metric == "params":
        raw = profile.params
    else:
        raise ValueError(f"metric {metric!r} is not a profile metric; use peak_memory, macs or params")
    return raw / UNIT_SCALE[unit]


def within(measured: float, reported: float, tolerance: Mapping[str, float]) -> bool:
    """``|measured - reported| <= abs`` and/or ``<= rel·|reported|`` (both must hold when both are given)."""
    ok = True
    if "abs" in tolerance:
        ok &= abs(measured - reported) <= tolerance["abs"] + 1e-12
    if "rel" in tolerance:
        ok &= abs(measured - reported) <= tolerance["rel"] * abs(reported) + 1e-12
    return bool(ok)


@dataclass(frozen=True)
class CellCheck:
    cell_id: str
    reported: float
    measured: float
    unit: str
    tolerance: dict[str, float]
    ok: bool

    def describe(self) -> str:
        return (
            f"{self.cell_id}: measured {self.measured:.4g} {self.unit} vs reported {self.reported:g} {self.unit} "
            f"(tolerance {self.tolerance}) -> {'ok' if self.ok else 'MISMATCH'}"
        )


def check_cell(cell: Mapping[str, Any], profile: ModelProfile) -> CellCheck:
    """Compare one ``paper_tables`` cell (metric peak_memory/macs/params) with ``profile``."""
    metric, unit, value = cell["metric"], cell["unit"], float(cell["value"])
    tolerance = cell.get("tolerance") or default_tolerance(metric, value, unit)
    measured = profile_value(profile, metric, unit, cell.get("convention", "layerwise"))
    return CellCheck(cell["id"], value, measured, unit, dict(tolerance), within(measured, value, tolerance))


# --------------------------------------------------------------------------------------------------------------------
# Aggressive down-sampling ratios (SAP abstract: "up to 22x")
# --------------------------------------------------------------------------------------------------------------------


def aggressive_baselines(name: str) -> tuple[str, str] | None:
    """For an aggressive-downsampling arch (a prepool, or a first-stage stride above the standard one), the names of
    (a) the same arch with the standard first stride and no prepool and (b) the standard strided-conv network
    (``<backbone>-skip-<standard strides>``); None for any other name."""
    from repro.arch import ArchError, parse_arch

    try:
        arch = parse_arch(name)
    except ArchError:
        return None
    standard = STANDARD_STRIDES[arch.backbone]
    digits = "".join(str(s) for s in arch.strides)
    if arch.prepool is None and arch.strides[0] <= int(standard[0]):
        return None
    net = ("dy" if arch.dynamic else "") + arch.backbone
    same = f"{net}-{arch.pool}-{standard[0]}{digits[1:]}"
    return same, f"{net}-skip-{standard}"


def downsampling_ratios(frame, convention: str = "layerwise"):
    """Peak-memory ratio of every aggressive-downsampling arch (first stride 2/4, or a prepool) to (a) the same arch
    with the first stride 1 and no prepool and (b) the standard strided-conv network, at each image size.

    ``frame`` is a :func:`profile_entries` frame; rows whose baseline is missing from it are skipped.
    """
    import pandas as pd

    column = f"peak_{convention}_bytes"
    if column not in frame.columns:
        raise ValueError(f"the profile frame has no {column!r}; profile with convention {convention!r}")
    records = frame.to_dict("records")
    lookup = {(row["model"], row["image_size"]): row[column] for row in records}
    rows = []
    for row in records:
        baselines = aggressive_baselines(row["model"])
        if baselines is None:
            continue
        same, standard = baselines
        peak = row[column]
        record = {"arch": row["model"], "image_size": row["image_size"], "peak_MB": peak / 2**20}
        for label, base in (("same_pool", same), ("standard", standard)):
            base_peak = lookup.get((base, row["image_size"]))
            record[f"{label}_baseline"] = base
            record[f"{label}_baseline_MB"] = None if base_peak is None else base_peak / 2**20
            record[f"ratio_vs_{label}"] = None if not base_peak or not peak else base_peak / peak
        rows.append(record)
    result = pd.DataFrame(rows)
    if not result.empty:
        result = result.sort_values(["image_size", "arch"]).reset_index(drop=True)
    return result


# --------------------------------------------------------------------------------------------------------------------
# Evaluating reported cells from their model specification
# --------------------------------------------------------------------------------------------------------------------


class CellEvaluator:
    """Compute the value of ``paper_tables`` cells from their ``model`` block, sharing built models and traces.

    ``model`` keys: ``name``, ``num_classes``, ``image_size``, ``opts`` (build options), and optionally ``dtype``
    (``int8`` for quantized models) and ``recompute: {budget_from, until}`` (convention ``patch-recompute``: the
    budget is the ``layerwise`` peak of model ``budget_from``; the recomputed steps end at or before ``until``).
    """

    def __init__(self) -> None:
        self._traces: dict[str, Any] = {}
        self._params: dict[str, int] = {}

    def _trace(self, name: str, num_classes: int, image_size, opts: Mapping[str, Any]):
        key = json.dumps([name, num_classes, _size_text(image_size), dict(opts)], sort_keys=True)
        if key not in self._traces:
            module = build_profile_model(name, num_classes, opts)
            self._traces[key] = trace_model(module, image_size)
            self._params[key] = count_params(module).total
        return self._traces[key], self._params[key]

    def value(self, cell: Mapping[str, Any]) -> float:
        """Our value of ``cell`` in the cell's unit."""
        from repro.metrics.memory import patch_recompute_memory

        spec = cell.get("model")
        if not isinstance(spec, Mapping) or "name" not in spec:
            raise ValueError(f"cell {cell.get('id')!r} has no model block with a name")
        size = _parse_size(spec.get("image_size", 224))
        num_classes, opts = int(spec.get("num_classes", 10)), dict(spec.get("opts") or {})
        dtype = spec.get("dtype", "fp32")
        trace, params = self._trace(spec["name"], num_classes, size, opts)
        metric, unit = cell["metric"], cell["unit"]
        convention = cell.get("convention") or "layerwise"
        if convention == "patch-recompute":
            recompute = spec.get("recompute") or {}
            if "budget_from" not in recompute:
                raise ValueError(f"cell {cell['id']!r}: patch-recompute needs model.recompute.budget_from")
            budget_trace, _ = self._trace(recompute["budget_from"], num_classes, size, opts)
            budget = peak_memory(budget_trace, convention="layerwise", dtype=dtype).peak_bytes
            result = patch_recompute_memory(trace, budget, dtype, recompute_until=recompute.get("until"))
            raw = {"peak_memory": result.report.peak_bytes, "macs": result.macs, "params": params}[metric]
        elif metric == "peak_memory":
            raw = peak_memory(trace, convention=convention, dtype=dtype).peak_bytes
        elif metric == "macs":
            raw = mac_report(trace).total
        elif metric == "params":
            raw = params
        else:
            raise ValueError(f"cell {cell['id']!r}: metric {metric!r} is not computed by the profiler")
        return raw / UNIT_SCALE[unit]

    def check(self, cell: Mapping[str, Any]) -> CellCheck:
        value = float(cell["value"])
        tolerance = cell.get("tolerance") or default_tolerance(cell["metric"], value, cell["unit"])
        measured = self.value(cell)
        return CellCheck(cell["id"], value, measured, cell["unit"], dict(tolerance), within(measured, value, tolerance))


# --------------------------------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------------------------------


def profile_command(
    arch: str | None,
    *,
    entries: Sequence[str] = (),
    image_sizes: Sequence[str] = (),
    num_classes: int = 10,
    conventions: Sequence[str] = ("layerwise",),
    dtype: str = "fp32",
    fmt: str = "table",
    output: str | None = None,
    measure: Sequence[str] = (),
    device: str = "cpu",
    ratios: bool = False,
) -> str:
    """``repro profile``: profile ARCH (or every entry of the ``--entries`` files) and return the rendered text.

    With ``output``, the result (CSV for ``--format csv``/``table``, JSON for ``json``) is also written atomically.
    ``ratios`` appends the aggressive-downsampling memory ratios (docs/profiling.md).
    """
    if (arch is None) == (not entries):
        raise ValueError("give either an architecture (repro profile resnet18-nlp-1222) or --entries FILE, not both")
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; valid choices: {', '.join(FORMATS)}")
    sizes = [_parse_size(s) for s in image_sizes]
    if entries:
        items: list[dict[str, Any]] = []
        for path in entries:
            items += load_entries(path)
        if sizes:
            for item in items:
                item.pop("image_size", None)
                item["image_sizes"] = sizes
    else:
        items = [{"id": arch, "arch": arch, "image_sizes": sizes or [224], "num_classes": num_classes}]
    for item in items:
        if "model_opts" in item and "opts" not in item:
            item["opts"] = item["model_opts"]
    conventions = list(conventions)
    if fmt == "table" and not entries:
        profiles = []
        for item in items:
            for size in item["image_sizes"]:
                profiles.append(
                    profile_model(
                        item["arch"],
                        size,
                        num_classes=item["num_classes"],
                        conventions=conventions,
                        dtype=dtype,
                        measure=measure,
                        device=device,
                    )
                )
        text = render_profiles(profiles, "table")
        if output:
            write_frame(profiles_to_frame(profiles), output)
        return text
    frame = profile_entries(
        [_with_dtype(item, dtype) for item in items],
        conventions=conventions,
        dtype=dtype,
        measure=measure,
        device=device,
        errors="record",
    )
    if output:
        if fmt == "json":
            write_text_atomic(output, frame.to_json(orient="records", indent=2))
        else:
            write_frame(frame, output)
    if fmt == "json":
        text = frame.to_json(orient="records", indent=2)
    elif fmt == "csv":
        text = frame.to_csv(index=False)
    else:
        from tabulate import tabulate

        shown = frame.copy()
        shown["params (M)"] = shown["params"] / 1e6
        shown["MACs (G)"] = shown["macs"] / 1e9
        keep = ["id", "image_size", "params (M)", "MACs (G)"]
        keep += [c for c in shown.columns if c.endswith("_MB")] + (["error"] if "error" in shown.columns else [])
        columns = [c for c in keep if c in shown.columns]
        text = tabulate(shown[columns], headers="keys", tablefmt="github", showindex=False, floatfmt=".4f")
    if ratios:
        for convention in conventions:
            table = downsampling_ratios(frame, convention)
            text += f"\n\nAggressive-downsampling memory ratios ({convention}):\n" + table.to_string(index=False)
    failed = frame["error"].dropna() if "error" in frame.columns else []
    if len(failed):
        text += f"\n\n{len(failed)} profile(s) failed; see the 'error' column."
    return text


def _with_dtype(item: dict[str, Any], default: str) -> dict[str, Any]:
    return item if "dtype" in item else {**item, "dtype": default}


def cells_report(paths: Sequence[str | os.PathLike]) -> str:
    """Markdown table of every profiler cell (peak_memory, macs, params) of ``paths`` (paper_tables YAML files):
    reported value, ours, tolerance and verdict."""
    import yaml
    from tabulate import tabulate

    evaluator = CellEvaluator()
    rows = []
    for path in paths:
        data = yaml.safe_load(Path(path).read_text())
        for cell in data["cells"]:
            if cell["metric"] not in ("peak_memory", "macs", "params") or cell.get("value") is None:
                continue
            check = evaluator.check(cell)
            rows.append(
                {
                    "cell": f"{data['table']}:{cell['id']}",
                    "row": cell["row"],
                    "column": cell["column"],
                    "reported": f"{check.reported:g} {check.unit}",
                    "ours": f"{check.measured:.4g} {check.unit}",
                    "tolerance": ", ".join(f"{k} {v:g}" for k, v in check.tolerance.items()),
                    "verdict": "match" if check.ok else "MISMATCH",
                }
            )
    matched = sum(r["verdict"] == "match" for r in rows)
    table = tabulate(rows, headers="keys", tablefmt="github")
    return f"{table}\n\n{matched} of {len(rows)} cells within tolerance."
