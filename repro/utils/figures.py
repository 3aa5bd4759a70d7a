"""Saving matplotlib figures: the Agg backend, PNG + SVG, each file written atomically."""

from __future__ import annotations

from pathlib import Path

from repro.utils.atomic import atomic_path

__all__ = ["pyplot", "save_figure"]

FORMATS = ("png", "svg")


def pyplot():
    """``matplotlib.pyplot`` on the non-interactive Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, base: str | Path, formats: tuple[str, ...] = FORMATS, dpi: int = 120) -> list[Path]:
    """Write ``fig`` to ``base.<ext>`` for every format (atomically) and close it; returns the paths."""
    base = Path(base)
    paths = []
    try:
        for ext in formats:
            path = base.with_suffix(f".{ext}")
            with atomic_path(path, suffix=f".{ext}") as tmp:
                fig.savefig(tmp, dpi=dpi, bbox_inches="tight", format=ext)
            paths.append(path)
    finally:
        pyplot().close(fig)
    return paths
