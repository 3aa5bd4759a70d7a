"""MobileNetV3 small/large in the older ``xiaolai-sqlai`` layout of the official code, with per-block pools.

Every bottleneck block is a "stage" with its own stride digit (11 for small, standard ``22121111211``; 15 for large,
standard ``121211211111121``; the large model's stride-2 block is the 14th). Block: expand 1x1 → depthwise k×k →
project 1x1 + BN → squeeze-excite (after the projection, as the official code) → shortcut. The shortcut exists only
when the block's digit is 1 (identity, or 1x1 conv + BN when the channels change). With digit s > 1 and a pool, the
depthwise conv runs at stride 1 and the pool follows (placement ``after_projection``; key ``bneck.<i>.pooling.*``).

Head: 1x1 conv → BN → h-swish → global average → Linear(→1280) → BN1d → h-swish → Linear. Init as the official code:
kaiming-normal (fan_out) convs with zero bias, BN 1/0, every ``nn.Linear`` N(0, 0.001) with zero bias. Dynamic
convolutions (``dy``) replace the stem and the block convs, but not the squeeze-excite nor the head conv (as the
official code).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import NamedTuple

import torch
from torch import nn

from repro.arch import StagePool
from repro.layers.create_pool import PoolLayer
from repro.models.sap_common import FeatureSpec, SapBackbone, SizeOp, SpatialPlan, build_stage_pool

__all__ = ["MobileNetV3", "MobileNetV3Block", "SqueezeExcite"]

MOBILENETV3_PLACEMENTS = ("after_projection",)
STEM_CHANNELS = 16
HIDDEN_CHANNELS = 1280


class BlockSetting(NamedTuple):
    kernel: int
    expand: int
    out: int
    hswish: bool
    se: bool


_S = BlockSetting
#: per-block (kernel, expanded width, output width, h-swish?, squeeze-excite?)
BLOCK_SETTINGS: dict[str, tuple[BlockSetting, ...]] = {
    "small": (
        _S(3, 16, 16, False, True),
        _S(3, 72, 24, False, False),
        _S(3, 88, 24, False, False),
        _S(5, 96, 40, True, True),
        _S(5, 240, 40, True, True),
        _S(5, 240, 40, True, True),
        _S(5, 120, 48, True, True),
        _S(5, 144, 48, True, True),
        _S(5, 288, 96, True, True),
        _S(5, 576, 96, True, True),
        _S(5, 576, 96, True, True),
    ),
    "large": (
        _S(3, 16, 16, False, False),
        _S(3, 64, 24, False, False),
        _S(3, 72, 24, False, False),
        _S(5, 72, 40, False, True),
        _S(5, 120, 40, False, True),
        _S(5, 120, 40, False, True),
        _S(3, 240, 80, True, False),
        _S(3, 200, 80, True, False),
        _S(3, 184, 80, True, False),
        _S(3, 184, 80, True, False),
        _S(3, 480, 112, True, True),
        _S(3, 672, 112, True, True),
        _S(5, 672, 160, True, True),
        _S(5, 672, 160, True, True),
        _S(5, 960, 160, True, True),
    ),
}
HEAD_CHANNELS = {"small": 576, "large": 960}
BACKBONE_STRIDES = {"small": (2, 2, 1, 2, 1, 1, 1, 1, 2, 1, 1), "large": (1, 2, 1, 2, 1, 1, 2, 1, 1, 1, 1, 1, 1, 2, 1)}


class SqueezeExcite(nn.Module):
    """GAP → 1x1 (C→C/4, no bias) → BN → ReLU → 1x1 (→C, no bias) → BN → h-sigmoid, multiplied onto the input."""

    def __init__(self, channels: int, reduction: int = 4) -> None:
        super().__init__()
        squeezed = channels // reduction
        self.se = nn.Sequential(
            nn.AdaptiveAvgPool2d(1),
            nn.Conv2d(channels, squeezed, kernel_size=1, bias=False),
            nn.BatchNorm2d(squeezed),
            nn.ReLU(inplace=True),
            nn.Conv2d(squeezed, channels, kernel_size=1, bias=False),
            nn.BatchNorm2d(channels),
            nn.Hardsigmoid(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.se(x)


class MobileNetV3Block(nn.Module):
    """Expand 1x1 → depthwise k×k → project 1x1 (+BN) → [SE] → [+ shortcut if stride 1] → [pool]."""

    def __init__(
        self,
        setting: BlockSetting,
        in_channels: int,
        stride: int,
        *,
        pool: nn.Module | None = None,
        conv_layer: type[nn.Module] = nn.Conv2d,
    ) -> None:
        super().__init__()
        k, hidden, out = setting.kernel, setting.expand, setting.out
        self.stride = stride
        self.se = SqueezeExcite(out) if setting.se else None
        self.pooling = pool
        dw_stride = 1 if pool is not None else stride
        self.conv1 = conv_layer(in_channels, hidden, kernel_size=1, stride=1, padding=0, bias=False)
        self.bn1 = nn.BatchNorm2d(hidden)
        self.act1 = nn.Hardswish() if setting.hswish else nn.ReLU(inplace=True)
        self.conv2 = conv_layer(
            hidden, hidden, kernel_size=k, stride=dw_stride, padding=k // 2, groups=hidden, bias=False
        )
        self.bn2 = nn.BatchNorm2d(hidden)
        self.act2 = nn.Hardswish() if setting.hswish else nn.ReLU(inplace=True)
        self.conv3 = conv_layer(hidden, out, kernel_size=1, stride=1, padding=0, bias=False)
        self.bn3 = nn.BatchNorm2d(out)
        self.shortcut = nn.Sequential()
        if stride == 1 and in_channels != out:
            self.shortcut = nn.Sequential(
                conv_layer(in_channels, out, kernel_size=1, stride=1, padding=0, bias=False), nn.BatchNorm2d(out)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.act1(self.bn1(self.conv1(x)))
        out = self.act2(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        if self.se is not None:
            out = self.se(out)
        if self.stride == 1:
            out = out + self.shortcut(x)
        return out if self.pooling is None else self.pooling(out)


class MobileNetV3(SapBackbone):
    """MobileNetV3 (``variant`` 'small' or 'large') with per-block pools.

    Args:
        variant: ``'small'`` (11 blocks) or ``'large'`` (15 blocks).
        stage_pools: one :class:`repro.arch.StagePool` per block.
        num_classes: classifier width (ignored with ``features_only``).
        placement: only ``'after_projection'`` (the official layout).
        stem_stride: stride of the 3x3 stem conv (2; K for ``prepool-skip-K``; 1 before a prepool).
        stem_pool: the prepool applied after the stem's BN + h-swish (``conv1_pool``), or None.
        conv_layer: convolution class of the stem and the blocks (not of the SE nor the head conv).
        features_only: return every block output and the head conv output (after its BN and h-swish).
        out_indices: which of those outputs to return (default all).
        name: architecture name used in messages.
    """

    head_prefixes = ("linear3.", "bn3.", "linear4.")

    def __init__(
        self,
        variant: str = "small",
        stage_pools: Sequence[StagePool] | None = None,
        *,
        num_classes: int = 1000,
        placement: str = "after_projection",
        stem_stride: int = 2,
        stem_pool: StagePool | None = None,
        conv_layer: type[nn.Module] = nn.Conv2d,
        pool_layer: PoolLayer | None = None,
        features_only: bool = False,
        out_indices: Sequence[int] | int | None = None,
        name: str = "mobilenetv3",
    ) -> None:
        super().__init__()
        if variant not in BLOCK_SETTINGS:
            raise ValueError(f"{name}: unknown MobileNetV3 variant {variant!r}; choose 'small' or 'large'")
        if placement not in MOBILENETV3_PLACEMENTS:
            raise ValueError(
                f"{name}: unknown placement {placement!r}; MobileNetV3 supports {', '.join(MOBILENETV3_PLACEMENTS)}"
            )
        settings = BLOCK_SETTINGS[variant]
        if stage_pools is None:
            stage_pools = tuple(StagePool("skip", s) for s in BACKBONE_STRIDES[variant])
        if len(stage_pools) != len(settings):
            raise ValueError(f"{name}: MobileNetV3-{variant} needs {len(settings)} block pools, got {len(stage_pools)}")
        self.variant = variant
        self.placement = placement
        self.conv1 = conv_layer(3, STEM_CHANNELS, kernel_size=3, stride=stem_stride, padding=1, bias=False)
        self.conv1_pool = build_stage_pool(stem_pool, STEM_CHANNELS) if stem_pool is not None else None
        self.bn1 = nn.BatchNorm2d(STEM_CHANNELS)
        self.hs1 = nn.Hardswish()
        stem_ops = [SizeOp.conv(3, stem_stride, 1, "conv")]
        reduction = stem_stride
        if self.conv1_pool is not None:
            stem_ops.append(SizeOp.pool(stem_pool))
            reduction *= stem_pool.stride

        specs, plan, blocks = [], [("stem", tuple(stem_ops))], []
        channels = STEM_CHANNELS
        for i, (setting, stage) in enumerate(zip(settings, stage_pools)):
            pool = build_stage_pool(stage, setting.out, pool_layer)
            blocks.append(MobileNetV3Block(setting, channels, stage.stride, pool=pool, conv_layer=conv_layer))
            channels = setting.out
            reduction *= stage.stride
            specs.append(FeatureSpec(channels, reduction, f"bneck.{i}"))
            k = setting.kernel
            op = SizeOp.conv(k, stage.stride, k // 2, "strided conv") if stage.is_skip else SizeOp.pool(stage)
            plan.append((f"bneck.{i}", (op,)))
        self.bneck = nn.Sequential(*blocks)

        head = HEAD_CHANNELS[variant]
        self.conv2 = nn.Conv2d(channels, head, kernel_size=1, stride=1, padding=0, bias=False)
        self.bn2 = nn.BatchNorm2d(head)
        self.hs2 = nn.Hardswish()
        specs.append(FeatureSpec(head, reduction, "conv2"))
        plan.append(("conv2", ()))
        if not features_only:
            self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
            self.linear3 = nn.Linear(head, HIDDEN_CHANNELS)
            self.bn3 = nn.BatchNorm1d(HIDDEN_CHANNELS)
            self.hs3 = nn.Hardswish()
            self.linear4 = nn.Linear(HIDDEN_CHANNELS, num_classes)
        self._finish(
            specs, SpatialPlan(tuple(plan), name), features_only=features_only, out_indices=out_indices, name=name
        )
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Official init: conv kaiming-normal (fan_out), zero bias; BN 1/0; ``nn.Linear`` N(0, 0.001), zero bias."""
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, std=0.001)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def _head_conv(self, x: torch.Tensor) -> torch.Tensor:
        return self.hs2(self.bn2(self.conv2(x)))

    def forward_stem(self, x: torch.Tensor) -> torch.Tensor:
        x = self.hs1(self.bn1(self.conv1(x)))
        return x if self.conv1_pool is None else self.conv1_pool(x)

    def feature_stages(self) -> list[Callable[[torch.Tensor], torch.Tensor]]:
        return [*self.bneck, self._head_conv]

    def forward_head(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.flatten(self.avgpool(x), 1)
        return self.linear4(self.hs3(self.bn3(self.linear3(x))))
