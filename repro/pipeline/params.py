"""``params.yaml``: the profile (``smoke`` / ``full``) and its settings, validated into :class:`PipelineParams`.

Unknown keys are errors (a misspelt setting would otherwise be ignored); every error names the key and the valid
values. Sections a stage owns (``probes``, ``shootout``) are kept as mappings and validated by that stage.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from repro.utils.yaml_load import safe_load

PROFILES = ("smoke", "full")
BACKENDS = ("torch", "ffcv")


class ParamsError(ValueError):
    """A malformed ``params.yaml`` (the message names the key and the valid values)."""


@dataclass(frozen=True)
class SmokeSettings:
    """The default profile: every entry builds, trains a few steps and evaluates, on generated data, on a CPU."""

    datasets: tuple[str, ...] = ("shapes",)
    dataset: str = "shapes"
    data_root: str = "data/smoke"
    prepare: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    image_size: int = 32
    epochs: int = 1
    max_steps_per_epoch: int = 1
    batch_size: int = 2
    detection_image_size: int = 96
    detection_eval_images: int = 2
    threads: int = 1
    workers: int = 2  # entries of a group trained at once, each in a forked process of `threads` threads


@dataclass(frozen=True)
class FullSettings:
    """The paper settings: each entry's recipe, dataset, image size and epochs, on real data under ``data_root``."""

    num_workers: int = 8
    backend: str = "torch"
    threads: int | None = None


@dataclass(frozen=True)
class PipelineParams:
    profile: str = "smoke"
    seed: int = 0
    data_root: str = "data"
    device: str = "auto"
    datasets: tuple[str, ...] = ()
    profile_workers: int = 2
    smoke: SmokeSettings = field(default_factory=SmokeSettings)
    full: FullSettings = field(default_factory=FullSettings)
    sections: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)  # stage-owned: probes, shootout

    @property
    def is_smoke(self) -> bool:
        return self.profile == "smoke"

    @property
    def train_data_root(self) -> str:
        return self.smoke.data_root if self.is_smoke else self.data_root

    def section(self, name: str) -> Mapping[str, Any]:
        return self.sections.get(name, {})


_SECTIONS = ("probes", "shootout")


def _typed(cls: type, raw: Any, where: str) -> Any:
    if raw is None:
        return cls()
    if not isinstance(raw, Mapping):
        raise ParamsError(f"{where}: expected a mapping, got {raw!r}")
    known = {f.name: f for f in fields(cls)}
    unknown = set(raw) - set(known)
    if unknown:
        raise ParamsError(f"{where}: unknown key(s) {sorted(unknown)}; valid: {', '.join(known)}")
    values = {}
    defaults = cls()
    for key, value in raw.items():
        default = getattr(defaults, key)
        values[key] = _coerce(value, default, f"{where}.{key}")
    return cls(**values)


def _coerce(value: Any, default: Any, where: str) -> Any:
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise ParamsError(f"{where}: expected true or false, got {value!r}")
        return value
    if isinstance(default, int) or (default is None and isinstance(value, int)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ParamsError(f"{where}: expected a non-negative integer, got {value!r}")
        return value
    if isinstance(default, str):
        if not isinstance(value, str) or not value:
            raise ParamsError(f"{where}: expected a non-empty string, got {value!r}")
        return value
    if isinstance(default, tuple):
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ParamsError(f"{where}: expected a list of names, got {value!r}")
        return tuple(value)
    if isinstance(default, Mapping) or default is None:
        if not isinstance(value, Mapping):
            raise ParamsError(f"{where}: expected a mapping, got {value!r}")
        return dict(value)
    return value


def load_params(path: str | Path = "params.yaml") -> PipelineParams:
    path = Path(path)
    if not path.is_file():
        raise ParamsError(f"{path}: not found (run from the repository root, where params.yaml lives)")
    try:
        data = safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ParamsError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None
    if not isinstance(data, Mapping):
        raise ParamsError(f"{path}: expected a mapping")
    top = {f.name for f in fields(PipelineParams)} - {"sections"}
    unknown = set(data) - top - set(_SECTIONS)
    if unknown:
        raise ParamsError(f"{path}: unknown key(s) {sorted(unknown)}; valid: {', '.join(sorted(top | set(_SECTIONS)))}")
    profile = data.get("profile", "smoke")
    if profile not in PROFILES:
        raise ParamsError(f"{path}: profile {profile!r} is not one of {PROFILES} (e.g. dvc exp run -S profile=full)")
    defaults = PipelineParams()
    plain = {
        key: _coerce(data[key], getattr(defaults, key), f"{path}: {key}")
        for key in ("seed", "data_root", "device", "datasets", "profile_workers")
        if key in data
    }
    full = _typed(FullSettings, data.get("full"), f"{path}: full")
    if full.backend not in BACKENDS:
        raise ParamsError(f"{path}: full.backend {full.backend!r} is not one of {BACKENDS}")
    sections = {}
    for name in _SECTIONS:
        if name in data:
            sections[name] = _coerce(data[name], {}, f"{path}: {name}")
    return PipelineParams(
        profile=profile,
        smoke=_typed(SmokeSettings, data.get("smoke"), f"{path}: smoke"),
        full=full,
        sections=sections,
        **plain,
    )
