"""ResNet-18/50 (and the ResNeXt-18 layout) with a pooling layer in place of each strided stage.

A stage whose stride digit is s > 1 either keeps its strided convolutions (``skip``, the torchvision layout) or runs
its convolutions at stride 1 and pools with kernel = stride = s. Where the pool goes is the ``placement``
(reference_spec §3, B3/B4):

* ``stage_end`` (official ``resnet.py``): every block of the stage runs at the input resolution and the pool is the
  last child, named ``pool``, of the stage ``Sequential`` (keys ``layer2.pool.*``);
* ``block_end`` (official ``resnet_v2.py`` and ``resnext.py``): the pool is the first block's ``pooling`` attribute,
  applied after its residual add and ReLU (keys ``layer2.0.pooling.*``); the later blocks run at the reduced
  resolution. As in the official code, that block always gets a projection shortcut (a stride-1 1x1 conv) when it
  pools, even where the channel count does not change.

Attribute names follow the official code (= torchvision's), so official checkpoints load after stripping the
``net.`` wrapper prefix (:func:`repro.compat.load_official_state_dict`).

Faithful details: the stem max-pool is 2x2/s2/p0 (B5; ``torchvision_stem_pool=True`` gives 3x3/s2/p1), no dropout
(B6), and every ``nn.Conv2d`` (pool internals included) is re-initialised kaiming-normal (fan_out, ReLU), BN 1/0.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from repro.arch import StagePool
from repro.layers.create_pool import PoolLayer
from repro.models.sap_common import FeatureSpec, SapBackbone, SizeOp, SpatialPlan, build_stage_pool

__all__ = ["BasicBlock", "Bottleneck", "ResNet"]

RESNET_PLACEMENTS = ("stage_end", "block_end")
STAGE_PLANES = (64, 128, 256, 512)
DEFAULT_STAGES = (StagePool("skip", 1), StagePool("skip", 2), StagePool("skip", 2), StagePool("skip", 2))
DEFAULT_STEM_POOL = StagePool("maxp", 2)


def conv3x3(cin: int, cout: int, stride: int = 1, groups: int = 1, conv_layer: type[nn.Module] = nn.Conv2d):
    """3x3 convolution, padding 1, no bias."""
    return conv_layer(cin, cout, kernel_size=3, stride=stride, padding=1, groups=groups, bias=False)


def conv1x1(cin: int, cout: int, stride: int = 1, conv_layer: type[nn.Module] = nn.Conv2d):
    """1x1 convolution, no bias."""
    return conv_layer(cin, cout, kernel_size=1, stride=stride, bias=False)


class BasicBlock(nn.Module):
    """Two 3x3 convs with a residual; ``groups`` applies to the second conv (ResNeXt-18 uses 32).

    ``stride`` is the stride of the first conv; ``pool`` (block-end placement) is applied after the final ReLU.
    """

    expansion = 1

    def __init__(
        self,
        inplanes: int,
        planes: int,
        stride: int = 1,
        downsample: nn.Module | None = None,
        *,
        groups: int = 1,
        pool: nn.Module | None = None,
        conv_layer: type[nn.Module] = nn.Conv2d,
    ) -> None:
        super().__init__()
        self.pooling = pool
        self.conv1 = conv3x3(inplanes, planes, stride, conv_layer=conv_layer)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = conv3x3(planes, planes, groups=groups, conv_layer=conv_layer)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        out = self.relu(out + shortcut)
        return out if self.pooling is None else self.pooling(out)


class Bottleneck(nn.Module):
    """1x1 → 3x3 (strided) → 1x1 (x4) with a residual; ``pool`` (block-end placement) follows the final ReLU."""

    expansion = 4

    def __init__(
        self,
        inplanes: int,
        planes: int,
        stride: int = 1,
        downsample: nn.Module | None = None,
        *,
        groups: int = 1,
        pool: nn.Module | None = None,
        conv_layer: type[nn.Module] = nn.Conv2d,
    ) -> None:
        super().__init__()
        self.conv1 = conv1x1(inplanes, planes, conv_layer=conv_layer)
        self.bn1 = nn.BatchNorm2d(planes)
        self.pooling = pool
        self.conv2 = conv3x3(planes, planes, stride, groups=groups, conv_layer=conv_layer)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = conv1x1(planes, planes * self.expansion, conv_layer=conv_layer)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        out = self.relu(out + shortcut)
        return out if self.pooling is None else self.pooling(out)


class ResNet(SapBackbone):
    """ResNet with per-stage pools.

    Args:
        block: :class:`BasicBlock` or :class:`Bottleneck`; ``layers``: blocks per stage (e.g. ``[2, 2, 2, 2]``).
        stage_pools: one :class:`repro.arch.StagePool` per stage (``skip`` = strided conv).
        num_classes: classifier width (ignored with ``features_only``).
        placement: ``'stage_end'`` or ``'block_end'`` (see the module docstring).
        stem_stride: stride of the 7x7 stem conv (2; 1 with a prepool).
        stem_pool: the pool after the stem (``StagePool('maxp', 2)``; the prepool; None for no stem pool).
        torchvision_stem_pool: a ``maxp`` stem pool of stride s uses kernel 2s-1 and padding s-1 (torchvision and
            ResNeXt: 3x3/s2/p1) instead of the official kernel s, padding 0 (B5).
        groups: groups of the second conv of each block (ResNeXt-18: 32).
        conv_layer: convolution class of the stem and the blocks (``DynamicConv2d`` for ``dy`` names).
        features_only: return the stage outputs (after any stage-end pool) instead of logits.
        out_indices: which of the 4 stage outputs to return (default all).
        name: architecture name used in messages.
    """

    head_prefixes = ("fc.",)

    def __init__(
        self,
        block: type[BasicBlock | Bottleneck],
        layers: Sequence[int],
        stage_pools: Sequence[StagePool] = DEFAULT_STAGES,
        *,
        num_classes: int = 1000,
        placement: str = "stage_end",
        stem_stride: int = 2,
        stem_pool: StagePool | None = DEFAULT_STEM_POOL,
        torchvision_stem_pool: bool = False,
        groups: int = 1,
        conv_layer: type[nn.Module] = nn.Conv2d,
        pool_layer: PoolLayer | None = None,
        features_only: bool = False,
        out_indices: Sequence[int] | int | None = None,
        name: str = "resnet",
    ) -> None:
        super().__init__()
        if placement not in RESNET_PLACEMENTS:
            raise ValueError(f"{name}: unknown placement {placement!r}; ResNet supports {', '.join(RESNET_PLACEMENTS)}")
        if len(layers) != 4 or len(stage_pools) != 4:
            raise ValueError(
                f"{name}: ResNet needs 4 stages, got {len(layers)} block counts and {len(stage_pools)} pools"
            )
        self.placement = placement
        self.pool_layer = pool_layer
        self.inplanes = 64
        self.conv1 = conv_layer(3, 64, kernel_size=7, stride=stem_stride, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        stem_ops = [SizeOp.conv(7, stem_stride, 3, "conv")]
        if stem_pool is None:
            self.pool = None
        elif torchvision_stem_pool and stem_pool.type == "maxp":
            s = stem_pool.stride
            self.pool = nn.MaxPool2d(kernel_size=2 * s - 1, stride=s, padding=s - 1)
            stem_ops.append(SizeOp.conv(2 * s - 1, s, s - 1, "max-pool"))
        else:
            self.pool = build_stage_pool(stem_pool, 64)
            if self.pool is not None:
                stem_ops.append(SizeOp.pool(stem_pool))
        reduction = stem_stride * (stem_pool.stride if self.pool is not None else 1)

        specs, plan = [], [("stem", tuple(stem_ops))]
        for i, (planes, blocks, stage) in enumerate(zip(STAGE_PLANES, layers, stage_pools)):
            stage_name = f"layer{i + 1}"
            self.add_module(stage_name, self._make_layer(block, planes, blocks, stage, groups, conv_layer))
            reduction *= stage.stride
            specs.append(FeatureSpec(planes * block.expansion, reduction, stage_name))
            op = SizeOp.conv(3, stage.stride, 1, "strided conv") if stage.is_skip else SizeOp.pool(stage)
            plan.append((stage_name, (op,)))
        if not features_only:
            self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
            self.fc = nn.Linear(512 * block.expansion, num_classes)
        self._finish(
            specs, SpatialPlan(tuple(plan), name), features_only=features_only, out_indices=out_indices, name=name
        )
        self.reset_parameters()

    def _make_layer(
        self,
        block: type[BasicBlock | Bottleneck],
        planes: int,
        blocks: int,
        stage: StagePool,
        groups: int,
        conv_layer: type[nn.Module],
    ) -> nn.Sequential:
        out_channels = planes * block.expansion
        conv_stride = stage.stride if stage.is_skip else 1
        # block_end: the official code decides on the stage digit, so a pooling block always gets a projection
        needs_projection = (stage.stride if self.placement == "block_end" else conv_stride) != 1
        downsample = None
        if needs_projection or self.inplanes != out_channels:
            downsample = nn.Sequential(
                conv1x1(self.inplanes, out_channels, conv_stride, conv_layer=conv_layer), nn.BatchNorm2d(out_channels)
            )
        block_pool = build_stage_pool(stage, out_channels, self.pool_layer) if self.placement == "block_end" else None
        layers = [
            block(self.inplanes, planes, conv_stride, downsample, groups=groups, pool=block_pool, conv_layer=conv_layer)
        ]
        self.inplanes = out_channels
        layers += [block(out_channels, planes, groups=groups, conv_layer=conv_layer) for _ in range(1, blocks)]
        seq = nn.Sequential(*layers)
        if self.placement == "stage_end" and not stage.is_skip:
            seq.add_module("pool", build_stage_pool(stage, out_channels, self.pool_layer))
        return seq

    def reset_parameters(self) -> None:
        """Official init: kaiming-normal (fan_out, ReLU) for every ``nn.Conv2d`` (pools included); BN 1/0."""
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d | nn.GroupNorm):
                nn.init.constant_(m.weight, 1)
                nn.init.constant_(m.bias, 0)

    def forward_stem(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        return x if self.pool is None else self.pool(x)

    def feature_stages(self) -> list[nn.Module]:
        return [self.layer1, self.layer2, self.layer3, self.layer4]

    def forward_head(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.avgpool(x), 1))
