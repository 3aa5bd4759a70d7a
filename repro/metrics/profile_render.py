"""Text renderings of profiles for the command line: tables (tabulate), CSV and JSON."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict

from tabulate import tabulate

from repro.metrics.profile import ModelProfile
from repro.metrics.ratios import DownsamplingRatio
from repro.records.entries import size_text
from repro.records.profile import ProfileRow, in_unit, profile_csv_text

__all__ = ["FORMATS", "render_profiles", "render_ratios", "render_rows"]

FORMATS: tuple[str, ...] = ("table", "csv", "json")
FOOTNOTE = "MB = 2^20 bytes, KB = 2^10 bytes; MACs = multiply-accumulates at batch 1."


def _check(fmt: str) -> None:
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; valid choices: {', '.join(FORMATS)}")


def _memory_unit(dtype: str) -> str:
    return "KB" if dtype == "int8" else "MB"


def render_profiles(profiles: Sequence[ModelProfile], fmt: str = "table") -> str:
    """Single-model profiles: ``table`` (with where each peak is and the feature-map sizes), ``csv`` or ``json``."""
    _check(fmt)
    if fmt == "json":
        return json.dumps([p.as_dict() for p in profiles], indent=2)
    if fmt == "csv":
        return profile_csv_text(p.to_row() for p in profiles)
    rows = []
    for p in profiles:
        unit = _memory_unit(p.dtype)
        row = {
            "model": p.id,
            "size": size_text(p.image_size),
            "classes": p.num_classes,
            "params (M)": f"{p.params / 1e6:.3f}",
            "MACs (G)": f"{p.macs / 1e9:.4f}",
            "attention MACs (G)": f"{p.attention_macs / 1e9:.4f}",
        }
        for name, report in p.memory.items():
            row[f"{name} ({unit}, {p.dtype})"] = f"{in_unit(report.peak_bytes, unit):.4f}"
        for mode, value in p.measured.items():
            row[f"measured {mode} (MB)"] = f"{value / 2**20:.2f}"
        rows.append(row)
    lines = [tabulate(rows, headers="keys", tablefmt="github")]
    for p in profiles:
        lines += ["", f"{p.id} @ {size_text(p.image_size)}:"]
        lines += [f"  {name:24s} peak at {r.where}: {r.detail}" for name, r in p.memory.items()]
        if p.feature_shapes:
            shapes = ", ".join(f"{n} {c}x{h}x{w}" for n, (c, h, w) in p.feature_shapes)
            lines.append(f"  feature maps (C x H x W): {shapes}")
        if p.measured_method:
            lines.append(f"  measured with {p.measured_method} (batch 1 inference, batch 2 training step)")
    return "\n".join([*lines, "", FOOTNOTE])


def render_rows(rows: Sequence[ProfileRow], fmt: str = "table", conventions: Sequence[str] = ("layerwise",)) -> str:
    """Entry profiles (one row per entry; failures show their error)."""
    _check(fmt)
    if fmt == "json":
        return json.dumps([asdict(r) for r in rows], indent=2)
    if fmt == "csv":
        return profile_csv_text(rows)
    shown = []
    for r in rows:
        unit = _memory_unit(r.dtype)
        line = {
            "entry": r.entry,
            "size": r.image_size,
            "params (M)": None if r.params is None else round(r.params / 1e6, 4),
            "MACs (G)": None if r.macs is None else round(r.macs / 1e9, 4),
        }
        for c in conventions:
            peak = r.peak(c)
            line[f"{c} ({unit})"] = None if peak is None else round(in_unit(peak, unit), 4)
        if r.error:
            line["error"] = r.error
        shown.append(line)
    failed = sum(bool(r.error) for r in rows)
    text = tabulate(shown, headers="keys", tablefmt="github", missingval="—")
    return text + (f"\n\n{failed} profile(s) failed; see the 'error' column." if failed else "") + "\n\n" + FOOTNOTE


def render_ratios(ratios: Sequence[DownsamplingRatio]) -> str:
    """The aggressive-downsampling memory ratios as a table."""
    rows = [
        {
            "arch": r.arch,
            "size": r.image_size,
            "convention": r.convention,
            "peak (MB)": round(r.peak_bytes / 2**20, 4),
            "vs same pool": None if r.ratio_vs_same_pool is None else round(r.ratio_vs_same_pool, 2),
            "vs standard net": None if r.ratio_vs_standard is None else round(r.ratio_vs_standard, 2),
        }
        for r in ratios
    ]
    return tabulate(rows, headers="keys", tablefmt="github", missingval="—") if rows else "(no aggressive architecture)"
