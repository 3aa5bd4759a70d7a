"""Shapes without running the network: per-stage feature-map shapes and the valid input-size range of an arch.

The sizes come from each backbone's :class:`repro.models.sap_common.SpatialPlan`, i.e. the exact rounding of every
strided layer (strided convs ⌈n/s⌉, pools ⌊n/s⌋; reference_spec §2.0).
"""

from __future__ import annotations

import torch
from torch import nn

from repro.arch import Arch
from repro.models.sap_common import SapBackbone

__all__ = ["feature_shapes", "input_size_range", "max_input_size", "min_input_size"]


def _sides(image_size: int | tuple[int, int]) -> tuple[int, int]:
    if isinstance(image_size, int):
        return image_size, image_size
    h, w = image_size
    return int(h), int(w)


def feature_shapes(model: nn.Module, image_size: int | tuple[int, int]) -> list[tuple[str, tuple[int, int, int]]]:
    """``[(module name, (C, H, W)), ...]`` for every feature output of a SAP backbone (ResNet: ``layer1..4``;
    MobileNetV2: ``features.0..6`` and ``conv2``; MobileNetV3: ``bneck.*`` and ``conv2``).

    Raises :class:`repro.models.sap_common.InputSizeError` for an input the model cannot process.
    """
    if not isinstance(model, SapBackbone):
        raise TypeError(f"feature_shapes needs a model built by repro.models.sap, got {type(model).__name__}")
    h, w = _sides(image_size)
    model.spatial_plan.check(h, w)
    hs, ws = model.spatial_plan.sizes(h), model.spatial_plan.sizes(w)
    return [(spec.module, (spec.num_chs, hs[spec.module], ws[spec.module])) for spec in model.feature_info.all]


def _plan(arch: str | Arch, **opts):
    from repro.models.sap import build_sap_model

    with torch.device("meta"):  # no memory, no init cost: only the layout is needed
        return build_sap_model(arch, 10, features_only=True, **opts).spatial_plan


def input_size_range(arch: str | Arch, **opts) -> tuple[int, int | None]:
    """``(smallest, largest)`` valid input side of ``arch``; largest is None when only memory limits it.

    The largest size is finite for the pools with a learned position table (256 positions per axis, B11).
    ``opts`` are :func:`repro.models.sap.build_sap_model` options (e.g. ``placement``, ``corrected_prepool_skip``).
    """
    plan = _plan(arch, **opts)
    return plan.min_size(), plan.max_size()


def min_input_size(arch: str | Arch, **opts) -> int:
    """The smallest input side for which every stage of ``arch`` has a non-empty map."""
    return input_size_range(arch, **opts)[0]


def max_input_size(arch: str | Arch, **opts) -> int | None:
    """The largest input side ``arch`` accepts (position-table limit of NLP/attnpool), or None if unbounded."""
    return input_size_range(arch, **opts)[1]
