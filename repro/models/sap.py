"""Build any model of the Self-Attentive-Pooling architecture grammar: ``build_sap_model('resnet18-nlp-1222', 10)``.

The name is parsed by :func:`repro.arch.parse_arch`; its backbone picks the network and the default placement of the
pools (reference_spec §3), which ``placement=`` may override (the choice is recorded as ``model.placement``). Every
model also carries ``model.arch`` (the parsed :class:`repro.arch.Arch`), ``model.pretty_name`` and
``model.build_options`` (the quirk switches used), so that results can say exactly what was built.

Faithful by default; the corrections are opt-in:

* ``corrected_prepool_skip`` (default: ``arch.strict``): ``prepool-skip-K`` on ResNet gives the stem conv stride K,
  instead of the official "no stem downsampling at all" (B14).
* ``torchvision_stem_pool``: ResNet's stem max-pool is 3x3/s2/p1 instead of the official 2x2/s2/p0 (B5).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

from repro.arch import Arch, StagePool, parse_arch
from repro.layers.create_pool import PoolLayer, pool_name
from repro.models.mobilenetv2 import MobileNetV2
from repro.models.mobilenetv3 import MobileNetV3
from repro.models.registry import ModelDefaults, register_resolver
from repro.models.resnet import BasicBlock, Bottleneck, ResNet
from repro.models.resnext import resnext18
from repro.models.sap_common import PLACEMENTS, SapBackbone, resolve_conv_layer

__all__ = ["build_sap_model"]

_RESNET_BLOCKS = {"resnet18": (BasicBlock, (2, 2, 2, 2)), "resnet50": (Bottleneck, (3, 4, 6, 3))}


def build_sap_model(
    arch: str | Arch,
    num_classes: int = 1000,
    *,
    features_only: bool = False,
    out_indices: Sequence[int] | int | None = None,
    image_size: int | tuple[int, int] | None = None,
    placement: str | None = None,
    strict: bool = False,
    corrected_prepool_skip: bool | None = None,
    torchvision_stem_pool: bool = False,
    pool_layer: PoolLayer | None = None,
) -> SapBackbone:
    """Build the network named by ``arch``.

    Args:
        arch: an architecture name (``'mobilenet_v2-nlp_headfix2-1222121'``) or a parsed :class:`Arch`.
        num_classes: classifier width.
        features_only: return a backbone whose forward gives the stage outputs (see ``model.feature_info``).
        out_indices: the feature outputs to return in ``features_only`` mode (default all).
        image_size: if given, check now that this input size (side, or (H, W)) is valid for the architecture.
        placement: override the backbone's pool placement (``stage_end``/``block_end`` for ResNet and ResNeXt,
            ``stage_start``/``after_projection`` for MobileNetV2, ``after_projection`` for MobileNetV3).
        strict: parse ``arch`` with ``strict=True`` (corrected grammar semantics; see :func:`repro.arch.parse_arch`).
        corrected_prepool_skip: fix B14 (default: the arch's ``strict``).
        torchvision_stem_pool: fix B5 (ResNet only).
        pool_layer: build every stage pool the name asks for with this pool instead (a registered pool name, an
            ``nn.Module`` class or a callable ``fn(channels, stride, **cfg)``), at the same places and strides; the
            stem and the prepool keep theirs. Recorded as ``model.build_options['pool_layer']``.

    Raises:
        repro.arch.ArchError: for an invalid name; ValueError for an invalid option or input size.
    """
    if isinstance(arch, str):
        arch = parse_arch(arch, strict=strict)
    elif not isinstance(arch, Arch):
        raise TypeError(f"arch must be an architecture name or a repro.arch.Arch, got {type(arch).__name__}")
    elif strict and not arch.strict:
        arch = parse_arch(arch.name, strict=True)
    valid = PLACEMENTS[arch.family]
    chosen = arch.placement if placement is None else placement
    if chosen not in valid:
        raise ValueError(
            f"{arch.name}: placement {chosen!r} is not available for the {arch.family} family; valid placements: "
            f"{', '.join(valid)} (the name's own is {arch.placement!r})"
        )
    if corrected_prepool_skip is None:
        corrected_prepool_skip = arch.strict
    if torchvision_stem_pool and arch.family != "resnet":
        raise ValueError(
            f"{arch.name}: torchvision_stem_pool applies to ResNet only (ResNeXt always uses the 3x3 max-pool; "
            "MobileNets have no stem pool)"
        )
    pretty = arch.name if chosen == arch.placement else f"{arch.name} (placement={chosen})"
    common = {
        "num_classes": num_classes,
        "placement": chosen,
        "features_only": features_only,
        "out_indices": out_indices,
        "name": pretty,
        "pool_layer": pool_layer,
    }
    stem_stride, stem_pool = _stem(arch, corrected_prepool_skip)

    model: SapBackbone
    if arch.family == "resnet":
        block, layers = _RESNET_BLOCKS[arch.backbone.removesuffix("_v2")]
        model = ResNet(
            block,
            layers,
            arch.stages,
            stem_stride=stem_stride,
            stem_pool=stem_pool,
            torchvision_stem_pool=torchvision_stem_pool,
            conv_layer=resolve_conv_layer(arch.dynamic),
            **common,
        )
    elif arch.family == "resnext":
        model = resnext18(arch.stages, **common)
    elif arch.family == "mobilenetv2":
        model = MobileNetV2(
            arch.stages,
            stem_stride=stem_stride,
            stem_pool=stem_pool,
            conv_layer=resolve_conv_layer(arch.dynamic),
            **common,
        )
    else:
        model = MobileNetV3(
            arch.backbone.removeprefix("mobilenetv3_"),
            arch.stages,
            stem_stride=stem_stride,
            stem_pool=stem_pool,
            conv_layer=resolve_conv_layer(arch.dynamic),
            **common,
        )
    model.arch = arch
    model.build_options = {
        "placement": chosen,
        "corrected_prepool_skip": bool(corrected_prepool_skip),
        "torchvision_stem_pool": bool(torchvision_stem_pool or arch.family == "resnext"),
        "pool_layer": None if pool_layer is None else pool_name(pool_layer),
    }
    if image_size is not None:
        sides = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
        model.spatial_plan.check(*sides)
    return model


def _stem(arch: Arch, corrected_prepool_skip: bool) -> tuple[int, StagePool | None]:
    """(stem conv stride, stem pool) per reference_spec §1.3."""
    if arch.family == "resnext":
        return 2, StagePool("maxp", 2)
    if arch.prepool is None:
        return 2, StagePool("maxp", 2) if arch.family == "resnet" else None
    if arch.prepool.is_skip:
        if arch.family == "resnet" and not corrected_prepool_skip:
            return 1, None  # B14: the official ResNet has no stem downsampling at all with prepool-skip-K
        return arch.prepool.stride, None
    return 1, arch.prepool


def _resolve_sap(arch: object):
    """The SAP grammar builds any name that is not a registered model (its parser explains a bad one)."""
    return functools.partial(build_sap_model, arch) if isinstance(arch, (str, Arch)) else None


register_resolver(_resolve_sap, ModelDefaults(num_classes=1000, image_size=224))
