"""Per-epoch dvclive logs of a run (``metrics.json`` and provenance come from :mod:`repro.utils`)."""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from repro.utils.atomic import write_json_atomic

log = logging.getLogger(__name__)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def inside_dvc_repo(start: str | Path | None = None) -> bool:
    """Whether ``start`` (default: the working directory) lies in a DVC repository, or DVC runs this process."""
    if os.environ.get("DVC_ROOT"):
        return True
    start = Path(start or Path.cwd()).resolve()
    return any((folder / ".dvc").is_dir() for folder in (start, *start.parents))


class EpochLogger:
    """Per-epoch metrics in dvclive's layout: ``<dir>/metrics.json`` (latest values) and ``<dir>/plots/metrics/*.tsv``,
    plus custom plots (``<dir>/plots/custom/*.json``, :meth:`log_plot`).

    Inside a DVC repository (or a ``dvc exp run``) the files are written by :class:`dvclive.Live`; elsewhere the same
    files are written directly, because dvclive would otherwise run ``dvc init`` in an enclosing git repository.
    The logger is rebuilt from the full history on every (re)start, so an interrupted and resumed run ends with the
    same files as an uninterrupted one. No ``dvc.yaml`` is written: declare ``<dir>/metrics.json`` as metrics and
    ``<dir>/plots/metrics`` as plots in the pipeline so that ``dvc exp show`` and ``dvc plots show`` find them.
    """

    def __init__(self, directory: str | Path, history: Iterable[dict[str, Any]] = (), enabled: bool = True):
        self.directory = Path(directory)
        self.enabled = enabled
        self.live = None
        self._summary: dict[str, Any] = {}
        if not enabled:
            return
        if self.directory.exists():
            shutil.rmtree(self.directory)
        if inside_dvc_repo():
            from dvclive import Live

            logging.getLogger("dvclive").setLevel(logging.WARNING)
            self.live = Live(dir=str(self.directory), save_dvc_exp=False, dvcyaml=False, report=None)
        for row in history:
            self.log(row)

    def log(self, row: dict[str, Any]) -> None:
        """Log one epoch's row (``epoch`` plus numeric metrics; other values are skipped)."""
        if not self.enabled:
            return
        step = int(row["epoch"])
        values = {
            k: v for k, v in row.items() if k != "epoch" and isinstance(v, int | float) and not isinstance(v, bool)
        }
        if self.live is not None:
            self.live.step = step
            for key, value in values.items():
                self.live.log_metric(key, value)
            self.live.next_step()
            return
        plots = self.directory / "plots" / "metrics"
        plots.mkdir(parents=True, exist_ok=True)
        for key, value in values.items():
            tsv = plots / f"{key}.tsv"
            new = not tsv.exists()
            with open(tsv, "a") as handle:
                if new:
                    handle.write(f"step\t{key}\n")
                handle.write(f"{step}\t{value}\n")
        self._summary.update(values)
        self._summary["step"] = step
        write_json_atomic(self.directory / "metrics.json", self._summary)

    def log_plot(self, name: str, rows: list[dict[str, Any]], x: str, y: str, title: str | None = None) -> None:
        """A custom plot (e.g. a precision-recall curve) as dvclive's ``<dir>/plots/custom/<name>.json``."""
        if not self.enabled:
            return
        if self.live is not None:
            self.live.log_plot(name, rows, x=x, y=y, template="linear", title=title)
            return
        write_json_atomic(self.directory / "plots" / "custom" / f"{name}.json", rows)

    def close(self) -> None:
        if self.live is not None:
            self.live.end()
            self.live = None
