"""Plots of the regenerated tables (matplotlib, PNG + SVG, and the CSV data behind them for ``dvc plots``).

* ``reported_vs_reproduced``: per metric, ours / reported (log scale) against the reported value (log scale), coloured
  by verdict, the tolerance band of each cell as an error bar; values spanning orders of magnitude stay readable;
* ``accuracy_vs_memory``: learned (full-profile) best-epoch accuracy against layerwise peak memory, one panel per
  backbone, one colour per pooling method. Smoke accuracies are never plotted; without learned results the figure
  says so.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from pathlib import Path

from repro.arch import ArchError, parse_arch
from repro.records.entries import Entry
from repro.records.verdict import CellVerdict, Verdict
from repro.tables.results import Results
from repro.utils.atomic import atomic_path, write_text_atomic

COLOURS = {Verdict.WITHIN: "tab:green", Verdict.OUTSIDE: "tab:red", Verdict.SMOKE: "tab:gray"}
METRIC_TITLES = {
    "accuracy": "accuracy",
    "map": "mAP",
    "peak_memory": "peak memory",
    "macs": "MACs",
    "params": "parameters",
    "claim": "abstract claims",
    "hidden_size": "hidden sizes",
}


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, base: Path) -> list[Path]:
    paths = []
    for ext in ("png", "svg"):
        path = base.with_suffix(f".{ext}")
        with atomic_path(path, suffix=f".{ext}") as tmp:
            fig.savefig(tmp, dpi=120, format=ext)
        paths.append(path)
    return paths


def plotted_cells(joined: Sequence[CellVerdict]) -> list[CellVerdict]:
    """Cells with both values, positive (a log axis needs them)."""
    return [j for j in joined if j.reproduced is not None and j.cell.value and j.cell.value > 0 and j.reproduced > 0]


def reported_vs_reproduced(joined: Sequence[CellVerdict], out: Path, profile: str) -> list[Path]:
    """One panel per metric: ours / reported against reported, both on log scales, with each cell's tolerance."""
    cells = plotted_cells(joined)
    metrics = [m for m in METRIC_TITLES if any(j.cell.metric == m for j in cells)] or ["params"]
    plt = _pyplot()
    cols = min(3, len(metrics))
    rows = (len(metrics) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(5.2 * cols, 4.2 * rows), squeeze=False, layout="constrained")
    for ax, metric in zip(axes.flat, metrics):
        sel = [j for j in cells if j.cell.metric == metric]
        for verdict, colour in COLOURS.items():
            pts = [j for j in sel if j.verdict is verdict]
            if not pts:
                continue
            xs = [j.cell.value for j in pts]
            ys = [j.reproduced / j.cell.value for j in pts]
            ax.scatter(xs, ys, s=14, c=colour, label=f"{verdict.label} ({len(pts)})", zorder=2)
        for j in sel:  # the tolerance band of every cell, as a thin vertical bar
            low, high = j.cell.bounds()
            low = max(low, 1e-3 * j.cell.value)  # a log axis cannot show a band reaching zero
            ax.plot([j.cell.value] * 2, [low / j.cell.value, high / j.cell.value], color="0.7", lw=0.8, zorder=1)
        ax.axhline(1.0, color="k", ls="--", lw=0.8)
        ax.set_xscale("log")
        ax.set_yscale("log")
        units = sorted({j.cell.unit for j in sel})
        ax.set_title(f"{METRIC_TITLES[metric]} ({', '.join(units)})", fontsize=10)
        ax.set_xlabel("reported value")
        ax.set_ylabel("ours / reported")
        if sel:
            ax.legend(fontsize=7, loc="best")
    for ax in list(axes.flat)[len(metrics) :]:
        ax.axis("off")
    if not cells:
        axes.flat[0].text(
            0.5, 0.5, "no cell has both values", ha="center", va="center", transform=axes.flat[0].transAxes
        )
    fig.suptitle(f"Reproduced against reported (profile: {profile}); the dashed line is agreement")
    paths = _save(fig, out / "reported_vs_reproduced")
    plt.close(fig)
    paths.append(write_text_atomic(out / "reported_vs_reproduced.csv", _cells_csv(cells)))
    return paths


def _cells_csv(cells: Sequence[CellVerdict]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["table", "cell", "metric", "unit", "reported", "reproduced", "ratio", "verdict"])
    for j in cells:
        writer.writerow(
            [
                j.table,
                j.cell.id,
                j.cell.metric,
                j.cell.unit,
                j.cell.value,
                j.reproduced,
                j.reproduced / j.cell.value,
                j.verdict.value,
            ]
        )
    return buf.getvalue()


def backbone_and_method(entry: Entry) -> tuple[str, str]:
    """(backbone, pooling method) of an entry: parsed from an SAP name, else from a registered name + options."""
    try:
        arch = parse_arch(entry.arch)
        return arch.backbone, arch.pool_type
    except ArchError:
        pass
    name = entry.arch
    method = "rnnpool" if "_rnnpool" in name else "renet" if "_renet" in name else "base"
    opts = entry.model_opts
    if opts.get("replace"):
        method = str(opts["replace"])
    if opts.get("rnn_cell"):
        method += f"-{opts['rnn_cell']}"
    if opts.get("last_layer_rnnpool"):
        method += "+last-layer rnnpool"
    return name.replace("_rnnpool", "").replace("_renet", ""), method


def learned_points(results: Results) -> dict[str, dict[str, list[tuple[float, float]]]]:
    """backbone -> method -> [(layerwise peak MB, best accuracy %)] of the entries trained in the full profile."""
    points: dict[str, dict[str, list[tuple[float, float]]]] = {}
    for entry_id, record in results.metrics.items():
        entry = results.entries.get(entry_id)
        row = results.profile.get(entry_id)
        acc = record.value("accuracy", "best")
        peak = None if row is None else row.peak("layerwise")
        if entry is None or not record.is_comparable or acc is None or peak is None:
            continue
        backbone, method = backbone_and_method(entry)
        points.setdefault(backbone, {}).setdefault(method, []).append((peak / 2**20, acc))
    return points


def accuracy_vs_memory(results: Results, out: Path, profile: str) -> list[Path]:
    """One panel per backbone: learned best-epoch accuracy vs layerwise peak memory, one marker per method."""
    points = learned_points(results)
    plt = _pyplot()
    n = max(1, len(points))
    cols = min(3, n)
    rows = (n + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(5 * cols, 3.8 * rows), squeeze=False, layout="constrained")
    for ax, (backbone, methods) in zip(axes.flat, sorted(points.items())):
        for method, pts in sorted(methods.items()):
            xs, ys = zip(*sorted(pts))
            ax.scatter(xs, ys, label=method, s=18)
        ax.set_xscale("log")
        ax.set_title(backbone, fontsize=10)
        ax.set_xlabel("peak memory, layerwise fp32 (MB)")
        ax.set_ylabel("top-1 accuracy, best epoch (%)")
        ax.legend(fontsize=6)
    for ax in list(axes.flat)[len(points) :]:
        ax.axis("off")
    if not points:
        ax = axes.flat[0]
        ax.axis("off")
        ax.text(
            0.5,
            0.5,
            f"No learned results to plot (profile: {profile}).\nSmoke runs train one step per entry; their accuracies "
            "are not plotted.\nRun the full profile (dvc exp run -S profile=full) for this figure;\nthe learned CPU "
            "results of the default run are in results/shootout and results/probes.",
            ha="center",
            va="center",
            fontsize=9,
            transform=ax.transAxes,
        )
    fig.suptitle("Accuracy vs peak memory (learned results only)")
    paths = _save(fig, out / "accuracy_vs_memory")
    plt.close(fig)
    return paths
