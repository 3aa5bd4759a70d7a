"""``params.yaml``: the profile (``smoke`` / ``full``) and its settings, validated."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

PROFILES = ("smoke", "full")


class ParamsError(ValueError):
    """A malformed ``params.yaml`` (the message names the key and the valid values)."""


@dataclass(frozen=True)
class PipelineParams:
    profile: str = "smoke"
    seed: int = 0
    data_root: str = "data"
    device: str = "auto"
    smoke: dict[str, Any] = field(default_factory=dict)
    full: dict[str, Any] = field(default_factory=dict)

    @property
    def is_smoke(self) -> bool:
        return self.profile == "smoke"

    @property
    def settings(self) -> dict[str, Any]:
        return self.smoke if self.is_smoke else self.full


def load_params(path: str | Path = "params.yaml") -> PipelineParams:
    path = Path(path)
    if not path.is_file():
        raise ParamsError(f"{path}: not found (run from the repository root, where params.yaml lives)")
    data = yaml.safe_load(path.read_text()) or {}
    if not isinstance(data, dict):
        raise ParamsError(f"{path}: expected a mapping")
    profile = data.get("profile", "smoke")
    if profile not in PROFILES:
        raise ParamsError(f"{path}: profile {profile!r} is not one of {PROFILES} (e.g. dvc exp run -S profile=full)")
    return PipelineParams(
        profile=profile,
        seed=int(data.get("seed", 0)),
        data_root=str(data.get("data_root", "data")),
        device=str(data.get("device", "auto")),
        smoke=dict(data.get("smoke") or {}),
        full=dict(data.get("full") or {}),
    )
