"""S3FD-style RNNPool face detectors (RNNPool App. F.2, Tables 11-15; EdgeML ``examples/.../Face_Detection``).

A detector is a list of *rows* (one per row of the paper's architecture table) and a detection head on the output
of selected rows ("sources"). Each head is a pair of convs predicting box offsets (4) and class scores (2; the first
head predicts 3 background scores and keeps their maximum, S3FD's "max-out background label"). Square anchors of
sizes 16..512 sit at strides 4..128 (QVGA M4: sizes 8, 16, 32, 48 at strides 8, 8, 16, 16).

============  =====================  =====================================================================
model         input (W x H)          notes
============  =====================  =====================================================================
Face-A        640 x 480 RGB          Table 13; RNNPool h = 4 (our reading, see docs/rnnpool.md), patch 8
Face-B        640 x 480 RGB          Table 12; h = 6, patch 8
Face-C        640 x 480 RGB          Table 11 = EdgeML ``RPool_Face_C``; h = 16, heads 5/5/5/1/1/3
Face-Quant    640 x 480 RGB          Table 14 = EdgeML ``RPool_Face_Quant``; h = 8; 8-bit in the paper
Face-M4       320 x 240 mono         Table 15 = EdgeML ``RPool_Face_M4``; h = 16; QVGA anchors
============  =====================  =====================================================================

Shapes: RNNPool uses EdgeML's right/bottom replicate padding (480 -> 119 -> 120). Stride-2 3x3 convs use padding 1,
so an odd map rounds *up* (15 -> 8): at 640 x 480 the stride-64 map is 10 x 8 where the tables print 10 x 7.

The rest of the file is the S3FD training/inference machinery, following EdgeML: prior boxes (:func:`prior_boxes`),
S3FD two-stage anchor matching (:func:`match_s3fd`), the multibox loss with 3:1 hard-negative mining
(:class:`MultiBoxLoss`) and the decoder with NMS (:func:`decode_detections`, via ``torchvision.ops``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models.mobilenetv2 import InvertedResidual
from torchvision.ops import Conv2dNormActivation, batched_nms

from repro.layers.rnnpool import RNNPool2d
from repro.models.registry import register_model

VGA_STEPS = (4, 8, 16, 32, 64, 128)
VGA_ANCHORS = (16, 32, 64, 128, 256, 512)
QVGA_STEPS = (8, 8, 16, 16)
QVGA_ANCHORS = (8, 16, 32, 48)
VARIANCE = (0.1, 0.2)


# --------------------------------------------------------------------------------------------------- building blocks


class L2Norm(nn.Module):
    """Channel-wise L2 normalisation with a learned per-channel scale (S3FD/SSD ``conv4_3`` norm)."""

    def __init__(self, channels: int, scale: float, eps: float = 1e-10) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.full((channels,), float(scale)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        norm = x.pow(2).sum(dim=1, keepdim=True).sqrt() + self.eps
        return self.weight[None, :, None, None] * (x / norm)


def _bottlenecks(in_channels: int, t: int, c: int, n: int, s: int) -> tuple[nn.Sequential, int]:
    """A (t, c, n, s) row of MBConv (inverted residual) blocks, as in EdgeML's MobileNetV2 (ReLU6, BN)."""
    layers = [InvertedResidual(in_channels if i == 0 else c, c, s if i == 0 else 1, expand_ratio=t) for i in range(n)]
    return nn.Sequential(*layers), c


def _convs(in_channels: int, c: int, n: int, s: int, kernel: int = 3, depthwise_separable: bool = False):
    """``n`` conv-BN-ReLU6 layers (the first with stride ``s``); ``depthwise_separable``: 3x3 dw + 1x1 pointwise."""
    layers: list[nn.Module] = []
    for i in range(n):
        cin, stride = (in_channels if i == 0 else c), (s if i == 0 else 1)
        if depthwise_separable:
            layers += [
                Conv2dNormActivation(cin, cin, 3, stride, groups=cin, activation_layer=nn.ReLU6),
                Conv2dNormActivation(cin, c, 1, activation_layer=nn.ReLU6),
            ]
        else:
            layers.append(Conv2dNormActivation(cin, c, kernel, stride, activation_layer=nn.ReLU6))
    return nn.Sequential(*layers), c


def _rnnpool(in_channels: int, hidden: int, patch_size: int = 8, stride: int = 4) -> tuple[RNNPool2d, int]:
    layer = RNNPool2d(in_channels, patch_size, stride, hidden, padding="edgeml")
    return layer, layer.out_channels


class S3FDOutput(NamedTuple):
    """Raw detector output: box offsets (B, P, 4), class logits (B, P, num_classes), priors (P, 4) as (cx, cy, w, h)."""

    loc: torch.Tensor
    conf: torch.Tensor
    priors: torch.Tensor


class S3FDDetector(nn.Module):
    """Rows of a backbone, L2-normalised early sources and S3FD multibox heads.

    Args:
        rows: the architecture-table rows, applied in order.
        sources: indices of the rows whose outputs feed a detection head (one per anchor scale).
        source_channels: channel count of each source.
        steps, anchor_sizes: anchor stride and side (pixels) per source.
        head_kernels: kernel of the loc/conf convs per source.
        l2norm_scales: initial L2Norm scale per source (``None``: no normalisation).
        strided_first_head: the first head starts with a stride-2 conv-BN-ReLU (8 channels) before its 3x3 predictors
            (RNNPool-Face-Quant, whose first source is at stride 2).
        maxout_background: background scores predicted by the first head, of which the maximum is kept.
    """

    def __init__(
        self,
        rows: Sequence[nn.Module],
        sources: Sequence[int],
        source_channels: Sequence[int],
        steps: Sequence[int] = VGA_STEPS,
        anchor_sizes: Sequence[int] = VGA_ANCHORS,
        head_kernels: Sequence[int] | None = None,
        l2norm_scales: Sequence[float | None] = (10.0, 8.0, 5.0),
        strided_first_head: bool = False,
        num_classes: int = 2,
        maxout_background: int = 3,
        in_channels: int = 3,
    ) -> None:
        super().__init__()
        n = len(sources)
        if not (len(source_channels) == len(steps) == len(anchor_sizes) == n):
            raise ValueError("sources, source_channels, steps and anchor_sizes must have one entry per detection layer")
        head_kernels = tuple(head_kernels or (3,) * n)
        scales = tuple(l2norm_scales) + (None,) * (n - len(l2norm_scales))
        self.rows = nn.ModuleList(rows)
        self.sources = tuple(sources)
        self.steps, self.anchor_sizes = tuple(steps), tuple(anchor_sizes)
        self.num_classes, self.maxout_background, self.in_channels = num_classes, maxout_background, in_channels
        self.l2norm = nn.ModuleList([L2Norm(c, s) if s else nn.Identity() for c, s in zip(source_channels, scales)])
        self.loc, self.conf = nn.ModuleList(), nn.ModuleList()
        for i, (c, k) in enumerate(zip(source_channels, head_kernels)):
            conf_out = num_classes + maxout_background - 1 if i == 0 else num_classes
            if i == 0 and strided_first_head:
                self.loc.append(nn.Sequential(Conv2dNormActivation(c, 8, 3, 2, activation_layer=nn.ReLU6),
                                              nn.Conv2d(8, 4, 3, padding=1)))  # fmt: skip
                self.conf.append(nn.Sequential(Conv2dNormActivation(c, 8, 3, 2, activation_layer=nn.ReLU6),
                                               nn.Conv2d(8, conf_out, 3, padding=1)))  # fmt: skip
            else:
                self.loc.append(nn.Conv2d(c, 4, k, padding=k // 2))
                self.conf.append(nn.Conv2d(c, conf_out, k, padding=k // 2))
        self._init_weights()

    def _init_weights(self) -> None:
        """EdgeML: kaiming-normal (fan_out) backbone convs; the S3FD heads get xavier-uniform weights, zero biases."""
        for m in self.rows.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")
        for m in [*self.loc.modules(), *self.conf.modules()]:
            if isinstance(m, nn.Conv2d):
                nn.init.xavier_uniform_(m.weight)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The (normalised) source maps fed to the heads."""
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"expected images of shape (B, {self.in_channels}, H, W), got {tuple(x.shape)}")
        out, wanted = [], set(self.sources)
        for i, row in enumerate(self.rows):
            x = row(x)
            if i in wanted:
                out.append(x)
        return [norm(s) for norm, s in zip(self.l2norm, out)]

    def forward(self, x: torch.Tensor) -> S3FDOutput:
        height, width = x.shape[-2:]
        locs, confs, shapes = [], [], []
        for i, src in enumerate(self.features(x)):
            loc, conf = self.loc[i](src), self.conf[i](src)
            if i == 0 and self.maxout_background > 1:
                background = conf[:, : self.maxout_background].amax(dim=1, keepdim=True)
                conf = torch.cat([background, conf[:, self.maxout_background :]], dim=1)
            shapes.append(tuple(loc.shape[-2:]))
            locs.append(loc.permute(0, 2, 3, 1).reshape(x.shape[0], -1, 4))
            confs.append(conf.permute(0, 2, 3, 1).reshape(x.shape[0], -1, self.num_classes))
        priors = prior_boxes((height, width), shapes, self.steps, self.anchor_sizes).to(x)
        return S3FDOutput(torch.cat(locs, 1), torch.cat(confs, 1), priors)

    @torch.no_grad()
    def detect(self, x: torch.Tensor, **decode_opts) -> list[dict[str, torch.Tensor]]:
        """Boxes (pixels, x1 y1 x2 y2), scores and labels per image, after NMS (see :func:`decode_detections`)."""
        out = self(x)
        return decode_detections(out, image_size=tuple(x.shape[-2:]), **decode_opts)


# ------------------------------------------------------------------------------------------------------- the models


def _assemble(spec: Sequence[tuple], in_channels: int) -> tuple[list[nn.Module], list[int]]:
    """Build rows from ``(kind, *args)`` specs; returns the rows and the output channels after each row."""
    rows, widths, c = [], [], in_channels
    for kind, *args in spec:
        if kind == "rnnpool":
            row, c = _rnnpool(c, *args)
        elif kind == "mb":
            row, c = _bottlenecks(c, *args)
        elif kind == "mb_edgeml_c":  # EdgeML Face-C's first row: (1, 24, 1, 1) then (6, 24, 1, 1)
            first, _ = _bottlenecks(c, 1, args[0], 1, 1)
            rest, c = _bottlenecks(args[0], 6, args[0], 1, 1)
            row = nn.Sequential(*first, *rest)
        elif kind == "conv":
            row, c = _convs(c, *args)
        elif kind == "dwpw":
            row, c = _convs(c, *args, depthwise_separable=True)
        else:  # pragma: no cover - specs are module constants
            raise ValueError(kind)
        rows.append(row)
        widths.append(c)
    return rows, widths


def face_classes(num_classes: int) -> int:
    """Face detectors score face vs background: accept ``num_classes`` 1 (faces) or 2 (faces + background)."""
    if num_classes not in (1, 2):
        raise ValueError(
            f"face detectors score face vs background; build them with num_classes=2 (or 1), got {num_classes}"
        )
    return 2


def _detector(spec, sources, num_classes: int, in_channels: int = 3, **kwargs) -> S3FDDetector:
    kwargs["num_classes"] = face_classes(num_classes)
    rows, widths = _assemble(spec, in_channels)
    return S3FDDetector(rows, sources, [widths[i] for i in sources], in_channels=in_channels, **kwargs)


def _face_c_spec(hidden: int, first_expansion: int) -> list[tuple]:
    first = ("mb_edgeml_c", 24) if first_expansion == 1 else ("mb", 6, 24, 2, 1)
    return [("rnnpool", hidden), first, ("mb", 6, 32, 3, 2), ("mb", 6, 64, 4, 2), ("mb", 6, 96, 3, 2),
            ("mb", 6, 160, 2, 2), ("mb", 6, 320, 1, 2)]  # fmt: skip


@register_model("rnnpool_face_c", family="face_detection", image_size=(480, 640))
def rnnpool_face_c(num_classes: int = 2, hidden: int = 16, first_expansion: int = 1, **opts) -> S3FDDetector:
    """RNNPool-Face-C (Table 11; EdgeML ``RPool_Face_C``): RNNPool on the image -> 160 x 120 x 64 -> MBConv stacks.

    ``first_expansion=1`` follows EdgeML (the first 24-channel block has t = 1); ``6`` follows the table's t = 6.
    """
    opts = {"head_kernels": (5, 5, 5, 1, 1, 3), **opts}
    return _detector(_face_c_spec(hidden, first_expansion), (1, 2, 3, 4, 5, 6), num_classes=num_classes, **opts)


@register_model("rnnpool_face_b", family="face_detection", image_size=(480, 640))
def rnnpool_face_b(num_classes: int = 2, hidden: int = 6, **opts) -> S3FDDetector:
    """RNNPool-Face-B (Table 12): RNNPool (h = 6) -> 160 x 120 x 24 -> 3x3 convs -> MBConv stacks."""
    spec = [("rnnpool", hidden), ("conv", 24, 4, 1), ("conv", 96, 1, 2), ("conv", 32, 1, 1, 1), ("mb", 6, 32, 3, 1),
            ("mb", 6, 64, 3, 2), ("mb", 6, 128, 2, 2), ("mb", 6, 160, 1, 2), ("mb", 6, 320, 1, 2)]  # fmt: skip
    return _detector(spec, (1, 4, 5, 6, 7, 8), num_classes=num_classes, **opts)


@register_model("rnnpool_face_a", family="face_detection", image_size=(480, 640))
def rnnpool_face_a(num_classes: int = 2, hidden: int = 4, **opts) -> S3FDDetector:
    """RNNPool-Face-A (Table 13): RNNPool (h = 4, the table's 16 channels) -> depthwise-separable convs -> MBConv.

    App. F.2 says h = 16 (which would give 64 channels, contradicting the table); pass ``hidden=16`` for that reading.
    """
    spec = [("rnnpool", hidden), ("dwpw", 16, 4, 1), ("dwpw", 16, 1, 2), ("mb", 1, 16, 3, 1), ("mb", 1, 24, 3, 2),
            ("mb", 1, 32, 2, 2), ("mb", 2, 128, 1, 2), ("mb", 2, 160, 1, 2)]  # fmt: skip
    return _detector(spec, (1, 3, 4, 5, 6, 7), num_classes=num_classes, **opts)


@register_model("rnnpool_face_quant", family="face_detection", image_size=(480, 640), dtype="int8")
def rnnpool_face_quant(num_classes: int = 2, hidden: int = 8, **opts) -> S3FDDetector:
    """RNNPool-Face-Quant (Table 14; EdgeML ``RPool_Face_Quant``): conv/2 -> conv -> RNNPool (h = 8) -> 80 x 60 x 32.

    The first head sits on the stride-2 conv output and starts with a strided conv. The paper deploys this model in
    8 bits; this is the float model that is trained (quantisation is a deployment step outside the model).
    """
    spec = [("conv", 4, 1, 2), ("conv", 4, 1, 1), ("rnnpool", hidden), ("mb", 2, 16, 4, 1), ("mb", 2, 24, 4, 2),
            ("mb", 2, 32, 2, 2), ("mb", 2, 64, 1, 2), ("mb", 2, 96, 1, 2)]  # fmt: skip
    return _detector(spec, (1, 3, 4, 5, 6, 7), num_classes=num_classes, strided_first_head=True, **opts)


@register_model("rnnpool_face_m4", family="face_detection", image_size=(240, 320))
def rnnpool_face_m4(num_classes: int = 2, hidden: int = 16, **opts) -> S3FDDetector:
    """RNNPool-Face-M4 (Table 15; EdgeML ``RPool_Face_M4``): 320 x 240 monochrome, 4 MBConv blocks, QVGA anchors.

    EdgeML trains its RNNPool sparse (W1 50 %, others 30 % non-zero) by hard thresholding during training; the model
    here is dense.
    """
    spec = [("conv", 4, 1, 2), ("rnnpool", hidden), ("mb", 2, 32, 1, 1), ("mb", 2, 32, 1, 1), ("mb", 2, 64, 1, 2),
            ("mb", 2, 64, 1, 1)]  # fmt: skip
    opts = {"steps": QVGA_STEPS, "anchor_sizes": QVGA_ANCHORS, **opts}
    return _detector(spec, (2, 3, 4, 5), in_channels=1, num_classes=num_classes, **opts)


# ------------------------------------------------------------------------------------------------ priors and boxes


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


def point_form(boxes: torch.Tensor) -> torch.Tensor:
    """(cx, cy, w, h) -> (x1, y1, x2, y2)."""
    return torch.cat([boxes[:, :2] - boxes[:, 2:] / 2, boxes[:, :2] + boxes[:, 2:] / 2], dim=1)


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


def box_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """IoU of point-form boxes (A, 4) x (B, 4) -> (A, B)."""
    lt = torch.max(a[:, None, :2], b[None, :, :2])
    rb = torch.min(a[:, None, 2:], b[None, :, 2:])
    inter = (rb - lt).clamp(min=0).prod(dim=2)
    area_a = (a[:, 2:] - a[:, :2]).prod(dim=1)
    area_b = (b[:, 2:] - b[:, :2]).prod(dim=1)
    return inter / (area_a[:, None] + area_b[None, :] - inter)


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
