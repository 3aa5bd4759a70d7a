"""Per-epoch logs of a run in dvclive's layout (``metrics.json`` and provenance come from :mod:`repro.utils`)."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from repro.utils.atomic import write_json_atomic, write_text_atomic

PLOTS_DIR = Path("plots") / "metrics"
SUMMARY_NAME = "metrics.json"


def _numeric(row: dict[str, Any]) -> dict[str, int | float]:
    return {k: v for k, v in row.items() if k != "epoch" and isinstance(v, int | float) and not isinstance(v, bool)}


class EpochLogger:
    """Per-epoch metrics in dvclive's layout: ``<dir>/metrics.json`` (latest values and ``step``),
    ``<dir>/plots/metrics/<metric>.tsv`` (``step<TAB><metric>`` rows), which ``dvc metrics`` / ``dvc plots`` read, and
    custom plots (``<dir>/plots/custom/<name>.json``, :meth:`log_plot`).

    Every file is rewritten whole through :mod:`repro.utils.atomic` after each epoch (dvclive itself appends to its
    TSV files, which a kill can leave torn), and the logger is rebuilt from the run's full history on every
    (re)start, so an interrupted and resumed run ends with the same files as an uninterrupted one. No ``dvc.yaml``
    is written: declare ``<dir>/metrics.json`` as metrics and ``<dir>/plots/metrics`` as plots in the pipeline.
    """

    def __init__(self, directory: str | Path, history: Iterable[dict[str, Any]] = (), enabled: bool = True):
        self.directory = Path(directory)
        self.enabled = enabled
        self._rows: list[tuple[int, dict[str, int | float]]] = []
        if not enabled:
            return
        self._rows = [(int(row["epoch"]), _numeric(row)) for row in history]
        self._write()
        expected = {self._tsv(key) for key in self._keys()} | ({self.directory / SUMMARY_NAME} if self._rows else set())
        for path in sorted(self.directory.rglob("*")):  # files of an earlier, longer-lived state of this run
            if path.is_file() and path not in expected:
                path.unlink()

    def _tsv(self, key: str) -> Path:
        return self.directory / PLOTS_DIR / f"{key}.tsv"

    def _keys(self) -> list[str]:
        return list(dict.fromkeys(key for _, values in self._rows for key in values))

    def _write(self) -> None:
        summary: dict[str, Any] = {}
        for step, values in self._rows:
            summary.update(values)
            summary["step"] = step
        for key in self._keys():
            lines = [f"step\t{key}", *(f"{step}\t{values[key]}" for step, values in self._rows if key in values)]
            write_text_atomic(self._tsv(key), "\n".join(lines) + "\n")
        if self._rows:
            write_json_atomic(self.directory / SUMMARY_NAME, summary)

    def log(self, row: dict[str, Any]) -> None:
        """Log one epoch's row (``epoch`` plus numeric metrics; other values are skipped)."""
        if not self.enabled:
            return
        self._rows.append((int(row["epoch"]), _numeric(row)))
        self._write()

    def log_plot(self, name: str, rows: list[dict[str, Any]], x: str, y: str, title: str | None = None) -> None:
        """A custom plot (e.g. a precision-recall curve) as dvclive's ``<dir>/plots/custom/<name>.json``."""
        if not self.enabled:
            return
        write_json_atomic(self.directory / "plots" / "custom" / f"{name}.json", rows)

    def close(self) -> None:
        """Nothing is buffered: every file is complete after each :meth:`log`."""
