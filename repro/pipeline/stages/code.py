"""The ``code`` stage: ``results/code/<stage>.txt`` for every other stage of ``dvc.yaml``, the SHA-256 of each module
its command can import (:func:`repro.pipeline.dvcfile.fingerprint`). Each stage depends on its file, so a change to
the package re-runs exactly the stages that can import what changed (and a new import is seen without regenerating
``dvc.yaml``)."""

from __future__ import annotations

from pathlib import Path

from repro.pipeline.dvcfile import STAGES, fingerprint, fingerprint_path
from repro.utils.atomic import write_text_atomic


def run(repo: str | Path = ".") -> list[Path]:
    """Write the fingerprint of every stage that has one; returns the files written."""
    repo = Path(repo)
    return [
        write_text_atomic(repo / fingerprint_path(spec.name), fingerprint(spec, repo))
        for spec in STAGES
        if spec.fingerprinted
    ]
