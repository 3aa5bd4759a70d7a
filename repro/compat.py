"""Load state dicts written by the official Self-Attentive Pooling code into this package's modules.

The official checkpoints hold the backbone under ``net.`` (its ``Network`` wrapper) and, when trained with
``nn.DataParallel``, under ``module.``; training checkpoints wrap the weights in a dict with a ``state_dict`` key.
This package keeps the official attribute names, so conversion is prefix handling plus an optional per-model
``_map_official_keys(state_dict)`` hook for any module whose layout differs.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

_WRAPPER_PREFIXES = ("module.", "net.")


class CheckpointMismatchError(RuntimeError):
    """Raised when an official state dict does not fit the module it is loaded into."""


def strip_wrapper_prefixes(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Remove leading ``module.`` (DataParallel) and ``net.`` (official ``Network``) prefixes, in any order."""
    out: dict[str, torch.Tensor] = {}
    for key, value in state_dict.items():
        stripped = True
        while stripped:
            stripped = False
            for prefix in _WRAPPER_PREFIXES:
                if key.startswith(prefix):
                    key = key[len(prefix) :]
                    stripped = True
        out[key] = value
    return out


def convert_official_state_dict(module: nn.Module, state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Return ``state_dict`` renamed to ``module``'s keys (without loading it)."""
    if "state_dict" in state_dict and isinstance(state_dict["state_dict"], Mapping):
        state_dict = state_dict["state_dict"]
    converted = strip_wrapper_prefixes(state_dict)
    mapper = getattr(module, "_map_official_keys", None)
    if callable(mapper):
        converted = dict(mapper(converted))
    return converted


def load_official_state_dict(
    module: nn.Module, state_dict: Mapping[str, torch.Tensor] | str | Path, *, strict: bool = True
) -> nn.Module:
    """Load an official state dict (or a path to an official checkpoint) into ``module`` and return it.

    With ``strict=True`` every key must match; a mismatch raises :class:`CheckpointMismatchError` listing the
    missing and unexpected keys (first few of each) and the shape conflicts.
    """
    if isinstance(state_dict, str | Path):
        state_dict = torch.load(state_dict, map_location="cpu", weights_only=True)
    converted = convert_official_state_dict(module, state_dict)
    own = module.state_dict()
    shape_conflicts = [
        f"{k}: checkpoint {tuple(v.shape)} vs model {tuple(own[k].shape)}"
        for k, v in converted.items()
        if k in own and own[k].shape != v.shape
    ]
    missing = sorted(set(own) - set(converted))
    unexpected = sorted(set(converted) - set(own))
    if shape_conflicts or (strict and (missing or unexpected)):
        raise CheckpointMismatchError(_mismatch_message(type(module).__name__, missing, unexpected, shape_conflicts))
    module.load_state_dict(converted, strict=strict)
    return module


def _mismatch_message(name: str, missing: list[str], unexpected: list[str], conflicts: list[str]) -> str:
    def head(items: list[str]) -> str:
        shown = ", ".join(items[:5])
        return shown + (f", ... ({len(items)} in all)" if len(items) > 5 else "")

    parts = [f"official state dict does not fit {name}:"]
    if missing:
        parts.append(f"missing keys: {head(missing)}")
    if unexpected:
        parts.append(f"unexpected keys: {head(unexpected)}")
    if conflicts:
        parts.append(f"shape conflicts: {head(conflicts)}")
    parts.append("check that the architecture string (pool, strides, placement) matches the checkpoint's")
    return "; ".join(parts)
