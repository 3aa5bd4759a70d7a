"""YOLOv3 on an SAP backbone with the semantics of the official mmdetection 2.x config (``configs/network/yolov3``).

Written from the behaviour of mmdetection 2.x's ``YOLOV3Neck``, ``YOLOV3Head``, ``GridAssigner``, ``YOLOBBoxCoder``
and ``YOLOAnchorGenerator`` (Apache-2.0), described in reference_spec §4.2 and docs/detection.md; no code was copied.

* Neck: three scales, deep to shallow. Level 0 is a ``DetectionBlock`` (1x1 n, 3x3 2n, 1x1 n, 3x3 2n, 1x1 n) on the
  deepest map; level i > 0 takes a 1x1 conv of level i-1's output, upsamples it **to the size of the next shallower
  map** and concatenates it with that map before its ``DetectionBlock``. mmdetection upsamples by 2, which cannot
  concatenate when a stride-changed map is not an exact half (19 -> 10 with the official padding): quirk B29.
* Head: per level a 3x3 ConvModule and a 1x1 conv to ``3 x (5 + K)`` ``(tx, ty, tw, th, objectness, classes)``.
* Anchors: three Darknet sizes per level, centred in each cell (``grid x stride + stride / 2``), at the configured
  anchor strides (the backbone's real strides; quirk B27 keeps the 2222121 strides on MobileNet 4222121).
* Assignment: the anchors of the cell holding a box centre are responsible; ``GridAssigner(0.5, 0.5, 0)``: anchors
  whose best IoU is <= 0.5 are negatives, responsible anchors above 0.5 are positives for their best box, and every
  box takes its best responsible anchor(s); the others are ignored.
* Loss (sums, not normalised): BCE of classes (x1) and objectness (x1, on positives and negatives), BCE of the raw
  (tx, ty) against the in-cell offsets (x2), MSE of (tw, th) against ``log(box / anchor)`` (x2).
* Test: objectness >= 0.005, the 1000 most confident, score = class x objectness >= 0.05, class-wise NMS 0.45,
  100 per image; boxes clipped to the image.

Images are /255-normalised (mean 0, std 1 on [0, 1] tensors), resized keeping the ratio (long side 608 for the test;
training draws the long and short edge limits in [320, 608] as mmdetection's ``multiscale_mode='range'``) and padded
to a multiple of 32 (:class:`YOLOTransform`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import partial
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.models.detection.transform import GeneralizedRCNNTransform, resize_boxes
from torchvision.ops import Conv2dNormActivation, batched_nms, box_iou, clip_boxes_to_image

from repro.detection.backbone import DetectorError, backbone_depth, backbone_family, body_strides, build_body

#: Darknet anchor sizes (w, h) per level, deep to shallow (strides 32, 16, 8 in the standard network).
DARKNET_ANCHORS = (
    ((116, 90), (156, 198), (373, 326)),
    ((30, 61), (62, 45), (59, 119)),
    ((10, 13), (16, 30), (33, 23)),
)
#: Backbone outputs and neck/head widths of the official configs (deep to shallow), per backbone.
YOLO_CONFIGS: dict[str, dict[str, tuple[int, ...]]] = {
    "mobilenetv2": {"out_indices": (2, 4, 6), "neck": (96, 96, 96), "head": (96, 96, 96)},
    "resnet18": {"out_indices": (1, 2, 3), "neck": (256, 128, 64), "head": (512, 256, 128)},
}
TEST_SIZE = 608
TRAIN_SCALES = (320, 608)
LOSS_WEIGHTS = {"loss_cls": 1.0, "loss_conf": 1.0, "loss_xy": 2.0, "loss_wh": 2.0}
EPS = 1e-6

ConvBNLeaky = partial(Conv2dNormActivation, activation_layer=partial(nn.LeakyReLU, negative_slope=0.1))
"""mmdetection's ``ConvModule``: conv (no bias) + BN + LeakyReLU(0.1), padding ``k // 2``."""


class DetectionBlock(nn.Sequential):
    """Five convs: 1x1 to ``n``, 3x3 to ``2n``, 1x1 to ``n``, 3x3 to ``2n``, 1x1 to ``n``."""

    def __init__(self, in_channels: int, n: int) -> None:
        super().__init__(
            ConvBNLeaky(in_channels, n, 1),
            ConvBNLeaky(n, 2 * n, 3),
            ConvBNLeaky(2 * n, n, 1),
            ConvBNLeaky(n, 2 * n, 3),
            ConvBNLeaky(2 * n, n, 1),
        )


class YOLOv3Neck(nn.Module):
    """``in_channels`` and ``out_channels`` deep to shallow; ``forward`` takes and returns maps deep to shallow."""

    def __init__(self, in_channels: Sequence[int], out_channels: Sequence[int]) -> None:
        super().__init__()
        if len(in_channels) != len(out_channels):
            raise ValueError("the neck needs one output width per input")
        self.detect = nn.ModuleList([DetectionBlock(in_channels[0], out_channels[0])])
        self.lateral = nn.ModuleList()
        for i in range(1, len(in_channels)):
            self.lateral.append(ConvBNLeaky(out_channels[i - 1], out_channels[i], 1))
            self.detect.append(DetectionBlock(in_channels[i] + out_channels[i], out_channels[i]))

    def forward(self, feats: Sequence[Tensor]) -> list[Tensor]:
        out = self.detect[0](feats[0])
        outs = [out]
        for lateral, detect, feat in zip(self.lateral, self.detect[1:], feats[1:]):
            up = F.interpolate(lateral(out), size=feat.shape[-2:], mode="nearest")  # B29: to the lateral's size
            out = detect(torch.cat([up, feat], dim=1))
            outs.append(out)
        return outs


def _logit(p: float) -> float:
    return -math.log((1 - p) / p)


class YOLOv3Head(nn.Module):
    """Per level a 3x3 ConvModule and a 1x1 prediction conv to ``num_anchors x (5 + num_classes)`` channels.

    Init as mmdetection 2.x: convs N(0, 0.01), BN 1/0, objectness bias = logit(8 / (608 / stride)^2) (eight objects
    per 608-px map), class bias = logit(0.01).
    """

    def __init__(
        self,
        in_channels: Sequence[int],
        out_channels: Sequence[int],
        num_classes: int,
        strides: Sequence[int],
        num_anchors: int = 3,
    ) -> None:
        super().__init__()
        self.num_classes, self.num_anchors = num_classes, num_anchors
        self.convs = nn.ModuleList(ConvBNLeaky(i, o, 3) for i, o in zip(in_channels, out_channels))
        self.preds = nn.ModuleList(nn.Conv2d(o, num_anchors * (5 + num_classes), 1) for o in out_channels)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.normal_(m.weight, std=0.01)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        with torch.no_grad():
            for pred, stride in zip(self.preds, strides):
                bias = pred.bias.view(num_anchors, 5 + num_classes)
                bias[:, 4] = _logit(8 / (TEST_SIZE / stride) ** 2)
                bias[:, 5:] = _logit(0.01)

    def forward(self, feats: Sequence[Tensor]) -> list[Tensor]:
        """Per level (B, H x W x A, 5 + K), cells row-major and anchors fastest."""
        outs = []
        for conv, pred, x in zip(self.convs, self.preds, feats):
            y = pred(conv(x))
            outs.append(y.permute(0, 2, 3, 1).reshape(y.shape[0], -1, 5 + self.num_classes))
        return outs


class YOLOTransform(GeneralizedRCNNTransform):
    """/255 normalisation, keep-ratio resize (long edge ``test_size``, or random limits in ``train_scales`` during
    training) and padding to a multiple of 32; ``postprocess`` maps boxes back to the original images."""

    def __init__(self, test_size: int = TEST_SIZE, train_scales: tuple[int, int] | None = TRAIN_SCALES) -> None:
        super().__init__(test_size, test_size, [0.0, 0.0, 0.0], [1.0, 1.0, 1.0], size_divisible=32)
        self.test_size, self.train_scales = int(test_size), train_scales

    def resize(self, image: Tensor, target: dict[str, Tensor] | None = None) -> tuple[Tensor, dict | None]:
        h, w = image.shape[-2:]
        long_edge = short_edge = self.test_size
        if self.training and self.train_scales is not None:
            lo, hi = self.train_scales
            a, b = (int(v) for v in torch.randint(lo, hi + 1, (2,)))
            long_edge, short_edge = max(a, b), min(a, b)
        scale = min(long_edge / max(h, w), short_edge / min(h, w))
        image = F.interpolate(
            image[None], scale_factor=scale, mode="bilinear", recompute_scale_factor=True, align_corners=False
        )[0]
        if target is not None:
            target["boxes"] = resize_boxes(target["boxes"], [h, w], list(image.shape[-2:]))
        return image, target


def grid_assign(
    anchors: Tensor,
    responsible: Tensor,
    gt_boxes: Tensor,
    pos_iou_thr: float = 0.5,
    neg_iou_thr: float = 0.5,
    min_pos_iou: float = 0.0,
) -> Tensor:
    """mmdetection's ``GridAssigner`` (``gt_max_assign_all=True``): per anchor -1 (ignore), 0 (negative) or
    ``1 + index`` of its box."""
    assigned = torch.full((anchors.shape[0],), -1, dtype=torch.long, device=anchors.device)
    if gt_boxes.numel() == 0:
        return assigned.zero_()
    overlaps = box_iou(gt_boxes, anchors)  # (G, N)
    assigned[overlaps.max(dim=0).values <= neg_iou_thr] = 0
    overlaps = overlaps.masked_fill(~responsible[None], -1.0)
    max_overlap, best_gt = overlaps.max(dim=0)
    positive = (max_overlap > pos_iou_thr) & responsible
    assigned[positive] = best_gt[positive] + 1
    gt_max = overlaps.max(dim=1).values
    hits = (overlaps == gt_max[:, None]) & responsible[None] & (gt_max[:, None] > min_pos_iou)
    hit = hits.any(dim=0)
    last_gt = hits.shape[0] - 1 - hits.flip(0).int().argmax(dim=0)  # boxes are visited in order: the last one wins
    assigned[hit] = last_gt[hit] + 1
    return assigned


def encode_boxes(anchors: Tensor, boxes: Tensor, strides: Tensor) -> Tensor:
    """``YOLOBBoxCoder.encode``: in-cell centre offsets in (eps, 1 - eps) and ``log(box / anchor)`` sizes."""
    a_c, a_wh = (anchors[:, :2] + anchors[:, 2:]) / 2, anchors[:, 2:] - anchors[:, :2]
    b_c, b_wh = (boxes[:, :2] + boxes[:, 2:]) / 2, boxes[:, 2:] - boxes[:, :2]
    xy = ((b_c - a_c) / strides[:, None] + 0.5).clamp(EPS, 1 - EPS)
    wh = torch.log((b_wh / a_wh).clamp(min=EPS))
    return torch.cat([xy, wh], dim=1)


def decode_boxes(anchors: Tensor, xy: Tensor, wh: Tensor, strides: Tensor) -> Tensor:
    """``YOLOBBoxCoder.decode`` of sigmoid (x, y) offsets and raw (w, h) into (x1, y1, x2, y2)."""
    centre = (anchors[:, :2] + anchors[:, 2:]) / 2 + (xy - 0.5) * strides[:, None]
    half = (anchors[:, 2:] - anchors[:, :2]) / 2 * wh.exp()
    return torch.cat([centre - half, centre + half], dim=1)


class YOLOv3(nn.Module):
    """Backbone, neck and head with anchors, target assignment, loss and post-processing; torchvision's interface.

    ``forward(images, targets)``: ``images`` are (3, H, W) float tensors in [0, 1]; ``targets`` dicts with ``boxes``
    (N, 4) xyxy pixels and ``labels`` (N,) in ``1..num_classes``. Training returns the four losses; evaluation returns
    per image ``boxes``, ``scores`` and ``labels`` (``1..num_classes``) in the original image's pixels.
    """

    def __init__(
        self,
        body: nn.Module,
        neck: YOLOv3Neck,
        head: YOLOv3Head,
        anchor_strides: Sequence[int],
        transform: YOLOTransform,
        anchor_sizes: Sequence[Sequence[tuple[int, int]]] = DARKNET_ANCHORS,
        *,
        conf_thresh: float = 0.005,
        nms_pre: int = 1000,
        score_thresh: float = 0.05,
        nms_thresh: float = 0.45,
        detections_per_img: int = 100,
    ) -> None:
        super().__init__()
        self.body, self.neck, self.head, self.transform = body, neck, head, transform
        self.num_classes = head.num_classes
        self.anchor_strides = tuple(int(s) for s in anchor_strides)
        self.anchor_sizes = tuple(tuple(tuple(float(v) for v in wh) for wh in level) for level in anchor_sizes)
        self.conf_thresh, self.nms_pre, self.score_thresh = conf_thresh, nms_pre, score_thresh
        self.nms_thresh, self.detections_per_img = nms_thresh, detections_per_img

    def grid_anchors(self, sizes: Sequence[tuple[int, int]], device: torch.device) -> tuple[Tensor, Tensor]:
        """Anchors (N, 4) of all levels (cells row-major, anchors fastest) and their strides (N,)."""
        anchors, strides = [], []
        for (h, w), stride, wh in zip(sizes, self.anchor_strides, self.anchor_sizes):
            wh_t = torch.tensor(wh, dtype=torch.float32, device=device)  # (A, 2)
            ys, xs = torch.meshgrid(torch.arange(h, device=device), torch.arange(w, device=device), indexing="ij")
            centre = torch.stack([xs, ys], dim=-1).reshape(-1, 1, 2).float() * stride + stride / 2  # (HW, 1, 2)
            boxes = torch.cat([centre - wh_t / 2, centre + wh_t / 2], dim=-1)  # (HW, A, 4)
            anchors.append(boxes.reshape(-1, 4))
            strides.append(torch.full((h * w * len(wh),), float(stride), device=device))
        return torch.cat(anchors), torch.cat(strides)

    def responsible_flags(self, boxes: Tensor, sizes: Sequence[tuple[int, int]]) -> Tensor:
        """The anchors of the cell holding each box centre, per level (``floor(centre / stride)``, clamped to the
        map: mmdetection indexes without a bound check)."""
        counts = [h * w * len(wh) for (h, w), wh in zip(sizes, self.anchor_sizes)]
        flags = torch.zeros(sum(counts), dtype=torch.bool, device=boxes.device)
        centre = (boxes[:, :2] + boxes[:, 2:]) / 2
        offset = 0
        for (h, w), stride, wh, count in zip(sizes, self.anchor_strides, self.anchor_sizes, counts):
            col = (centre[:, 0] / stride).floor().long().clamp(0, w - 1)
            row = (centre[:, 1] / stride).floor().long().clamp(0, h - 1)
            first = offset + (row * w + col) * len(wh)
            for a in range(len(wh)):
                flags[first + a] = True
            offset += count
        return flags

    def forward(self, images: list[Tensor], targets: list[dict[str, Tensor]] | None = None):
        if self.training and targets is None:
            raise ValueError("YOLOv3 needs targets in training mode")
        original_sizes = [tuple(img.shape[-2:]) for img in images]
        image_list, targets = self.transform(images, targets)
        feats = list(self.body(image_list.tensors))[::-1]  # deep to shallow
        maps = self.neck(feats)
        sizes = [tuple(m.shape[-2:]) for m in maps]
        pred = torch.cat(self.head(maps), dim=1)  # (B, N, 5 + K)
        anchors, strides = self.grid_anchors(sizes, pred.device)
        if self.training:
            return self.loss(pred, anchors, strides, sizes, targets)
        detections = self.postprocess(pred, anchors, strides, image_list.image_sizes)
        return self.transform.postprocess(detections, image_list.image_sizes, original_sizes)

    def loss(
        self, pred: Tensor, anchors: Tensor, strides: Tensor, sizes, targets: list[dict[str, Tensor]]
    ) -> dict[str, Tensor]:
        total = {name: pred.new_zeros(()) for name in LOSS_WEIGHTS}
        for p, target in zip(pred, targets):
            boxes, labels = target["boxes"].to(pred), target["labels"].to(pred.device)
            assigned = grid_assign(anchors, self.responsible_flags(boxes, sizes), boxes)
            pos, neg = assigned > 0, assigned == 0
            conf_mask = pos | neg
            total["loss_conf"] = total["loss_conf"] + F.binary_cross_entropy_with_logits(
                p[conf_mask, 4], pos[conf_mask].to(p.dtype), reduction="sum"
            )
            if not pos.any():
                continue
            gt = assigned[pos] - 1
            encoded = encode_boxes(anchors[pos], boxes[gt], strides[pos])
            onehot = F.one_hot(labels[gt].long() - 1, self.num_classes).to(p.dtype)
            total["loss_cls"] = total["loss_cls"] + F.binary_cross_entropy_with_logits(
                p[pos, 5:], onehot, reduction="sum"
            )
            total["loss_xy"] = total["loss_xy"] + F.binary_cross_entropy_with_logits(
                p[pos, :2], encoded[:, :2], reduction="sum"
            )
            total["loss_wh"] = total["loss_wh"] + F.mse_loss(p[pos, 2:4], encoded[:, 2:], reduction="sum")
        return {name: LOSS_WEIGHTS[name] * value for name, value in total.items()}

    def postprocess(
        self, pred: Tensor, anchors: Tensor, strides: Tensor, image_sizes: list[tuple[int, int]]
    ) -> list[dict[str, Tensor]]:
        results = []
        for p, size in zip(pred, image_sizes):
            objectness = p[:, 4].sigmoid()
            keep = (objectness >= self.conf_thresh).nonzero().squeeze(1)
            if keep.numel() > self.nms_pre:
                keep = keep[objectness[keep].topk(self.nms_pre).indices]
            boxes = decode_boxes(anchors[keep], p[keep, :2].sigmoid(), p[keep, 2:4], strides[keep])
            scores = p[keep, 5:].sigmoid() * objectness[keep, None]
            idx, cls = (scores > self.score_thresh).nonzero(as_tuple=True)
            boxes, scores = clip_boxes_to_image(boxes[idx], size), scores[idx, cls]
            order = batched_nms(boxes, scores, cls, self.nms_thresh)[: self.detections_per_img]
            results.append({"boxes": boxes[order], "scores": scores[order], "labels": cls[order] + 1})
        return results


def yolo_config_key(arch: str) -> str:
    key = "resnet18" if backbone_depth(arch) == "resnet18" else backbone_family(arch)
    if key not in YOLO_CONFIGS:
        raise DetectorError(
            f"{arch}: the official YOLOv3 configs define MobileNetV2 and ResNet18 backbones only "
            f"(got the {backbone_family(arch)} family)"
        )
    return key


def build_yolov3(
    arch: str,
    num_classes: int,
    image_size: int = TEST_SIZE,
    *,
    anchor_strides: Sequence[int] | None = None,
    train_scales: tuple[int, int] | None = TRAIN_SCALES,
    **options: Any,
) -> YOLOv3:
    """YOLOv3 for ``num_classes`` classes on the SAP backbone ``arch`` (MobileNetV2 or ResNet18 configs).

    ``image_size``: the test long side (608); ``train_scales``: the range of the training resize limits (None: train
    at ``image_size``). ``anchor_strides`` (deep to shallow) default to the backbone's real strides. Other
    ``options`` go to :class:`YOLOv3` (thresholds) or, for ``placement``/``strict``, to the backbone.
    """
    build_opts = {k: options.pop(k) for k in ("placement", "strict") if k in options}
    config = YOLO_CONFIGS[yolo_config_key(arch)]
    body = build_body(arch, config["out_indices"], **build_opts)
    real = body_strides(body)[::-1]
    strides = tuple(anchor_strides) if anchor_strides is not None else tuple(real)
    in_channels = body.feature_info.channels()[::-1]
    neck = YOLOv3Neck(in_channels, config["neck"])
    head = YOLOv3Head(config["neck"], config["head"], num_classes, strides)
    for m in neck.modules():  # mmcv ConvModule default: Kaiming normal (fan_out, leaky_relu 0.1), BN 1/0
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, a=0.1, mode="fan_out", nonlinearity="leaky_relu")
    transform = YOLOTransform(int(image_size), train_scales)
    return YOLOv3(body, neck, head, strides, transform, **options)
