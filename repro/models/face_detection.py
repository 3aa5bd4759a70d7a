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

The networks end at their heads: ``forward`` returns the raw per-anchor offsets and scores and the head map sizes
(:class:`S3FDHeadOutput`). The S3FD machinery that turns them into priors, losses and boxes (prior boxes, two-stage
matching, the multibox loss, decoding with NMS) is :mod:`repro.detection.s3fd`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch
from torch import nn
from torchvision.models.mobilenetv2 import InvertedResidual
from torchvision.ops import Conv2dNormActivation

from repro.layers.rnnpool import RNNPool2d
from repro.models.registry import register_model

VGA_STEPS = (4, 8, 16, 32, 64, 128)
VGA_ANCHORS = (16, 32, 64, 128, 256, 512)
QVGA_STEPS = (8, 8, 16, 16)
QVGA_ANCHORS = (8, 16, 32, 48)


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


class S3FDHeadOutput(NamedTuple):
    """Raw network output: box offsets (B, P, 4), class logits (B, P, num_classes) over the anchors of every head map
    (row-major per map), and the (H, W) of each head map; priors come from :func:`repro.detection.s3fd.s3fd_output`."""

    loc: torch.Tensor
    conf: torch.Tensor
    feature_shapes: tuple[tuple[int, int], ...]


class S3FDNetwork(nn.Module):
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

    def forward(self, x: torch.Tensor) -> S3FDHeadOutput:
        locs, confs, shapes = [], [], []
        for i, src in enumerate(self.features(x)):
            loc, conf = self.loc[i](src), self.conf[i](src)
            if i == 0 and self.maxout_background > 1:
                background = conf[:, : self.maxout_background].amax(dim=1, keepdim=True)
                conf = torch.cat([background, conf[:, self.maxout_background :]], dim=1)
            shapes.append(tuple(loc.shape[-2:]))
            locs.append(loc.permute(0, 2, 3, 1).reshape(x.shape[0], -1, 4))
            confs.append(conf.permute(0, 2, 3, 1).reshape(x.shape[0], -1, self.num_classes))
        return S3FDHeadOutput(torch.cat(locs, 1), torch.cat(confs, 1), tuple(shapes))


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


def _detector(spec, sources, num_classes: int, in_channels: int = 3, **kwargs) -> S3FDNetwork:
    kwargs["num_classes"] = face_classes(num_classes)
    rows, widths = _assemble(spec, in_channels)
    return S3FDNetwork(rows, sources, [widths[i] for i in sources], in_channels=in_channels, **kwargs)


def _face_c_spec(hidden: int, first_expansion: int) -> list[tuple]:
    first = ("mb_edgeml_c", 24) if first_expansion == 1 else ("mb", 6, 24, 2, 1)
    return [("rnnpool", hidden), first, ("mb", 6, 32, 3, 2), ("mb", 6, 64, 4, 2), ("mb", 6, 96, 3, 2),
            ("mb", 6, 160, 2, 2), ("mb", 6, 320, 1, 2)]  # fmt: skip


@register_model("rnnpool_face_c", family="face_detection", image_size=(480, 640))
def rnnpool_face_c(num_classes: int = 2, hidden: int = 16, first_expansion: int = 1, **opts) -> S3FDNetwork:
    """RNNPool-Face-C (Table 11; EdgeML ``RPool_Face_C``): RNNPool on the image -> 160 x 120 x 64 -> MBConv stacks.

    ``first_expansion=1`` follows EdgeML (the first 24-channel block has t = 1); ``6`` follows the table's t = 6.
    """
    opts = {"head_kernels": (5, 5, 5, 1, 1, 3), **opts}
    return _detector(_face_c_spec(hidden, first_expansion), (1, 2, 3, 4, 5, 6), num_classes=num_classes, **opts)


@register_model("rnnpool_face_b", family="face_detection", image_size=(480, 640))
def rnnpool_face_b(num_classes: int = 2, hidden: int = 6, **opts) -> S3FDNetwork:
    """RNNPool-Face-B (Table 12): RNNPool (h = 6) -> 160 x 120 x 24 -> 3x3 convs -> MBConv stacks."""
    spec = [("rnnpool", hidden), ("conv", 24, 4, 1), ("conv", 96, 1, 2), ("conv", 32, 1, 1, 1), ("mb", 6, 32, 3, 1),
            ("mb", 6, 64, 3, 2), ("mb", 6, 128, 2, 2), ("mb", 6, 160, 1, 2), ("mb", 6, 320, 1, 2)]  # fmt: skip
    return _detector(spec, (1, 4, 5, 6, 7, 8), num_classes=num_classes, **opts)


@register_model("rnnpool_face_a", family="face_detection", image_size=(480, 640))
def rnnpool_face_a(num_classes: int = 2, hidden: int = 4, **opts) -> S3FDNetwork:
    """RNNPool-Face-A (Table 13): RNNPool (h = 4, the table's 16 channels) -> depthwise-separable convs -> MBConv.

    App. F.2 says h = 16 (which would give 64 channels, contradicting the table); pass ``hidden=16`` for that reading.
    """
    spec = [("rnnpool", hidden), ("dwpw", 16, 4, 1), ("dwpw", 16, 1, 2), ("mb", 1, 16, 3, 1), ("mb", 1, 24, 3, 2),
            ("mb", 1, 32, 2, 2), ("mb", 2, 128, 1, 2), ("mb", 2, 160, 1, 2)]  # fmt: skip
    return _detector(spec, (1, 3, 4, 5, 6, 7), num_classes=num_classes, **opts)


@register_model("rnnpool_face_quant", family="face_detection", image_size=(480, 640), dtype="int8")
def rnnpool_face_quant(num_classes: int = 2, hidden: int = 8, **opts) -> S3FDNetwork:
    """RNNPool-Face-Quant (Table 14; EdgeML ``RPool_Face_Quant``): conv/2 -> conv -> RNNPool (h = 8) -> 80 x 60 x 32.

    The first head sits on the stride-2 conv output and starts with a strided conv. The paper deploys this model in
    8 bits; this is the float model that is trained (quantisation is a deployment step outside the model).
    """
    spec = [("conv", 4, 1, 2), ("conv", 4, 1, 1), ("rnnpool", hidden), ("mb", 2, 16, 4, 1), ("mb", 2, 24, 4, 2),
            ("mb", 2, 32, 2, 2), ("mb", 2, 64, 1, 2), ("mb", 2, 96, 1, 2)]  # fmt: skip
    return _detector(spec, (1, 3, 4, 5, 6, 7), num_classes=num_classes, strided_first_head=True, **opts)


@register_model("rnnpool_face_m4", family="face_detection", image_size=(240, 320))
def rnnpool_face_m4(num_classes: int = 2, hidden: int = 16, **opts) -> S3FDNetwork:
    """RNNPool-Face-M4 (Table 15; EdgeML ``RPool_Face_M4``): 320 x 240 monochrome, 4 MBConv blocks, QVGA anchors.

    EdgeML trains its RNNPool sparse (W1 50 %, others 30 % non-zero) by hard thresholding during training; the model
    here is dense.
    """
    spec = [("conv", 4, 1, 2), ("rnnpool", hidden), ("mb", 2, 32, 1, 1), ("mb", 2, 32, 1, 1), ("mb", 2, 64, 1, 2),
            ("mb", 2, 64, 1, 1)]  # fmt: skip
    opts = {"steps": QVGA_STEPS, "anchor_sizes": QVGA_ANCHORS, **opts}
    return _detector(spec, (2, 3, 4, 5), in_channels=1, num_classes=num_classes, **opts)
