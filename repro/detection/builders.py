"""``build_detector(detector, arch, num_classes, image_size, **options)``: every SAP detection configuration.

Detectors: ``faster_rcnn`` (Faster R-CNN + FPN), ``ssd`` (the official SSD, SSDlite-style: depthwise neck and head)
with ``ssdlite`` as another name for it, and ``yolov3``. Every model has torchvision's interface: ``model(images,
targets)`` returns a dict of losses in training mode and per-image ``boxes``/``scores``/``labels`` (labels
``1..num_classes``) in evaluation mode; ``model.anchor_strides`` are the strides its priors are laid out with.

The official quirks of the SAP configs are reproduced only when asked (reference_spec §5, docs/detection.md):

* ``compat_b26`` (Faster R-CNN): the 1222 anchor/RoI strides on a stride-changed backbone, as the official
  ``resnet50_nlp_{2222,4222}`` and ``dyresnet50_nlp_{2222,4222}`` configs.
* ``compat_b27`` (MobileNet 4222121): ``ssd`` builds what the official "SSD 4222121" config builds — a YOLOv3 with the
  1222121 anchor strides (it inherits the YOLOv3 MobileNet config) — and ``yolov3`` keeps the 2222121 anchor strides.

:func:`official_compat` says which flags reproduce the official config of an entry; :func:`detector_record` is what a
result records about the model.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from repro.arch import parse_arch
from repro.detection.backbone import DetectorError, backbone_family
from repro.detection.faster_rcnn import build_faster_rcnn
from repro.detection.ssd import build_ssd
from repro.detection.yolov3 import TEST_SIZE, build_yolov3

DETECTORS = ("faster_rcnn", "ssd", "ssdlite", "yolov3")
ALIASES = {"ssdlite": "ssd"}
#: Backbones whose official Faster R-CNN configs keep the 1222 strides (B26).
B26_BACKBONES = ("resnet50", "dyresnet50")
B26_POOL = "nlp"


def _strides(arch: str) -> str:
    return "".join(str(stage.stride) for stage in parse_arch(arch).stages)


def _is_b27_backbone(arch: str) -> bool:
    return backbone_family(arch) == "mobilenetv2" and _strides(arch) == "4222121"


def official_compat(detector: str, arch: str) -> dict[str, bool]:
    """The compat flags that reproduce the official config of ``detector`` on ``arch`` (all False elsewhere)."""
    detector = ALIASES.get(detector, detector)
    parsed = parse_arch(arch)
    pools = {stage.type for stage in parsed.stages if not stage.is_skip}
    b26 = (
        detector == "faster_rcnn"
        and f"{'dy' if parsed.dynamic else ''}{parsed.backbone}" in B26_BACKBONES
        and pools == {B26_POOL}
        and _strides(arch) in ("2222", "4222")
    )
    b27 = detector in ("ssd", "yolov3") and _is_b27_backbone(arch)
    return {"compat_b26": b26, "compat_b27": b27}


def _body(model: nn.Module) -> nn.Module:
    """The SAP backbone inside a built detector."""
    return model.body if hasattr(model, "body") else model.backbone.body


def _side(image_size) -> int:
    return int(image_size) if isinstance(image_size, int) else int(max(image_size))


def _ceil32(n: int) -> int:
    return -(-int(n) // 32) * 32


def padded_input(kind: str, image_size) -> tuple[int, int]:
    """The largest (H, W) canvas the backbone sees for ``image_size`` (Faster R-CNN and YOLOv3 pad to 32)."""
    if kind == "faster_rcnn":
        short, long = (image_size, image_size) if isinstance(image_size, int) else image_size
        return _ceil32(short), _ceil32(long)
    if kind == "ssd":
        return (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
    side = _ceil32(_side(image_size))
    return side, side


DEFAULT_SIZES = {"faster_rcnn": (800, 1333), "ssd": 320, "yolov3": TEST_SIZE}


def build_detector(
    detector: str,
    arch: str,
    num_classes: int,
    image_size: int | tuple[int, int] | None = None,
    *,
    compat_b26: bool = False,
    compat_b27: bool = False,
    check_size: bool = True,
    **options: Any,
) -> nn.Module:
    """Build ``detector`` (see :data:`DETECTORS`) for ``num_classes`` object classes on the SAP backbone ``arch``.

    ``image_size``: Faster R-CNN ``(short side, long side cap)`` of its keep-ratio resize (or one int for both); SSD
    the fixed input side; YOLOv3 the test long side. Default: the official sizes of the detector that is built. With
    ``check_size`` the backbone's input-size limits are checked on the largest padded input
    (``repro.models.sap_common.InputSizeError``; e.g. B11: non-reduced NLP at 1333x800). ``options`` go to the detector
    (torchvision names for Faster R-CNN / SSD, :class:`~repro.detection.yolov3.YOLOv3` thresholds) and
    ``placement``/``strict`` to the backbone.
    """
    if detector not in DETECTORS:
        raise DetectorError(f"unknown detector {detector!r}; choose one of {', '.join(DETECTORS)}")
    if num_classes < 1:
        raise DetectorError(f"num_classes must be >= 1 (object classes, without background), got {num_classes}")
    kind = ALIASES.get(detector, detector)
    if compat_b26 and kind != "faster_rcnn":
        raise DetectorError("compat_b26 (unscaled anchor/RoI strides) applies to faster_rcnn only")
    if compat_b27 and not (kind in ("ssd", "yolov3") and _is_b27_backbone(arch)):
        raise DetectorError(
            f"compat_b27 reproduces the official MobileNet 4222121 SSD/YOLOv3 configs only, not {detector} on {arch}"
        )
    built = "yolov3" if kind == "ssd" and compat_b27 else kind
    size = DEFAULT_SIZES[built] if image_size is None else image_size
    if built == "faster_rcnn":
        model = build_faster_rcnn(arch, num_classes, size, compat_b26=compat_b26, **options)
    elif built == "ssd":
        model = build_ssd(arch, num_classes, size, **options)
    else:
        # B27: the official "SSD 4222121" inherits the YOLOv3 MobileNet 1222121 config (anchor strides 32/16/8);
        # yolov3/mobilenet/skip-4222121.py keeps the 2222121 strides (64/32/16).
        strides = None if not compat_b27 else (32, 16, 8) if kind == "ssd" else (64, 32, 16)
        model = build_yolov3(arch, num_classes, _side(size), anchor_strides=strides, **options)
    if check_size:
        _body(model).spatial_plan.check(*padded_input(built, size))
    model.detector_kind = built
    model.compat = {"compat_b26": compat_b26, "compat_b27": compat_b27}
    return model


def detector_record(model: nn.Module) -> dict[str, Any]:
    """What a result records about a built detector: kind, anchor strides, compat flags, parameter count."""
    return {
        "detector": getattr(model, "detector_kind", None),
        "anchor_strides": [float(s) for s in getattr(model, "anchor_strides", ())],
        "compat": dict(getattr(model, "compat", {})),
        "num_params": sum(p.numel() for p in model.parameters()),
    }
