"""Faster R-CNN + FPN on an SAP backbone: torchvision's ``FasterRCNN`` with the SAP mmdetection settings.

reference_spec §4.2 (``configs/network/faster_rcnn/_base_.py``): FPN 256 channels with 5 outputs (P6 = max-pool of
P5), RPN anchors of side 8 x stride at ratios 0.5/1/2, RoIAlign 7x7 (sampling ratio 0) on P2-P5, Shared2FC 1024 box
head, (0.1, 0.1, 0.2, 0.2) box coder, RPN 0.7/0.3 with 256 samples, 2000 -> 1000 proposals (NMS 0.7), RoI 0.5 with
512 samples at 0.25, test score 0.05 / NMS 0.5 / 100 per image, Resize (1333, 800) keeping the ratio, pad to 32.

Anchors and RoI levels follow the backbone's *real* output strides (:mod:`repro.detection.anchors`). ``compat_b26``
reproduces quirk B26 of the official R50-NLP 2222/4222 configs: the 1222 anchor and RoI strides (4..64 / 4..32) on maps
that are at 2x / 4x those strides.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

import torch
from torch import nn
from torchvision.models.detection import FasterRCNN
from torchvision.ops import FeaturePyramidNetwork
from torchvision.ops.feature_pyramid_network import LastLevelMaxPool

from repro.detection.anchors import StridedRoIAlign, rpn_anchor_generator
from repro.detection.backbone import DetectorError, body_strides, build_body

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
#: The 1222 strides that the B26 configs keep whatever the backbone's digits.
OFFICIAL_1222_STRIDES = (4, 8, 16, 32)
FPN_CHANNELS = 256


class SapFPN(nn.Module):
    """The SAP backbone's four stage outputs through torchvision's ``FeaturePyramidNetwork`` (P2-P5 + max-pool P6).

    ``strides`` are the real strides of P2..P6 (the backbone's reductions, and twice the last for P6). FPN convs are
    Xavier-uniform initialised, as mmdetection's FPN.
    """

    def __init__(self, arch: str, out_channels: int = FPN_CHANNELS, **build_opts: Any) -> None:
        super().__init__()
        self.body = build_body(arch, (0, 1, 2, 3), **build_opts)
        self.fpn = FeaturePyramidNetwork(
            self.body.feature_info.channels(), out_channels, extra_blocks=LastLevelMaxPool()
        )
        for m in self.fpn.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)
        self.out_channels = out_channels
        strides = body_strides(self.body)
        self.strides = (*strides, 2 * strides[-1])

    def forward(self, x: torch.Tensor) -> OrderedDict[str, torch.Tensor]:
        return self.fpn(OrderedDict((str(i), f) for i, f in enumerate(self.body(x))))


def _init_box_head(model: FasterRCNN) -> None:
    """mmdetection's Shared2FCBBoxHead init: Xavier-uniform shared FCs, N(0, 0.01) scores, N(0, 0.001) deltas."""
    for fc in (model.roi_heads.box_head.fc6, model.roi_heads.box_head.fc7):
        nn.init.xavier_uniform_(fc.weight)
        nn.init.zeros_(fc.bias)
    predictor = model.roi_heads.box_predictor
    for layer, std in ((predictor.cls_score, 0.01), (predictor.bbox_pred, 0.001)):
        nn.init.normal_(layer.weight, std=std)
        nn.init.zeros_(layer.bias)


def build_faster_rcnn(
    arch: str,
    num_classes: int,
    image_size: int | tuple[int, int] = (800, 1333),
    *,
    compat_b26: bool = False,
    rpn_post_nms_top_n_train: int = 1000,
    box_batch_size_per_image: int = 512,
    **options: Any,
) -> FasterRCNN:
    """Faster R-CNN + FPN for ``num_classes`` object classes (background added) on the SAP backbone ``arch``.

    ``image_size``: ``(short side, long side cap)`` of the keep-ratio resize (mmdetection's ``img_scale=(1333, 800)``
    is ``(800, 1333)``), or one side for both. ``compat_b26``: use the 1222 anchor/RoI strides on any backbone (B26).
    ``rpn_post_nms_top_n_train`` (mmdetection ``max_per_img=1000``; torchvision's default is 2000) and
    ``box_batch_size_per_image`` (512) are lowered by the smoke recipes. Other ``options`` go to ``FasterRCNN``
    (torchvision names) or, for ``placement``/``strict``, to the backbone.
    """
    build_opts = {k: options.pop(k) for k in ("placement", "strict") if k in options}
    backbone = SapFPN(arch, **build_opts)
    if len(backbone.body.feature_info) != 4:
        raise DetectorError(f"{arch}: Faster R-CNN + FPN needs a backbone with four stages (ResNet, ResNeXt)")
    strides = (*OFFICIAL_1222_STRIDES, 2 * OFFICIAL_1222_STRIDES[-1]) if compat_b26 else backbone.strides
    min_size, max_size = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
    model = FasterRCNN(
        backbone,
        num_classes=num_classes + 1,
        min_size=min_size,
        max_size=max_size,
        image_mean=list(IMAGENET_MEAN),
        image_std=list(IMAGENET_STD),
        rpn_anchor_generator=rpn_anchor_generator(strides),
        box_roi_pool=StridedRoIAlign(["0", "1", "2", "3"], strides[:4], output_size=7, sampling_ratio=0),
        rpn_post_nms_top_n_train=rpn_post_nms_top_n_train,
        box_batch_size_per_image=box_batch_size_per_image,
        **options,
    )
    _init_box_head(model)
    model.anchor_strides = tuple(strides)
    return model
