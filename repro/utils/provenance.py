"""Provenance of a result: the git revision of the code, package versions and the accelerator.

One implementation for every file that records where it came from (``metrics.json``, run records, the tables'
index): ``git_revision()`` gives the full commit hash with ``-dirty`` when tracked files have changed.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterable
from functools import lru_cache
from importlib import metadata
from pathlib import Path
from typing import Any

PACKAGES = ("torch", "torchvision", "numpy", "pandas", "dvc", "dvclive", "ffcv", "pycocotools")


def _git(args: list[str], cwd: Path) -> str:
    return subprocess.run(
        ["git", *args], cwd=cwd, capture_output=True, text=True, timeout=10, check=True
    ).stdout.strip()


@lru_cache(maxsize=8)
def _revision(cwd: Path) -> str | None:
    try:
        rev = _git(["rev-parse", "HEAD"], cwd)
        dirty = _git(["status", "--porcelain", "--untracked-files=no"], cwd)
    except (OSError, subprocess.SubprocessError):
        return None
    return f"{rev}-dirty" if dirty else rev


def git_revision(cwd: str | Path | None = None) -> str | None:
    """``<full sha>`` (+ ``-dirty`` when tracked files have changes) of the checkout holding ``cwd`` (default: the
    package's own folder), or ``None`` outside git. Cached per process: a stage's outputs all name one revision."""
    import repro

    return _revision(Path(cwd or Path(repro.__file__).resolve().parent).resolve())


def package_versions(names: Iterable[str] = PACKAGES) -> dict[str, str]:
    """Installed versions of ``names`` (absent packages are left out), plus Python and repro."""
    import repro

    versions = {"python": sys.version.split()[0], "repro": repro.__version__}
    for name in names:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


def provenance(*, accelerator: bool = True) -> dict[str, Any]:
    """``{versions, git_revision, cuda, gpu}``; ``accelerator=False`` leaves out the CUDA fields (no torch import)."""
    record: dict[str, Any] = {"versions": package_versions(), "git_revision": git_revision()}
    if accelerator:
        import torch

        cuda = torch.cuda.is_available()
        record["cuda"] = torch.version.cuda if cuda else None
        record["gpu"] = torch.cuda.get_device_name(0) if cuda else None
    return record
