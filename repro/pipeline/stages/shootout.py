"""The ``shootout`` stage: every pool of the zoo in one backbone at the standard and the aggressive strides, with
seeds, trained for real on the CPU (:mod:`repro.experiments.shootout`), with the budget of ``params.yaml:
shootout``. Writes ``results/shootout/`` (records, the table with mean ± std and paired comparisons, plots, and a
run cache that lets a killed stage continue)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from repro.experiments.shootout import run_shootout
from repro.pipeline.params import PipelineParams

OUT_DIR = "results/shootout"


def run(params: PipelineParams, *, out: str | Path = OUT_DIR, progress: bool = False) -> dict[str, Any]:
    return run_shootout(params.section("shootout"), Path(out), progress=progress)
