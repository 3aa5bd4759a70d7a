"""MobileNetV1 / MobileNetV2 with an early RNNPool block (RNNPool Tables 1-3, 10, 16, 18; App. F.1).

One class per network; the paper's variants are keyword configurations:

* ``replace``: the early downsampling block (``rnnpool`` | ``avg`` | ``max`` | ``strided_conv`` | ``renet``), or
  ``None`` for the base network;
* ``replaced_stages``: how many leading rows of the architecture table the block replaces (MobileNetV2 bottleneck
  stacks, MobileNetV1 depthwise-separable layers);
* ``patch_size``, ``stride``, ``hidden`` (int for ``h1 = h2``), ``rnn_cell``: the RNNPool block; sequences give
  several consecutive blocks (ablation (g): ``patch_size=(6, 4), stride=(4, 2)``);
* ``last_layer_rnnpool``: RNNPool with ``h = C/4`` instead of the final average pool (App. F.1.2);
* ``width_mult``, ``stem_channels``, ``last_channel``: widths (the VWW model is ``width_mult=0.35``, an 8-channel
  stem and a 320-channel last conv, as in EdgeML's ``model_mobilenet_rnnpool.py``).

Key layout follows torchvision (``features.N``, ``classifier.1``); the final pool sits at ``pool``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torchvision.models.mobilenetv2 import InvertedResidual, _make_divisible
from torchvision.ops import Conv2dNormActivation

from repro.layers.rnnpool import GlobalRNNPool2d
from repro.models.registry import register_model
from repro.models.rnnpool_common import block_settings, init_new_modules, make_downsampler

# (t, c, n, s) rows of MobileNetV2 (Sandler et al., Table 2).
MOBILENETV2_SETTING: tuple[tuple[int, int, int, int], ...] = (
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
)
# (c, s) depthwise-separable layers of MobileNetV1 (Howard et al., Table 1).
MOBILENETV1_SETTING: tuple[tuple[int, int], ...] = (
    (64, 1),
    (128, 2),
    (128, 1),
    (256, 2),
    (256, 1),
    (512, 2),
    *((512, 1),) * 5,
    (1024, 2),
    (1024, 1),
)


def _downsample_blocks(
    replace: str, in_channels: int, patch_size, stride, hidden, rnn_cell: str, activation_layer
) -> tuple[list[nn.Module], int]:
    blocks = []
    for k, s, h in block_settings(patch_size, stride, hidden):
        block = make_downsampler(replace, in_channels, k, s, h, rnn_cell=rnn_cell, activation_layer=activation_layer)
        blocks.append(block)
        in_channels = block.out_channels
    return blocks, in_channels


def _check_replaced(replaced_stages: int, rows: int) -> None:
    if not 0 <= replaced_stages < rows:
        raise ValueError(f"replaced_stages must be in [0, {rows - 1}], got {replaced_stages}")


class _Classifier(nn.Module):
    """``features -> pool -> flatten -> classifier`` (torchvision's MobileNet layout)."""

    features: nn.Sequential
    pool: nn.Module
    classifier: nn.Sequential

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.pool(self.features(x)), 1))


class MobileNetV2(_Classifier):
    """MobileNetV2; with ``replace`` set, the first ``replaced_stages`` bottleneck stacks become a downsampling block.

    Defaults of :func:`mobilenetv2_rnnpool` give paper Table 10: conv 3x3/2 (32) -> RNNPool (patch 6, stride 4,
    h1 = h2 = 16; 112^2 x 32 -> 28^2 x 64) -> bottlenecks (6,64,4,2), (6,96,3,1), (6,160,3,2), (6,320,1,1) -> conv 1x1
    (1280) -> pool -> classifier.
    """

    def __init__(
        self,
        num_classes: int = 1000,
        width_mult: float = 1.0,
        *,
        replace: str | None = None,
        replaced_stages: int = 3,
        patch_size: int | Sequence[int] = 6,
        stride: int | Sequence[int] = 4,
        hidden: int | Sequence = 16,
        rnn_cell: str = "fastgrnn",
        last_layer_rnnpool: bool = False,
        stem_channels: int | None = None,
        last_channel: int = 1280,
        dropout: float = 0.2,
        round_nearest: int = 8,
    ) -> None:
        super().__init__()
        setting = MOBILENETV2_SETTING
        stem = _make_divisible(32 * width_mult, round_nearest) if stem_channels is None else stem_channels
        self.last_channel = _make_divisible(last_channel * max(1.0, width_mult), round_nearest)
        layers: list[nn.Module] = [Conv2dNormActivation(3, stem, stride=2, activation_layer=nn.ReLU6)]
        channels = stem
        if replace is not None:
            _check_replaced(replaced_stages, len(setting))
            blocks, channels = _downsample_blocks(replace, stem, patch_size, stride, hidden, rnn_cell, nn.ReLU6)
            layers += blocks
            setting = setting[replaced_stages:]
        for t, c, n, s in setting:
            out = _make_divisible(c * width_mult, round_nearest)
            for i in range(n):
                layers.append(InvertedResidual(channels, out, s if i == 0 else 1, expand_ratio=t))
                channels = out
        layers.append(Conv2dNormActivation(channels, self.last_channel, kernel_size=1, activation_layer=nn.ReLU6))
        self.features = nn.Sequential(*layers)
        self.pool = GlobalRNNPool2d(self.last_channel) if last_layer_rnnpool else nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(nn.Dropout(dropout), nn.Linear(self.last_channel, num_classes))
        init_new_modules(self)


class MobileNetV1(_Classifier):
    """MobileNetV1 (depthwise-separable conv-BN-ReLU layers). With ``replace`` set, the first ``replaced_stages``
    depthwise-separable layers (default 4: 112^2 x 32 -> 28^2 x 256) become the downsampling block, whose ``4 h2``
    channels (64 for h = 16) feed the next layer (RNNPool Table 3, "constructed similarly with h1 = h2 = 16")."""

    def __init__(
        self,
        num_classes: int = 1000,
        width_mult: float = 1.0,
        *,
        replace: str | None = None,
        replaced_stages: int = 4,
        patch_size: int | Sequence[int] = 6,
        stride: int | Sequence[int] = 4,
        hidden: int | Sequence = 16,
        rnn_cell: str = "fastgrnn",
        last_layer_rnnpool: bool = False,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        setting = MOBILENETV1_SETTING
        stem = int(32 * width_mult)
        layers: list[nn.Module] = [Conv2dNormActivation(3, stem, stride=2)]
        channels = stem
        if replace is not None:
            _check_replaced(replaced_stages, len(setting))
            blocks, channels = _downsample_blocks(replace, stem, patch_size, stride, hidden, rnn_cell, nn.ReLU)
            layers += blocks
            setting = setting[replaced_stages:]
        for c, s in setting:
            out = int(c * width_mult)
            layers.append(
                nn.Sequential(
                    Conv2dNormActivation(channels, channels, 3, s, groups=channels),
                    Conv2dNormActivation(channels, out, 1),
                )
            )
            channels = out
        self.last_channel = channels
        self.features = nn.Sequential(*layers)
        self.pool = GlobalRNNPool2d(channels) if last_layer_rnnpool else nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(nn.Dropout(dropout), nn.Linear(channels, num_classes))
        init_new_modules(self)


_RNNPOOL_DEFAULTS = {"replace": "rnnpool"}


@register_model("mobilenetv2", family="rnnpool")
def mobilenetv2(num_classes: int = 1000, **opts) -> MobileNetV2:
    """MobileNetV2 base network (Tables 1-3 "Base"); ``last_layer_rnnpool=True`` gives Table 2 row 2."""
    return MobileNetV2(num_classes, **opts)


@register_model("mobilenetv2_rnnpool", family="rnnpool")
def mobilenetv2_rnnpool(num_classes: int = 1000, **opts) -> MobileNetV2:
    """MobileNetV2-RNNPool, paper Table 10 (patch 6, stride 4, h1 = h2 = 16, replaces 3 stacks)."""
    return MobileNetV2(num_classes, **{**_RNNPOOL_DEFAULTS, **opts})


@register_model("mobilenetv2_renet", family="rnnpool")
def mobilenetv2_renet(num_classes: int = 1000, **opts) -> MobileNetV2:
    """MobileNetV2-ReNet (Tables 2, 3): ReNet on 4x4 patches in place of the RNNPool block."""
    return MobileNetV2(num_classes, **{"replace": "renet", **opts})


_VWW = {"width_mult": 0.35, "last_channel": 320}


@register_model("mobilenetv2_035_vww", family="rnnpool")
def mobilenetv2_035_vww(num_classes: int = 2, **opts) -> MobileNetV2:
    """MobileNetV2-0.35x base for Visual Wake Words (Table 2), with the 320-channel last conv of EdgeML's VWW code."""
    return MobileNetV2(num_classes, **{**_VWW, **opts})


@register_model("mobilenetv2_035_rnnpool_vww", family="rnnpool")
def mobilenetv2_035_rnnpool_vww(num_classes: int = 2, **opts) -> MobileNetV2:
    """EdgeML's VWW model: 8-channel stem, RNNPool (patch 6, stride 4, h = 8): 112^2 x 8 -> 27^2 -> 28^2 x 32."""
    return MobileNetV2(num_classes, **{**_VWW, **_RNNPOOL_DEFAULTS, "stem_channels": 8, "hidden": 8, **opts})


@register_model("mobilenetv1", family="rnnpool")
def mobilenetv1(num_classes: int = 1000, **opts) -> MobileNetV1:
    """MobileNetV1 base network (Table 3)."""
    return MobileNetV1(num_classes, **opts)


@register_model("mobilenetv1_rnnpool", family="rnnpool")
def mobilenetv1_rnnpool(num_classes: int = 1000, **opts) -> MobileNetV1:
    """MobileNetV1-RNNPool (Table 3): RNNPool (patch 6, stride 4, h = 16) replaces the first 4 separable layers."""
    return MobileNetV1(num_classes, **{**_RNNPOOL_DEFAULTS, **opts})


@register_model("mobilenetv1_renet", family="rnnpool")
def mobilenetv1_renet(num_classes: int = 1000, **opts) -> MobileNetV1:
    """MobileNetV1-ReNet (Table 3)."""
    return MobileNetV1(num_classes, **{"replace": "renet", **opts})
