"""The profile stage's records: :class:`ProfileRow` (``results/profile.csv``, one row per entry) and
:class:`CellValue` (``results/profile_cells.csv``, one row per reported cell that carries its own model block).

The memory conventions are named here once (:data:`MEMORY_CONVENTIONS`); the CSV columns of peak memory are generated
from them (:func:`peak_column`), and the profiler, the tables and the claims all go through this module.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from repro.records.schema import RecordError, check_schema, schema_id

PROFILE_SCHEMA = ("profile", 2)
CELLS_SCHEMA = ("profile-cells", 1)

#: Analytic peak-memory conventions (docs/profiling.md). ``patch-recompute`` needs a budget and is computed per cell.
MEMORY_CONVENTIONS: tuple[str, ...] = (
    "layerwise",
    "largest-map",
    "io-sum",
    "liveness",
    "layerwise-streamed-pools",
    "patch-recompute",
)
PROFILED_CONVENTIONS: tuple[str, ...] = tuple(c for c in MEMORY_CONVENTIONS if c != "patch-recompute")
DEFAULT_CONVENTION = "layerwise"
UNIT_SCALE: dict[str, float] = {"G": 1e9, "M": 1e6, "K": 1e3, "MB": 2.0**20, "KB": 2.0**10, "B": 1.0, "": 1.0}

_RERUN_PROFILE = "dvc repro -f profile"


def peak_column(convention: str) -> str:
    """The CSV column of the peak memory (bytes) under ``convention``."""
    if convention not in MEMORY_CONVENTIONS:
        raise ValueError(f"unknown memory convention {convention!r}; valid: {', '.join(MEMORY_CONVENTIONS)}")
    return f"peak_{convention}_bytes"


def step_column(convention: str) -> str:
    """The CSV column naming the step where the peak of ``convention`` occurs."""
    return f"peak_{convention}_step"


def in_unit(raw: float, unit: str) -> float:
    """``raw`` (bytes, MACs, parameters) in ``unit``: MB/KB binary, G/M/K decimal."""
    if unit not in UNIT_SCALE:
        raise ValueError(f"unknown unit {unit!r}; valid: {', '.join(u for u in UNIT_SCALE if u)}")
    return raw / UNIT_SCALE[unit]


@dataclass(frozen=True)
class ProfileRow:
    """Params, MACs and analytic peak memory of one entry at one input size (batch 1), or the error that stopped it."""

    entry: str
    model: str
    image_size: str  # "224" or "480x640"
    num_classes: int
    dtype: str = "fp32"
    opts: Mapping[str, Any] = field(default_factory=dict)
    params: int | None = None
    trainable_params: int | None = None
    macs: int | None = None
    attention_macs: int | None = None
    peak_bytes: Mapping[str, int] = field(default_factory=dict)  # convention -> bytes
    peak_step: Mapping[str, str] = field(default_factory=dict)  # convention -> where the peak is
    feature_shapes: str | None = None
    error: str | None = None

    def peak(self, convention: str = DEFAULT_CONVENTION) -> int | None:
        peak_column(convention)  # validates the name
        return self.peak_bytes.get(convention)

    def metric(self, metric: str, unit: str, convention: str | None = None) -> float | None:
        """``params``, ``macs`` or ``peak_memory`` (under ``convention``) in ``unit``; ``None`` when not profiled."""
        if metric == "params":
            raw = self.params
        elif metric == "macs":
            raw = self.macs
        elif metric == "peak_memory":
            raw = self.peak(convention or DEFAULT_CONVENTION)
        else:
            raise ValueError(f"metric {metric!r} is not a profile metric (params, macs, peak_memory)")
        return None if raw is None else in_unit(float(raw), unit)


_FIXED = [
    "schema",
    "entry",
    "model",
    "image_size",
    "num_classes",
    "dtype",
    "opts",
    "params",
    "trainable_params",
    "macs",
    "attention_macs",
]
PROFILE_COLUMNS: list[str] = (
    _FIXED
    + [peak_column(c) for c in PROFILED_CONVENTIONS]
    + [step_column(c) for c in PROFILED_CONVENTIONS]
    + ["feature_shapes", "error"]
)


def _int_or_none(text: str, where: str) -> int | None:
    if text in ("", None):
        return None
    try:
        value = float(text)
    except ValueError:
        raise RecordError(f"{where}: expected a number, got {text!r}") from None
    if not math.isfinite(value) or value < 0:
        raise RecordError(f"{where}: expected a non-negative number, got {text!r}")
    return int(value)


def profile_csv_text(rows: Iterable[ProfileRow]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=PROFILE_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        line: dict[str, Any] = {
            "schema": schema_id(*PROFILE_SCHEMA),
            "entry": row.entry,
            "model": row.model,
            "image_size": row.image_size,
            "num_classes": row.num_classes,
            "dtype": row.dtype,
            "opts": json.dumps(dict(row.opts), sort_keys=True) if row.opts else "",
            "params": row.params,
            "trainable_params": row.trainable_params,
            "macs": row.macs,
            "attention_macs": row.attention_macs,
            "feature_shapes": row.feature_shapes or "",
            "error": row.error or "",
        }
        for convention in PROFILED_CONVENTIONS:
            line[peak_column(convention)] = row.peak_bytes.get(convention)
            line[step_column(convention)] = row.peak_step.get(convention, "")
        writer.writerow({k: "" if v is None else v for k, v in line.items()})
    return buf.getvalue()


def read_profile(path: str | Path) -> dict[str, ProfileRow]:
    """``results/profile.csv`` rows keyed by entry id; raises :class:`RecordError` on an unknown schema or a bad row."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise RecordError(f"{path}: cannot read ({exc.strerror or exc}); re-run: {_RERUN_PROFILE}") from None
    reader = csv.DictReader(io.StringIO(text))
    missing = [c for c in ("schema", "entry", "model") if c not in (reader.fieldnames or [])]
    if missing:
        raise RecordError(f"{path}: not a profile file (no column(s) {missing}); re-run: {_RERUN_PROFILE}")
    rows: dict[str, ProfileRow] = {}
    try:
        for line, raw in enumerate(reader, start=2):
            where = f"{path}, line {line}"
            check_schema(raw.get("schema"), where, *PROFILE_SCHEMA, rerun=_RERUN_PROFILE)
            if not raw.get("entry"):
                raise RecordError(f"{where}: empty entry id")
            try:
                opts = json.loads(raw["opts"]) if raw.get("opts") else {}
            except json.JSONDecodeError:
                raise RecordError(f"{where}: field 'opts' is not JSON: {raw['opts']!r}") from None
            peaks = {
                c: _int_or_none(raw.get(peak_column(c), ""), f"{where}, {peak_column(c)}") for c in PROFILED_CONVENTIONS
            }
            rows[raw["entry"]] = ProfileRow(
                entry=raw["entry"],
                model=raw["model"],
                image_size=raw.get("image_size", ""),
                num_classes=_int_or_none(raw.get("num_classes", ""), f"{where}, num_classes") or 0,
                dtype=raw.get("dtype") or "fp32",
                opts=opts,
                params=_int_or_none(raw.get("params", ""), f"{where}, params"),
                trainable_params=_int_or_none(raw.get("trainable_params", ""), f"{where}, trainable_params"),
                macs=_int_or_none(raw.get("macs", ""), f"{where}, macs"),
                attention_macs=_int_or_none(raw.get("attention_macs", ""), f"{where}, attention_macs"),
                peak_bytes={c: v for c, v in peaks.items() if v is not None},
                peak_step={c: raw[step_column(c)] for c in PROFILED_CONVENTIONS if raw.get(step_column(c))},
                feature_shapes=raw.get("feature_shapes") or None,
                error=raw.get("error") or None,
            )
    except csv.Error as exc:
        raise RecordError(f"{path}: malformed CSV ({exc}); re-run: {_RERUN_PROFILE}") from None
    return rows


@dataclass(frozen=True)
class CellValue:
    """Our value of one reported cell that has its own ``model`` block (dtype, convention, options), in its unit."""

    table: str
    cell: str
    entry: str
    metric: str
    unit: str
    convention: str
    value: float | None
    error: str | None = None


CELL_COLUMNS = ["schema", "table", "cell", "entry", "metric", "unit", "convention", "value", "error"]


def cells_csv_text(values: Iterable[CellValue]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=CELL_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for v in values:
        writer.writerow(
            {
                "schema": schema_id(*CELLS_SCHEMA),
                "table": v.table,
                "cell": v.cell,
                "entry": v.entry,
                "metric": v.metric,
                "unit": v.unit,
                "convention": v.convention,
                "value": "" if v.value is None else repr(float(v.value)),
                "error": v.error or "",
            }
        )
    return buf.getvalue()


def read_cell_values(path: str | Path) -> dict[tuple[str, str], CellValue]:
    """``results/profile_cells.csv`` keyed by (table key, cell id)."""
    path = Path(path)
    try:
        reader = csv.DictReader(io.StringIO(path.read_text()))
        out: dict[tuple[str, str], CellValue] = {}
        for line, raw in enumerate(reader, start=2):
            where = f"{path}, line {line}"
            check_schema(raw.get("schema"), where, *CELLS_SCHEMA, rerun=_RERUN_PROFILE)
            try:
                value = float(raw["value"]) if raw.get("value") else None
            except ValueError:
                raise RecordError(f"{where}: field 'value' is not a number: {raw['value']!r}") from None
            out[(raw["table"], raw["cell"])] = CellValue(
                table=raw["table"],
                cell=raw["cell"],
                entry=raw.get("entry", ""),
                metric=raw.get("metric", ""),
                unit=raw.get("unit", ""),
                convention=raw.get("convention", ""),
                value=value,
                error=raw.get("error") or None,
            )
    except OSError as exc:
        raise RecordError(f"{path}: cannot read ({exc.strerror or exc}); re-run: {_RERUN_PROFILE}") from None
    except (csv.Error, KeyError) as exc:
        raise RecordError(f"{path}: malformed ({exc}); re-run: {_RERUN_PROFILE}") from None
    return out
