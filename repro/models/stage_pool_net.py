"""A small CNN whose every down-sampling is one registered pool: the backbone of the pooling shoot-out.

``stem (conv 3x3, BN, ReLU) -> stages -> global average pool -> FC``. Stage ``i`` has stride ``strides[i]``: with a
stride above 1 the pool ``create_pool(pool, C_in, stride)`` comes first, on the previous stage's channels (the
``stage_start`` placement of the SAP MobileNet), then the stage's conv 3x3 - BN - ReLU to ``channels[i + 1]``; with
``skip`` (no pool module) the conv itself takes the stride, as in the unmodified network. Every pool therefore sits
at the same place with the same stride, and the networks of one stride setting differ only in their pools.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from torch import nn
from torchvision.ops import Conv2dNormActivation

from repro.layers import create_pool

__all__ = ["StagePoolNet"]


class StagePoolNet(nn.Module):
    """``StagePoolNet('lip', strides=(1, 2, 2), channels=(8, 16, 32, 64), num_classes=10)``.

    ``channels[0]`` is the stem's width and ``channels[i + 1]`` stage ``i``'s; ``pool_options`` go to
    :func:`repro.layers.create_pool` (e.g. ``heads=2, win_norm=False`` for ``nlp``).
    """

    def __init__(
        self,
        pool: str,
        strides: Sequence[int],
        channels: Sequence[int] = (8, 16, 32, 64),
        num_classes: int = 10,
        in_channels: int = 3,
        pool_options: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__()
        if len(channels) != len(strides) + 1:
            raise ValueError(
                f"need one channel count for the stem and one per stage: {len(strides) + 1}, got "
                f"{len(channels)} ({list(channels)})"
            )
        if any(int(s) < 1 for s in strides):
            raise ValueError(f"strides must be >= 1, got {list(strides)}")
        self.pool_name, self.strides = pool, tuple(int(s) for s in strides)
        self.stem = Conv2dNormActivation(in_channels, channels[0], 3)
        stages = []
        for stride, c_in, c_out in zip(self.strides, channels[:-1], channels[1:]):
            pool_module = create_pool(pool, c_in, stride, **dict(pool_options or {})) if stride > 1 else None
            conv_stride = stride if pool_module is None else 1
            layers = [] if pool_module is None else [pool_module]
            layers.append(Conv2dNormActivation(c_in, c_out, 3, stride=conv_stride))
            stages.append(nn.Sequential(*layers))
        self.stages = nn.Sequential(*stages)
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(1), nn.Linear(channels[-1], num_classes))

    def forward(self, x):
        return self.head(self.stages(self.stem(x)))
