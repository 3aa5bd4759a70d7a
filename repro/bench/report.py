"""Write benchmark rows as a Markdown table (with the measurement notes) and a CSV, atomically."""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Sequence
from pathlib import Path

from repro.utils.atomic import write_text_atomic

__all__ = [
    "ATTENTION_COLUMNS",
    "DETECTION_COLUMNS",
    "LAYER_COLUMNS",
    "MODEL_COLUMNS",
    "format_markdown",
    "write_report",
]

LAYER_COLUMNS = (
    ("site", "site"),
    ("channels", "C"),
    ("height", "H"),
    ("width", "W"),
    ("stride", "s"),
    ("heads", "heads"),
    ("batch", "B"),
    ("precision", "precision"),
    ("pool", "pool"),
    ("impl", "impl"),
    ("ms", "fwd+bwd ms"),
    ("iqr_ms", "IQR ms"),
    ("peak_mib", "peak MiB"),
    ("gmacs", "fwd+bwd GMAC"),
    ("gflops", "GFLOP/s"),
    ("matmul_gflops", "matmul GFLOP/s"),
    ("of_matmul", "of matmul"),
    ("x_vs_conv", "time / conv"),
    ("mem_vs_conv", "mem / conv"),
    ("speedup_vs_faithful", "speed-up vs faithful"),
    ("mem_vs_faithful", "mem / faithful"),
    ("error", "error"),
)
MODEL_COLUMNS = (
    ("arch", "arch"),
    ("image_size", "px"),
    ("batch", "B"),
    ("precision", "precision"),
    ("layout", "layout"),
    ("impl", "impl"),
    ("ms", "train step ms"),
    ("iqr_ms", "IQR ms"),
    ("peak_mib", "peak MiB"),
    ("gmacs", "fwd+bwd GMAC"),
    ("gflops", "GFLOP/s"),
    ("x_vs_baseline", "time / baseline"),
    ("macs_vs_baseline", "MACs / baseline"),
    ("time_per_mac_vs_baseline", "time per MAC / baseline"),
    ("baseline", "baseline"),
    ("speedup_vs_faithful", "speed-up vs faithful"),
    ("error", "error"),
)
DETECTION_COLUMNS = (
    ("detector", "detector"),
    ("arch", "arch"),
    ("recipe", "recipe"),
    ("image_size", "px"),
    ("batch", "B"),
    ("ms", "train step ms"),
    ("iqr_ms", "IQR ms"),
    ("ms_per_image", "ms / image"),
    ("peak_mib", "peak MiB"),
    ("x_vs_baseline", "time / baseline"),
    ("baseline", "baseline"),
    ("error", "error"),
)
ATTENTION_COLUMNS = (
    ("batch", "B"),
    ("heads", "heads"),
    ("tokens", "N"),
    ("head_dim", "d"),
    ("impl", "impl"),
    ("ms", "fwd+bwd ms"),
    ("iqr_ms", "IQR ms"),
    ("gflops", "GFLOP/s"),
    ("peak_mib", "peak MiB"),
    ("speedup_vs_sdpa", "speed-up vs sdpa"),
    ("max_abs_diff", "max abs diff"),
)


def _fmt(value) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 10 else f"{value:.1f}"
    return str(value).replace("|", "/")


def format_markdown(rows: Sequence[dict], columns: Sequence[tuple[str, str]]) -> str:
    """A GitHub Markdown table of ``rows``; columns absent from every row are left out."""
    present = [(key, title) for key, title in columns if any(row.get(key) is not None for row in rows)]
    lines = [
        "| " + " | ".join(title for _, title in present) + " |",
        "|" + "|".join("---" for _ in present) + "|",
    ]
    lines += ["| " + " | ".join(_fmt(row.get(key)) for key, _ in present) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def write_report(
    rows: Sequence[dict], out_stem: str | Path, columns: Sequence[tuple[str, str]], *, title: str, notes: Sequence[str]
) -> tuple[Path, Path]:
    """Write ``<out_stem>.md`` (title, notes, table) and ``<out_stem>.csv`` (every field); return both paths."""
    stem = Path(out_stem)
    md_path, csv_path = stem.with_suffix(".md"), stem.with_suffix(".csv")
    body = f"# {title}\n\n" + "".join(f"* {note}\n" for note in notes) + "\n" + format_markdown(rows, columns)
    write_text_atomic(md_path, body)
    fields = [key for key, _ in columns if any(key in row for row in rows)]
    fields += sorted({key for row in rows for key in row} - set(fields))
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=fields, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    write_text_atomic(csv_path, buffer.getvalue())
    return md_path, csv_path
