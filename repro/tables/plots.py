"""Plots (matplotlib, PNG + SVG): accuracy vs peak memory per backbone and method; reported vs reproduced."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from repro.tables.join import JoinedCell, Results
from repro.tables.verdict import Verdict
from repro.utils.atomic import atomic_path


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, base: Path) -> list[Path]:
    base.parent.mkdir(parents=True, exist_ok=True)
    paths = []
    for ext in ("png", "svg"):
        path = base.with_suffix(f".{ext}")
        with atomic_path(path, suffix=f".{ext}") as tmp:
            fig.savefig(tmp, dpi=120, bbox_inches="tight", format=ext)
        paths.append(path)
    return paths


def _backbone_method(entry: Any) -> tuple[str, str]:
    """(backbone, pooling method) of an entry: parsed from an SAP name, else from a registered model name + options."""
    try:
        from repro.arch import parse_arch

        arch = parse_arch(entry.arch)
        return arch.backbone, arch.pool_type if hasattr(arch, "pool_type") else arch.pool
    except (ImportError, ValueError):
        pass
    name = entry.arch.split("@")[0]
    method = "rnnpool" if "_rnnpool" in name else "renet" if "_renet" in name else "base"
    opts = entry.model_opts
    if opts.get("replace"):
        method = str(opts["replace"])
    if opts.get("rnn_cell"):
        method += f"-{opts['rnn_cell']}"
    if opts.get("last_layer_rnnpool"):
        method += "+last-layer rnnpool"
    return name.replace("_rnnpool", "").replace("_renet", ""), method


def accuracy_vs_memory(results: Results, out: Path, profile: str) -> list[Path]:
    """One panel per backbone: best-epoch accuracy (ours) vs layerwise peak memory, one marker per method."""
    from repro.tables.claims import _memory

    points: dict[str, dict[str, list[tuple[float, float]]]] = {}
    for entry_id, rec in results.metrics.items():
        entry = (results.entries or {}).get(entry_id)
        mem = _memory(results, entry_id)
        if entry is None or rec.get("status") != "ok" or mem is None:
            continue
        backbone, method = _backbone_method(entry)
        points.setdefault(backbone, {}).setdefault(str(method), []).append((mem / 2**20, rec["accuracy"]["best"]))
    plt = _pyplot()
    n = max(1, len(points))
    cols = min(3, n)
    rows = (n + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(5 * cols, 3.8 * rows), squeeze=False)
    for ax, (backbone, methods) in zip(axes.flat, sorted(points.items())):
        for method, pts in sorted(methods.items()):
            xs, ys = zip(*sorted(pts))
            ax.scatter(xs, ys, label=method, s=18)
        ax.set_xscale("log")
        ax.set_title(backbone)
        ax.set_xlabel("peak memory, layerwise fp32 (MB)")
        ax.set_ylabel("top-1 accuracy, best epoch (%)")
        ax.legend(fontsize=6)
    for ax in list(axes.flat)[len(points) :]:
        ax.axis("off")
    if not points:
        axes.flat[0].text(0.5, 0.5, "no entry with both accuracy and memory", ha="center", va="center")
    fig.suptitle(
        f"Accuracy vs peak memory (profile: {profile}" + (", smoke: not comparable)" if profile != "full" else ")")
    )
    fig.tight_layout()
    paths = _save(fig, out / "accuracy_vs_memory")
    plt.close(fig)
    return paths


def reported_vs_reproduced(joined: list[JoinedCell], out: Path, profile: str) -> list[Path]:
    """Scatter of reported against reproduced values, per metric, coloured by verdict."""
    plt = _pyplot()
    metrics = ["accuracy", "map", "peak_memory", "macs", "params", "claim"]
    fig, axes = plt.subplots(2, 3, figsize=(13, 8), squeeze=False)
    colours = {Verdict.WITHIN: "tab:green", Verdict.OUTSIDE: "tab:red", Verdict.SMOKE: "tab:gray"}
    for ax, metric in zip(axes.flat, metrics):
        sel = [j for j in joined if j.cell.metric == metric and j.reproduced is not None and j.cell.value is not None]
        for verdict, colour in colours.items():
            pts = [(j.cell.value, j.reproduced) for j in sel if j.verdict is verdict]
            if pts:
                xs, ys = zip(*pts)
                ax.scatter(xs, ys, s=12, c=colour, label=f"{verdict.label} ({len(pts)})")
        if sel:
            lo = min(min(j.cell.value, j.reproduced) for j in sel)
            hi = max(max(j.cell.value, j.reproduced) for j in sel)
            ax.plot([lo, hi], [lo, hi], "k--", lw=0.8)
            ax.legend(fontsize=7)
        ax.set_title(metric)
        ax.set_xlabel("reported")
        ax.set_ylabel("reproduced")
    fig.suptitle(f"Reported vs reproduced (profile: {profile})")
    paths = _save(fig, out / "reported_vs_reproduced")
    plt.close(fig)
    return paths
