"""S3FD machinery of the RNNPool face detectors (EdgeML ``examples/pytorch/vision/Face_Detection/layers``).

The networks (:mod:`repro.models.face_detection`) end at their heads; this module gives their prior boxes
(:func:`prior_boxes`), SSD box coding with variances (:func:`encode` / :func:`decode`), S3FD's two-stage anchor
matching (:func:`match_s3fd`), the multibox loss with 3:1 hard-negative mining (:class:`MultiBoxLoss`) and the
decoder with per-class NMS (:func:`decode_detections`). Box IoU, format conversion and NMS are ``torchvision.ops``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops import batched_nms, box_convert, box_iou

VARIANCE = (0.1, 0.2)


class S3FDOutput(NamedTuple):
    """Detector output: box offsets (B, P, 4), class logits (B, P, num_classes), priors (P, 4) as (cx, cy, w, h)."""

    loc: torch.Tensor
    conf: torch.Tensor
    priors: torch.Tensor


def prior_boxes(
    image_size: tuple[int, int],
    feature_shapes: Sequence[tuple[int, int]],
    steps: Sequence[int],
    anchor_sizes: Sequence[int],
) -> torch.Tensor:
    """Square anchors (cx, cy, w, h), normalised to the image, row-major per feature map (EdgeML ``PriorBox``).

    Centres are ``(j + 0.5) * step / W`` — computed from the stride, not from the (rounded) map size."""
    height, width = image_size
    boxes = []
    for (fh, fw), step, size in zip(feature_shapes, steps, anchor_sizes):
        cy, cx = torch.meshgrid(
            (torch.arange(fh, dtype=torch.float32) + 0.5) * step / height,
            (torch.arange(fw, dtype=torch.float32) + 0.5) * step / width,
            indexing="ij",
        )
        wh = torch.tensor([size / width, size / height]).expand(fh * fw, 2)
        boxes.append(torch.cat([cx.reshape(-1, 1), cy.reshape(-1, 1), wh], dim=1))
    return torch.cat(boxes, dim=0)


def s3fd_output(network: nn.Module, images: torch.Tensor) -> S3FDOutput:
    """Run an S3FD network (``loc, conf, feature_shapes`` and ``steps``/``anchor_sizes`` attributes) with its priors."""
    loc, conf, shapes = network(images)
    priors = prior_boxes(tuple(images.shape[-2:]), shapes, network.steps, network.anchor_sizes).to(loc)
    return S3FDOutput(loc, conf, priors)


def point_form(boxes: torch.Tensor) -> torch.Tensor:
    """(cx, cy, w, h) -> (x1, y1, x2, y2)."""
    return box_convert(boxes, "cxcywh", "xyxy")


def encode(matched: torch.Tensor, priors: torch.Tensor, variances: Sequence[float] = VARIANCE) -> torch.Tensor:
    """SSD box encoding of point-form ``matched`` boxes against (cx, cy, w, h) ``priors``."""
    centre = ((matched[:, :2] + matched[:, 2:]) / 2 - priors[:, :2]) / (variances[0] * priors[:, 2:])
    size = torch.log((matched[:, 2:] - matched[:, :2]) / priors[:, 2:]) / variances[1]
    return torch.cat([centre, size], dim=1)


def decode(loc: torch.Tensor, priors: torch.Tensor, variances: Sequence[float] = VARIANCE) -> torch.Tensor:
    """Inverse of :func:`encode`: offsets (..., P, 4) -> point-form boxes (..., P, 4)."""
    centre = priors[..., :2] + loc[..., :2] * variances[0] * priors[..., 2:]
    size = priors[..., 2:] * torch.exp(loc[..., 2:] * variances[1])
    return torch.cat([centre - size / 2, centre + size / 2], dim=-1)


def match_s3fd(
    truths: torch.Tensor,
    labels: torch.Tensor,
    priors: torch.Tensor,
    thresholds: tuple[float, float, float] = (0.1, 0.35, 0.5),
    variances: Sequence[float] = VARIANCE,
) -> tuple[torch.Tensor, torch.Tensor]:
    """S3FD anchor matching as in EdgeML ``bbox_utils.match``; returns encoded targets (P, 4) and labels (P,).

    Stage 1: every anchor takes its best face; anchors below ``thresholds[1]`` are background, and each face keeps
    its best anchor. Stage 2 (scale compensation): with ``N`` = the mean count of faces whose best anchor reaches
    ``thresholds[1]`` and ``thresholds[2]``, the ``N`` highest-IoU anchors with IoU in (``thresholds[0]``,
    ``thresholds[1]``) are also labelled positive.
    """
    num_priors = priors.shape[0]
    if truths.numel() == 0:
        return priors.new_zeros(num_priors, 4), torch.zeros(num_priors, dtype=torch.long, device=priors.device)
    th1, th2, th3 = thresholds
    overlaps = box_iou(truths, point_form(priors))  # (faces, priors)
    best_prior_overlap, best_prior_idx = overlaps.max(dim=1)
    best_truth_overlap, best_truth_idx = overlaps.max(dim=0)
    best_truth_overlap = best_truth_overlap.index_fill(0, best_prior_idx, 2.0)
    for j in range(best_prior_idx.shape[0]):  # a face wins its best anchor even if another face overlaps it more
        best_truth_idx[best_prior_idx[j]] = j
    n_stage2 = int(((best_prior_overlap >= th2).sum() + (best_prior_overlap >= th3).sum()) // 2)
    matches = truths[best_truth_idx]
    conf = labels[best_truth_idx].long().clone()
    conf[best_truth_overlap < th2] = 0
    candidates = torch.where((best_truth_overlap > th1) & (best_truth_overlap < th2), best_truth_overlap, 0.0)
    stage2_overlap, stage2_idx = candidates.sort(descending=True)
    if n_stage2 > 0:
        n_stage2 = min(n_stage2, int((stage2_overlap[:n_stage2] > th1).sum()))
        conf[stage2_idx[:n_stage2]] += 1
    return encode(matches, priors, variances), conf


class MultiBoxLoss(nn.Module):
    """S3FD/SSD loss: smooth-L1 on positive anchors + cross-entropy with ``neg_pos_ratio``:1 hard-negative mining,
    both summed and divided by the number of positives (EdgeML ``MultiBoxLoss``).

    ``targets``: one (n_i, 5) tensor per image, rows ``[x1, y1, x2, y2, label]`` normalised to [0, 1] (label 1 = face).
    Returns ``(loss_loc, loss_conf)``.
    """

    def __init__(
        self,
        num_classes: int = 2,
        neg_pos_ratio: int = 3,
        thresholds: tuple[float, float, float] = (0.1, 0.35, 0.5),
        variances: Sequence[float] = VARIANCE,
    ) -> None:
        super().__init__()
        self.num_classes, self.neg_pos_ratio = num_classes, neg_pos_ratio
        self.thresholds, self.variances = tuple(thresholds), tuple(variances)

    def forward(self, output: S3FDOutput, targets: Sequence[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        loc, conf, priors = output
        if len(targets) != loc.shape[0]:
            raise ValueError(f"got {len(targets)} target tensors for a batch of {loc.shape[0]} images")
        loc_t, conf_t = [], []
        for t in targets:
            t = t.to(loc)
            if t.dim() != 2 or (t.numel() and t.shape[1] != 5):
                raise ValueError(f"each target must be (n, 5) [x1, y1, x2, y2, label], got {tuple(t.shape)}")
            encoded, labels = match_s3fd(t[:, :4], t[:, 4], priors, self.thresholds, self.variances)
            loc_t.append(encoded)
            conf_t.append(labels)
        loc_t, conf_t = torch.stack(loc_t), torch.stack(conf_t)
        pos = conf_t > 0
        num_pos = pos.sum(dim=1, keepdim=True)
        loss_l = F.smooth_l1_loss(loc[pos], loc_t[pos], reduction="sum")
        with torch.no_grad():  # rank negatives by their confidence loss
            mining = F.cross_entropy(conf.reshape(-1, self.num_classes), conf_t.reshape(-1), reduction="none")
            mining = mining.view_as(conf_t).masked_fill(pos, 0.0)
            rank = mining.argsort(dim=1, descending=True).argsort(dim=1)
            num_neg = (self.neg_pos_ratio * num_pos).clamp(max=pos.shape[1] - 1)
            neg = rank < num_neg
        selected = pos | neg
        loss_c = F.cross_entropy(conf[selected], conf_t[selected], reduction="sum")
        total_pos = num_pos.sum()
        norm = total_pos if total_pos > 0 else torch.tensor(loc.shape[0], device=loc.device)
        return loss_l / norm, loss_c / norm


def decode_detections(
    output: S3FDOutput,
    image_size: tuple[int, int] | None = None,
    conf_thresh: float = 0.01,
    nms_thresh: float = 0.3,
    nms_top_k: int = 5000,
    top_k: int = 750,
    variances: Sequence[float] = VARIANCE,
) -> list[dict[str, torch.Tensor]]:
    """Softmax scores, box decoding, per-class NMS (EdgeML VGA settings by default: 0.01 / 0.3 / 5000 / 750).

    Returns one dict per image with ``boxes`` (n, 4; pixels when ``image_size=(H, W)`` is given, else normalised),
    ``scores`` (n,) and ``labels`` (n,), sorted by score.
    """
    loc, conf, priors = output
    scores = F.softmax(conf, dim=-1)
    boxes = decode(loc, priors, variances)
    if image_size is not None:
        height, width = image_size
        boxes = boxes * boxes.new_tensor([width, height, width, height])
    results = []
    for b in range(loc.shape[0]):
        fg = scores[b, :, 1:]
        prior_idx, cls = (fg > conf_thresh).nonzero(as_tuple=True)
        cand_scores = fg[prior_idx, cls]
        if cand_scores.numel() > nms_top_k:
            keep = cand_scores.topk(nms_top_k).indices
            prior_idx, cls, cand_scores = prior_idx[keep], cls[keep], cand_scores[keep]
        cand_boxes = boxes[b, prior_idx]
        keep = batched_nms(cand_boxes, cand_scores, cls, nms_thresh)[:top_k]
        results.append({"boxes": cand_boxes[keep], "scores": cand_scores[keep], "labels": cls[keep] + 1})
    return results


@torch.no_grad()
def detect_faces(network: nn.Module, images: torch.Tensor, **decode_opts) -> list[dict[str, torch.Tensor]]:
    """Boxes (pixels, x1 y1 x2 y2), scores and labels per image, after NMS (see :func:`decode_detections`)."""
    return decode_detections(s3fd_output(network, images), image_size=tuple(images.shape[-2:]), **decode_opts)
