"""Tiny-YOLOv2-style face detector with and without Condensation-Net cross-channel pooling — **our reading**.

Condensation-Net (Chen et al., arXiv 2104.14124) is known here only from its abstract (reference_spec §2.8): it adds
cross-channel pooling to Tiny-YOLOv2 for face detection and computes the pooling before the feature map is stored
("virtual feature maps"). Our reading:

* the backbone is Tiny-YOLOv2 (darknet ``yolov2-tiny-voc``): eight 3x3 conv-BN-LeakyReLU(0.1) layers with widths
  16, 32, 64, 128, 256, 512, 1024, 1024, 2x2 max pools after the first six (the sixth with stride 1), then a 1x1
  conv to ``anchors x (5 + classes)``; 416x416 input -> 13x13 grid;
* in the Condensation-Net variant, each selected 3x3 conv has ``k x C`` filters followed by cross-channel pooling
  (max over ``k`` adjacent channels, :class:`~repro.layers.cross_channel.CondensedConv2d`) and then BN + LeakyReLU on
  the ``C`` stored channels. Every 3x3 layer is condensed by default (``ccp_layers``), ``k = 2``;
* the head is the same for both; the YOLOv2 region loss and the decoder are :mod:`repro.detection.yolov2`.

Memory accounting must count only the ``C``-channel output of a condensed layer (its ``k C`` map is virtual); the
layers expose ``virtual_input_channels_factor`` for that.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from repro.layers.cross_channel import CondensedConv2d
from repro.models.face_detection import face_classes
from repro.models.registry import register_model

TINY_YOLOV2_WIDTHS = (16, 32, 64, 128, 256, 512, 1024, 1024)
# yolov2-tiny-voc anchors, (w, h) in grid cells of the 13x13 output.
TINY_YOLOV2_ANCHORS = ((1.08, 1.19), (3.42, 4.41), (6.63, 11.38), (9.42, 5.11), (16.62, 10.52))


class _ConvBNLeaky(nn.Sequential):
    """3x3 conv (plain, or condensed with cross-channel pooling) -> BN -> LeakyReLU(0.1)."""

    def __init__(self, in_channels: int, out_channels: int, cross_channel: str | None, k: int) -> None:
        if cross_channel is None:
            conv: nn.Module = nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False)
        else:
            conv = CondensedConv2d(in_channels, out_channels, 3, k=k, mode=cross_channel)
        super().__init__(conv, nn.BatchNorm2d(out_channels), nn.LeakyReLU(0.1, inplace=True))


class TinyYOLOv2(nn.Module):
    """Tiny-YOLOv2 detector; ``cross_channel='max'|'avg'`` turns it into the Condensation-Net variant.

    Output: (B, A, 5 + C, S, S) raw predictions ``(tx, ty, tw, th, to, class logits...)``.
    """

    def __init__(
        self,
        num_classes: int = 1,
        anchors: Sequence[tuple[float, float]] = TINY_YOLOV2_ANCHORS,
        widths: Sequence[int] = TINY_YOLOV2_WIDTHS,
        in_channels: int = 3,
        cross_channel: str | None = None,
        k: int = 2,
        ccp_layers: Sequence[int] | None = None,
    ) -> None:
        super().__init__()
        if len(widths) != 8:
            raise ValueError(f"Tiny-YOLOv2 has 8 conv layers; widths has {len(widths)} entries")
        ccp_layers = tuple(range(len(widths))) if ccp_layers is None else tuple(ccp_layers)
        if any(not 0 <= i < len(widths) for i in ccp_layers):
            raise ValueError(f"ccp_layers must index the 8 conv layers (0..7), got {ccp_layers}")
        self.num_classes, self.cross_channel, self.k = num_classes, cross_channel, k
        self.register_buffer("anchors", torch.tensor(anchors, dtype=torch.float32), persistent=False)
        layers: list[nn.Module] = []
        c = in_channels
        for i, w in enumerate(widths):
            layers.append(_ConvBNLeaky(c, w, cross_channel if i in ccp_layers else None, k))
            if i < 5:
                layers.append(nn.MaxPool2d(2, 2))
            elif i == 5:  # darknet's size-2 stride-1 max pool, padded on the right/bottom to keep 13x13
                layers += [nn.ZeroPad2d((0, 1, 0, 1)), nn.MaxPool2d(2, 1)]
            c = w
        self.features = nn.Sequential(*layers)
        self.head = nn.Conv2d(c, len(anchors) * (5 + num_classes), 1)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, a=0.1, nonlinearity="leaky_relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.head(self.features(x))
        b, _, s_h, s_w = out.shape
        return out.view(b, self.anchors.shape[0], 5 + self.num_classes, s_h, s_w)


@register_model("tiny_yolov2_face", family="condensation", image_size=416)
def tiny_yolov2_face(num_classes: int = 1, **opts) -> TinyYOLOv2:
    """Tiny-YOLOv2 face detector (the Condensation-Net baseline), one class."""
    face_classes(num_classes)
    return TinyYOLOv2(1, **opts)


@register_model("condensation_tiny_yolov2_face", family="condensation", image_size=416)
def condensation_tiny_yolov2_face(num_classes: int = 1, cross_channel: str = "max", k: int = 2, **opts) -> TinyYOLOv2:
    """Condensation-Net face detector (our reading): Tiny-YOLOv2, cross-channel pooling (k = 2) after each 3x3 conv."""
    face_classes(num_classes)
    return TinyYOLOv2(1, cross_channel=cross_channel, k=k, **opts)
