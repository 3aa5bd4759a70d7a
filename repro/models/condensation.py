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
* the head, the YOLOv2 region loss (:class:`YOLOv2Loss`) and the decoder (:func:`decode_yolo`) are the same for both.

Memory accounting must count only the ``C``-channel output of a condensed layer (its ``k C`` map is virtual); the
layers expose ``virtual_input_channels_factor`` for that.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops import batched_nms, box_iou

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

    @torch.no_grad()
    def detect(self, x: torch.Tensor, **decode_opts) -> list[dict[str, torch.Tensor]]:
        return decode_yolo(self(x), self.anchors, image_size=tuple(x.shape[-2:]), **decode_opts)


def _grid_boxes(pred: torch.Tensor, anchors: torch.Tensor) -> torch.Tensor:
    """Predicted boxes (B, A, S_h, S_w, 4) as normalised (x1, y1, x2, y2)."""
    _, _, _, s_h, s_w = pred.shape
    gy, gx = torch.meshgrid(torch.arange(s_h, device=pred.device), torch.arange(s_w, device=pred.device), indexing="ij")
    cx = (torch.sigmoid(pred[:, :, 0]) + gx) / s_w
    cy = (torch.sigmoid(pred[:, :, 1]) + gy) / s_h
    w = anchors[:, 0, None, None] * torch.exp(pred[:, :, 2]) / s_w
    h = anchors[:, 1, None, None] * torch.exp(pred[:, :, 3]) / s_h
    return torch.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], dim=-1)


class YOLOv2Loss(nn.Module):
    """YOLOv2 region loss (sum over the batch, divided by the batch size).

    For each face the responsible predictor is the anchor of best (centred) shape IoU in the cell holding its centre.
    Terms: ``coord_scale * (2 - w h) *`` squared error of ``(sigmoid(tx), sigmoid(ty), tw, th)``; objectness
    ``(sigmoid(to) - 1)^2`` for responsible predictors and ``noobj_scale * sigmoid(to)^2`` for the others whose best
    IoU with any face is below ``ignore_thresh``; cross-entropy of the class logits when there are several classes.
    ``targets``: one (n, 5) tensor per image, ``[x1, y1, x2, y2, label]`` normalised (label 1 = the first class).
    """

    def __init__(self, coord_scale: float = 1.0, noobj_scale: float = 1.0, ignore_thresh: float = 0.6) -> None:
        super().__init__()
        self.coord_scale, self.noobj_scale, self.ignore_thresh = coord_scale, noobj_scale, ignore_thresh

    def forward(self, pred: torch.Tensor, targets: Sequence[torch.Tensor], anchors: torch.Tensor) -> torch.Tensor:
        b, num_anchors, _, s_h, s_w = pred.shape
        if len(targets) != b:
            raise ValueError(f"got {len(targets)} target tensors for a batch of {b} images")
        boxes = _grid_boxes(pred.detach(), anchors)
        obj = torch.sigmoid(pred[:, :, 4])
        responsible = torch.zeros_like(obj, dtype=torch.bool)
        ignore = torch.zeros_like(responsible)
        loss = pred.new_zeros(())
        for i, t in enumerate(targets):
            t = t.to(pred)
            if t.numel() == 0:
                continue
            ignore[i] = box_iou(boxes[i].reshape(-1, 4), t[:, :4]).amax(dim=1).view(num_anchors, s_h, s_w) > (
                self.ignore_thresh
            )
            wh = t[:, 2:4] - t[:, :2]
            centre = (t[:, :2] + t[:, 2:4]) / 2
            cell_x = (centre[:, 0] * s_w).clamp(0, s_w - 1e-4)
            cell_y = (centre[:, 1] * s_h).clamp(0, s_h - 1e-4)
            gw, gh = wh[:, 0] * s_w, wh[:, 1] * s_h
            inter = torch.min(gw[:, None], anchors[None, :, 0]) * torch.min(gh[:, None], anchors[None, :, 1])
            shape_iou = inter / (gw[:, None] * gh[:, None] + anchors[None, :, 0] * anchors[None, :, 1] - inter)
            a = shape_iou.argmax(dim=1)
            gx, gy = cell_x.long(), cell_y.long()
            p = pred[i, a, :, gy, gx]  # (n, 5 + C)
            scale = self.coord_scale * (2.0 - wh[:, 0] * wh[:, 1])
            coord = (
                (torch.sigmoid(p[:, 0]) - (cell_x - gx)) ** 2
                + (torch.sigmoid(p[:, 1]) - (cell_y - gy)) ** 2
                + (p[:, 2] - torch.log(gw / anchors[a, 0])) ** 2
                + (p[:, 3] - torch.log(gh / anchors[a, 1])) ** 2
            )
            loss = loss + (scale * coord).sum() + ((torch.sigmoid(p[:, 4]) - 1.0) ** 2).sum()
            if p.shape[1] > 6:
                loss = loss + F.cross_entropy(p[:, 5:], (t[:, 4].long() - 1).clamp(min=0), reduction="sum")
            responsible[i, a, gy, gx] = True
        background = ~responsible & ~ignore
        loss = loss + self.noobj_scale * (obj[background] ** 2).sum()
        return loss / b


def decode_yolo(
    pred: torch.Tensor,
    anchors: torch.Tensor,
    image_size: tuple[int, int] | None = None,
    conf_thresh: float = 0.01,
    nms_thresh: float = 0.45,
    top_k: int = 750,
) -> list[dict[str, torch.Tensor]]:
    """Boxes (pixels when ``image_size=(H, W)`` is given), scores ``sigmoid(to) softmax(class)``, labels; after NMS."""
    boxes = _grid_boxes(pred, anchors)
    scores = torch.sigmoid(pred[:, :, 4:5]) * F.softmax(pred[:, :, 5:], dim=2)  # (B, A, C, S, S)
    if image_size is not None:
        height, width = image_size
        boxes = boxes * boxes.new_tensor([width, height, width, height])
    results = []
    for b in range(pred.shape[0]):
        flat_boxes = boxes[b].reshape(-1, 4)
        flat_scores = scores[b].permute(0, 2, 3, 1).reshape(-1, scores.shape[2])
        idx, cls = (flat_scores > conf_thresh).nonzero(as_tuple=True)
        cand_boxes, cand_scores = flat_boxes[idx], flat_scores[idx, cls]
        keep = batched_nms(cand_boxes, cand_scores, cls, nms_thresh)[:top_k]
        results.append({"boxes": cand_boxes[keep], "scores": cand_scores[keep], "labels": cls[keep] + 1})
    return results


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
