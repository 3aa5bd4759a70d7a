"""ResNeXt-18 as in the official ``resnext.py``: a ResNet-18 whose blocks' second 3x3 conv has 32 groups.

Differences from :mod:`repro.models.resnet`, all as the official code: the stem is fixed (7x7/s2 conv, then a 3x3/s2/p1
max-pool; a prepool is not supported), every conv is a plain ``nn.Conv2d`` (no dynamic convolution in the backbone),
and the pool goes at the end of the first block of a stage (``block_end``). Its init, N(0, √(2/(k²·out))) for every
conv, is the same distribution as ResNet's kaiming-normal (fan_out, ReLU), and the state-dict keys are those of
``resnet*_v2``.
"""

from __future__ import annotations

from collections.abc import Sequence

from repro.arch import StagePool
from repro.layers.create_pool import PoolLayer
from repro.models.resnet import DEFAULT_STAGES, BasicBlock, ResNet

__all__ = ["RESNEXT_GROUPS", "resnext18"]

RESNEXT_GROUPS = 32


def resnext18(
    stage_pools: Sequence[StagePool] = DEFAULT_STAGES,
    *,
    num_classes: int = 1000,
    placement: str = "block_end",
    pool_layer: PoolLayer | None = None,
    features_only: bool = False,
    out_indices: Sequence[int] | int | None = None,
    name: str = "resnext18",
) -> ResNet:
    """ResNeXt-18 (BasicBlock [2, 2, 2, 2], 32 groups) with the given stage pools."""
    return ResNet(
        BasicBlock,
        [2, 2, 2, 2],
        stage_pools,
        num_classes=num_classes,
        placement=placement,
        stem_stride=2,
        stem_pool=StagePool("maxp", 2),
        torchvision_stem_pool=True,
        groups=RESNEXT_GROUPS,
        pool_layer=pool_layer,
        features_only=features_only,
        out_indices=out_indices,
        name=name,
    )
