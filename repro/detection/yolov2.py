"""YOLOv2 region loss and decoder of the Tiny-YOLOv2 and Condensation-Net face detectors (repro.models.condensation).

The networks output raw predictions (B, A, 5 + C, S_h, S_w) ``(tx, ty, tw, th, to, class logits...)`` and carry their
anchors (grid cells) as ``model.anchors``; :class:`YOLOv2Loss` trains them and :func:`decode_yolo` turns the
predictions into boxes (NMS from ``torchvision.ops``).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops import batched_nms, box_iou


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


@torch.no_grad()
def detect_yolov2(model: nn.Module, images: torch.Tensor, **decode_opts) -> list[dict[str, torch.Tensor]]:
    """Boxes (pixels), scores and labels per image of a Tiny-YOLOv2 network, after NMS (see :func:`decode_yolo`)."""
    return decode_yolo(model(images), model.anchors, image_size=tuple(images.shape[-2:]), **decode_opts)
