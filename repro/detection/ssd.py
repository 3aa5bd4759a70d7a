"""SSD in the SSDlite style on an SAP backbone: torchvision's ``SSD`` + ``SSDLiteHead`` with the SAP mmdetection config.

reference_spec §4.2 (``configs/network/ssd/_base_.py``): two backbone outputs at strides 16 and 32 (MobileNetV2
``out_indices`` (4, 7): 96 and 1280 channels; ResNet18 (2, 3): 256 and 512), an SSDNeck of four extra depthwise levels
(512, 256, 256, 128 channels, stride 2, padding 1), a depthwise SSD head (= torchvision's ``SSDLiteHead``), BatchNorm
eps 1e-3 / momentum 0.03 with ReLU6 in neck and head, neck convs TruncNormal(0.03), head convs Normal(0.001), six
default boxes per location (:func:`repro.detection.anchors.ssd_default_boxes`), MaxIoU 0.5 matching with 3:1 hard
negatives, smooth-L1 (beta 1), test score 0.02 / NMS 0.45 / 200 per image, 320x320 input without keeping the ratio.

The 2222121 / 4222121 configs multiply the default-box steps by 2 / 4; here the multiplier is the backbone's real
stride of its last output divided by 32, the same for every official entry. Away from the official 320 px (smoke
runs) the boxes are laid on the real feature maps (:func:`repro.detection.anchors.ssd_default_boxes`).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from functools import partial
from typing import Any

import torch
from torch import nn
from torchvision.models.detection.ssd import SSD
from torchvision.models.detection.ssdlite import SSDLiteHead
from torchvision.ops import Conv2dNormActivation

from repro.detection.anchors import SSD_SIZE, ssd_default_boxes
from repro.detection.backbone import DetectorError, backbone_depth, backbone_family, body_strides, build_body
from repro.detection.faster_rcnn import IMAGENET_MEAN, IMAGENET_STD

#: Backbone outputs and extra-level widths of the official SSD configs, per backbone family.
SSD_OUT_INDICES = {"mobilenetv2": (4, 7), "resnet18": (2, 3)}
SSD_EXTRA_CHANNELS = (512, 256, 256, 128)
SSD_NORM = partial(nn.BatchNorm2d, eps=1e-3, momentum=0.03)


def extra_level(in_channels: int, out_channels: int, norm_layer: Callable[..., nn.Module]) -> nn.Sequential:
    """One SSDNeck extra level with depthwise convs: 1x1 to half, depthwise 3x3 stride 2 padding 1, 1x1 to out."""
    mid = out_channels // 2
    act = nn.ReLU6
    return nn.Sequential(
        Conv2dNormActivation(in_channels, mid, 1, norm_layer=norm_layer, activation_layer=act),
        Conv2dNormActivation(mid, mid, 3, stride=2, groups=mid, norm_layer=norm_layer, activation_layer=act),
        Conv2dNormActivation(mid, out_channels, 1, norm_layer=norm_layer, activation_layer=act),
    )


class SapSSDBackbone(nn.Module):
    """The SAP backbone's two outputs followed by the SSDNeck's extra levels; six maps for the SSD head."""

    def __init__(self, arch: str, extra_channels=SSD_EXTRA_CHANNELS, **build_opts: Any) -> None:
        super().__init__()
        key = "resnet18" if backbone_depth(arch) == "resnet18" else backbone_family(arch)
        if key not in SSD_OUT_INDICES:
            raise DetectorError(
                f"{arch}: the official SSD configs define MobileNetV2 and ResNet18 backbones only "
                f"(got the {backbone_family(arch)} family)"
            )
        self.body = build_body(arch, SSD_OUT_INDICES[key], **build_opts)
        channels = self.body.feature_info.channels()
        extras = []
        for out in extra_channels:
            extras.append(extra_level(channels[-1], out, SSD_NORM))
            channels.append(out)
        self.extras = nn.ModuleList(extras)
        for m in self.extras.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.trunc_normal_(m.weight, std=0.03)
        self.out_channels = channels
        self.strides = tuple(body_strides(self.body))

    def map_sizes(self, side: int) -> list[int]:
        """Side of each of the six maps for a square input (stride-2 3x3 convs with padding 1 round up)."""
        plan = self.body.spatial_plan.sizes(side)
        sizes = [plan[name] for name in self.body.feature_info.module_name()]
        for _ in self.extras:
            sizes.append(-(-sizes[-1] // 2))
        return sizes

    def forward(self, x: torch.Tensor) -> OrderedDict[str, torch.Tensor]:
        maps = list(self.body(x))
        for extra in self.extras:
            maps.append(extra(maps[-1]))
        return OrderedDict((str(i), m) for i, m in enumerate(maps))


def build_ssd(arch: str, num_classes: int, image_size: int | tuple[int, int] = SSD_SIZE, **options: Any) -> SSD:
    """SSDlite-style SSD for ``num_classes`` object classes (background added) on the SAP backbone ``arch``.

    ``image_size``: the fixed square (or (H, W)) input; the default boxes are defined at 320 and scale with it.
    Other ``options`` go to torchvision's ``SSD`` or, for ``placement``/``strict``, to the backbone.
    """
    build_opts = {k: options.pop(k) for k in ("placement", "strict") if k in options}
    backbone = SapSSDBackbone(arch, **build_opts)
    size = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
    multiplier = backbone.strides[-1] // 32
    anchors = ssd_default_boxes(multiplier, image_size=min(size), map_sizes=backbone.map_sizes(min(size)))
    head = SSDLiteHead(backbone.out_channels, anchors.num_anchors_per_location(), num_classes + 1, SSD_NORM)
    for m in head.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.normal_(m.weight, std=0.001)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
    settings = {"score_thresh": 0.02, "nms_thresh": 0.45, "detections_per_img": 200, "topk_candidates": 1000}
    model = SSD(
        backbone,
        anchors,
        size,
        num_classes + 1,
        image_mean=list(IMAGENET_MEAN),
        image_std=list(IMAGENET_STD),
        head=head,
        **{**settings, **options},
    )
    model.anchor_strides = tuple(anchors.steps)
    return model
