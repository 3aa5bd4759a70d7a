"""MobileNetV2 (width 1.0, the ``tonylins/pytorch-mobilenet-v2`` layout of the official code) with stage pools.

Seven stages of inverted residuals (t, c, n) = (1,16,1), (6,24,2), (6,32,3), (6,64,4), (6,96,3), (6,160,3),
(6,320,1); the standard stride digits are ``1222121``. A stage with digit s > 1 either strides its first depthwise
conv (``skip``) or pools with kernel = stride = s at one of two placements (reference_spec §3, B3):

* ``stage_start`` (official ``mobilenet.py``): the pool is the first child of the stage ``Sequential``, on the
  previous stage's channels, so the blocks shift by one index (keys ``features.1.0.*`` = pool,
  ``features.1.1.conv.*`` = first block);
* ``after_projection`` (official ``mobilenet_v2.py``): the first block runs at stride 1 (its expanded map at full
  resolution) and pools its projected output (keys ``features.1.0.pooling.*``).

State-dict keys are the official ones (``conv1.*``, ``conv1_pool.*``, ``features.<i>.<j>.conv.*``, ``conv2.*``,
``classifier.*``). There is no dropout (B6). Init as the official code: conv N(0, √(2/(k²·out))) with zero bias, BN
1/0, every ``nn.Linear`` (attention projections included) N(0, 0.01) with zero bias.

Not reproduced: the current official ``mobilenet.py`` builds the network twice and returns the second build (B15),
which only changes the random stream; the logged runs predate it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from repro.arch import StagePool
from repro.layers.create_pool import PoolLayer
from repro.models.sap_common import FeatureSpec, SapBackbone, SizeOp, SpatialPlan, build_stage_pool

__all__ = ["InvertedResidual", "MobileNetV2"]

MOBILENETV2_PLACEMENTS = ("stage_start", "after_projection")
#: (expansion t, output channels c, blocks n) per stage
STAGE_SETTINGS: tuple[tuple[int, int, int], ...] = (
    (1, 16, 1),
    (6, 24, 2),
    (6, 32, 3),
    (6, 64, 4),
    (6, 96, 3),
    (6, 160, 3),
    (6, 320, 1),
)
STEM_CHANNELS = 32
HEAD_CHANNELS = 1280
DEFAULT_STAGES = tuple(StagePool("skip", s) for s in (1, 2, 2, 2, 1, 2, 1))


def conv_bn_relu6(cin: int, cout: int, kernel_size: int, stride: int, conv_layer: type[nn.Module]) -> nn.Sequential:
    """Conv (no bias, 'same' padding for odd kernels) → BN → ReLU6, as ``Sequential`` indices 0, 1, 2."""
    return nn.Sequential(
        conv_layer(cin, cout, kernel_size, stride, kernel_size // 2, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU6(inplace=True),
    )


class InvertedResidual(nn.Module):
    """Expand 1x1 (omitted when t = 1) → depthwise 3x3 → linear projection 1x1, residual iff stride 1 and in = out.

    ``stride`` is the stage digit of this block. With ``pool`` given (after-projection placement) the depthwise conv
    runs at stride 1 and ``pool`` follows the projection; the residual is still decided on ``stride``.
    """

    def __init__(
        self,
        inp: int,
        oup: int,
        stride: int,
        expand_ratio: int,
        *,
        pool: nn.Module | None = None,
        conv_layer: type[nn.Module] = nn.Conv2d,
    ) -> None:
        super().__init__()
        hidden = round(inp * expand_ratio)
        self.identity = stride == 1 and inp == oup
        self.pooling = pool
        dw_stride = 1 if pool is not None else stride
        layers: list[nn.Module] = []
        if expand_ratio != 1:
            layers += [conv_layer(inp, hidden, 1, 1, 0, bias=False), nn.BatchNorm2d(hidden), nn.ReLU6(inplace=True)]
        layers += [
            conv_layer(hidden, hidden, 3, dw_stride, 1, groups=hidden, bias=False),
            nn.BatchNorm2d(hidden),
            nn.ReLU6(inplace=True),
            conv_layer(hidden, oup, 1, 1, 0, bias=False),
            nn.BatchNorm2d(oup),
        ]
        self.conv = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = x + self.conv(x) if self.identity else self.conv(x)
        return out if self.pooling is None else self.pooling(out)


class MobileNetV2(SapBackbone):
    """MobileNetV2 with per-stage pools.

    Args:
        stage_pools: one :class:`repro.arch.StagePool` per stage (7).
        num_classes: classifier width (ignored with ``features_only``).
        placement: ``'stage_start'`` or ``'after_projection'`` (see the module docstring).
        stem_stride: stride of the 3x3 stem conv (2; K for ``prepool-skip-K``; 1 before a prepool).
        stem_pool: the prepool applied after the stem's BN + ReLU6 (``conv1_pool``), or None.
        conv_layer: convolution class of the stem, the blocks and the 1280-channel head conv.
        features_only: return 8 maps (the 7 stage outputs and the head conv output) instead of logits.
        out_indices: which of the 8 outputs to return (default all).
        name: architecture name used in messages.
    """

    head_prefixes = ("classifier.",)

    def __init__(
        self,
        stage_pools: Sequence[StagePool] = DEFAULT_STAGES,
        *,
        num_classes: int = 1000,
        placement: str = "after_projection",
        stem_stride: int = 2,
        stem_pool: StagePool | None = None,
        conv_layer: type[nn.Module] = nn.Conv2d,
        pool_layer: PoolLayer | None = None,
        features_only: bool = False,
        out_indices: Sequence[int] | int | None = None,
        name: str = "mobilenetv2",
    ) -> None:
        super().__init__()
        if placement not in MOBILENETV2_PLACEMENTS:
            raise ValueError(
                f"{name}: unknown placement {placement!r}; MobileNetV2 supports {', '.join(MOBILENETV2_PLACEMENTS)}"
            )
        if len(stage_pools) != len(STAGE_SETTINGS):
            raise ValueError(f"{name}: MobileNetV2 needs {len(STAGE_SETTINGS)} stage pools, got {len(stage_pools)}")
        self.placement = placement
        self.conv1 = conv_bn_relu6(3, STEM_CHANNELS, 3, stem_stride, conv_layer)
        self.conv1_pool = build_stage_pool(stem_pool, STEM_CHANNELS) if stem_pool is not None else None
        stem_ops = [SizeOp.conv(3, stem_stride, 1, "conv")]
        reduction = stem_stride
        if self.conv1_pool is not None:
            stem_ops.append(SizeOp.pool(stem_pool))
            reduction *= stem_pool.stride

        specs, plan, stages = [], [("stem", tuple(stem_ops))], []
        channels = STEM_CHANNELS
        for i, ((t, c, n), stage) in enumerate(zip(STAGE_SETTINGS, stage_pools)):
            blocks: list[nn.Module] = []
            first_stride, block_pool = stage.stride, None
            if not stage.is_skip:
                if placement == "stage_start":
                    blocks.append(build_stage_pool(stage, channels, pool_layer))
                    first_stride = 1
                else:
                    block_pool = build_stage_pool(stage, c, pool_layer)
            for j in range(n):
                blocks.append(
                    InvertedResidual(
                        channels,
                        c,
                        first_stride if j == 0 else 1,
                        t,
                        pool=block_pool if j == 0 else None,
                        conv_layer=conv_layer,
                    )
                )
                channels = c
            stages.append(nn.Sequential(*blocks))
            reduction *= stage.stride
            specs.append(FeatureSpec(c, reduction, f"features.{i}"))
            op = SizeOp.conv(3, stage.stride, 1, "strided conv") if stage.is_skip else SizeOp.pool(stage)
            plan.append((f"features.{i}", (op,)))
        self.features = nn.Sequential(*stages)

        self.conv2 = conv_bn_relu6(channels, HEAD_CHANNELS, 1, 1, conv_layer)
        specs.append(FeatureSpec(HEAD_CHANNELS, reduction, "conv2"))
        plan.append(("conv2", ()))
        if not features_only:
            self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
            self.classifier = nn.Linear(HEAD_CHANNELS, num_classes)
        self._finish(
            specs, SpatialPlan(tuple(plan), name), features_only=features_only, out_indices=out_indices, name=name
        )
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Official init: conv N(0, √(2/(k²·out))), zero bias; BN 1/0; every ``nn.Linear`` N(0, 0.01), zero bias."""
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                fan = m.kernel_size[0] * m.kernel_size[1] * m.out_channels
                nn.init.normal_(m.weight, 0.0, math.sqrt(2.0 / fan))
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0.0, 0.01)
                nn.init.zeros_(m.bias)

    def forward_stem(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv1(x)
        return x if self.conv1_pool is None else self.conv1_pool(x)

    def feature_stages(self) -> list[nn.Module]:
        return [*self.features, self.conv2]

    def forward_head(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.avgpool(x), 1))
