"""``repro experiment NAME``: run one experiment with settings from a YAML file (or its defaults)."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from repro.experiments.settings import SettingsError

__all__ = ["EXPERIMENTS", "experiment_command", "load_settings"]

EXPERIMENTS: dict[str, str] = {
    "table7": "repro.experiments.table7:run_table7",
    "c2": "repro.experiments.c2_probes:run_c2_probes",
    "shootout": "repro.experiments.shootout:run_shootout",
}


def _entry(name: str) -> Callable[..., dict[str, Any]]:
    if name not in EXPERIMENTS:
        raise SettingsError(f"unknown experiment {name!r}; valid: {', '.join(EXPERIMENTS)}")
    module, _, function = EXPERIMENTS[name].partition(":")
    import importlib

    return getattr(importlib.import_module(module), function)


def load_settings(path: str | Path | None, section: str | None = None) -> dict[str, Any]:
    """The mapping at ``section`` (dotted, e.g. ``probes.table7``) of the YAML file ``path``; ``{}`` without a file."""
    if path is None:
        return {}
    import yaml

    path = Path(path)
    try:
        data: Any = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise SettingsError(f"cannot read settings file {path}: {exc}") from None
    for key in (section or "").split(".") if section else []:
        if not isinstance(data, Mapping) or key not in data:
            raise SettingsError(f"{path}: no key {section!r} (missing {key!r})")
        data = data[key]
    if not isinstance(data, Mapping):
        raise SettingsError(f"{path}: {section or 'the file'} must be a mapping of settings, got {type(data).__name__}")
    return dict(data)


def experiment_command(
    name: str, settings_file: str | None, section: str | None, out: str, overrides: str | None, progress: bool
) -> int:
    """Run experiment ``name`` into ``out``; ``overrides`` is a JSON mapping applied over the file's settings.
    Prints where the records went; returns the exit status."""
    settings = load_settings(settings_file, section)
    if overrides:
        try:
            extra = json.loads(overrides)
        except json.JSONDecodeError as exc:
            raise SettingsError(f"--set must be a JSON mapping, e.g. '{{\"workers\": 1}}': {exc}") from None
        if not isinstance(extra, Mapping):
            raise SettingsError("--set must be a JSON mapping")
        settings.update(extra)
    records = _entry(name)(settings, Path(out), progress=progress)
    print(f"{name}: {len(records['rows'])} rows in {records.get('wall_seconds')} s -> {Path(out).resolve()}")
    return 0
