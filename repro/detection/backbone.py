"""The SAP backbone in detection mode, as every detector uses it: feature outputs, their real strides, and the
ImageNet weights of the official ``MyBackBone(pth_file=...)`` read from a local file.

The official adapter (reference_spec §4.2) builds ``Network`` in detection mode and returns the listed stage outputs;
it has no ``frozen_stages`` and no ``norm_eval``, so every BatchNorm trains. :func:`build_body` is that adapter on
:func:`repro.models.build_model` (``features_only=True``); the strides come from ``feature_info.reduction()``, i.e.
from the architecture (1222 -> 4/8/16/32, 2222 -> 8/16/32/64, 4222 -> 16/32/64/128 for ResNet).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from repro.arch import ArchError, parse_arch
from repro.models import build_model


class DetectorError(ValueError):
    """A detector that cannot be built as asked (unknown kind, unsupported backbone, bad option or weights file)."""


def backbone_family(arch: str) -> str:
    """``resnet``/``resnext``/``mobilenetv2``/``mobilenetv3`` of an SAP architecture name (``ArchError`` if invalid)."""
    return parse_arch(arch).family


def backbone_depth(arch: str) -> str:
    """``resnet18`` / ``resnet50`` / ``mobilenet`` ...: the network a pretrained file is named after."""
    backbone = parse_arch(arch).backbone
    return backbone.removesuffix("_v2") if backbone.startswith("resnet") else backbone


def build_body(arch: str, out_indices: Sequence[int], **build_opts: Any) -> nn.Module:
    """The SAP backbone in ``features_only`` mode, returning the outputs ``out_indices`` (all BatchNorms train)."""
    try:
        return build_model(arch, num_classes=1, features_only=True, out_indices=tuple(out_indices), **build_opts)
    except ArchError as exc:
        raise DetectorError(f"{arch!r} is not an SAP backbone name: {exc}") from exc


def body_strides(body: nn.Module) -> list[int]:
    """The real output strides of the selected features (from the architecture's stage strides)."""
    return [int(r) for r in body.feature_info.reduction()]


def load_backbone_weights(body: nn.Module, path: str | Path) -> dict[str, Any]:
    """Load a torchvision-style ImageNet state dict into ``body`` by name, as the official ``pth_file`` does.

    Keys are matched by name; the classifier (``fc.*``) and entries whose shape differs (dynamic convs, pools) are
    skipped, and the pools keep their random initialisation. The file is read with ``weights_only=True``. Returns
    ``{path, loaded, skipped}`` for the run's record.
    """
    path = Path(path)
    if not path.is_file():
        raise DetectorError(
            f"backbone weights {path} not found: put the torchvision ImageNet state dict there (e.g. torchvision's "
            "resnet18-f37072fd.pth renamed to resnet18.pth); they are never downloaded at run time"
        )
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # truncated file, foreign pickle
        raise DetectorError(f"cannot read backbone weights {path} ({type(exc).__name__}: {exc})") from exc
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise DetectorError(f"{path} is not a state dict of tensors (field 'state_dict' or the top level)")
    own = body.state_dict()
    usable = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape and not k.startswith("fc.")}
    if not usable:
        raise DetectorError(f"{path}: no key matches the backbone {getattr(body, 'pretty_name', '')!r} by name")
    body.load_state_dict(usable, strict=False)
    return {"path": str(path), "loaded": len(usable), "skipped": sorted(set(own) - set(usable))}
