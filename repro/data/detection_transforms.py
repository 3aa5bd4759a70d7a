"""Image-and-box augmentation of the detection recipes on ``torchvision.transforms.v2``.

A transform takes ``(PIL image, target)`` as :class:`repro.data.coco.CocoDetection` yields them and returns a float
image tensor (3, H, W) in [0, 1] with ``target["boxes"]`` (xyxy pixels) and ``target["labels"]`` moved with it.
Resizing, normalisation and padding are the detector's own (its ``transform``), as in torchvision.

* ``none``: nothing (evaluation).
* ``flip``: RandomFlip 0.5 (the SAP Faster R-CNN pipeline; smoke runs).
* ``ssd``: PhotoMetricDistortion, Expand (ratio 1-4, filled with the mean), MinIoURandomCrop (IoUs 0.1, 0.3, 0.5,
  0.7, 0.9; min crop 0.3), RandomFlip 0.5 (mmdetection 2.x names; the SAP SSD pipeline).
* ``yolov3``: PhotoMetricDistortion, Expand (ratio 1-2, filled with 0), MinIoURandomCrop (IoUs 0.4 .. 0.9; min crop
  0.3), RandomFlip 0.5 (the SAP YOLOv3 pipeline; its multi-scale resize is the detector's).

torchvision's ``RandomPhotometricDistort`` scales brightness where mmdetection adds a delta (32 of 255); the hue
range is set to mmdetection's 18 of 180 degrees. ``class_agnostic`` maps every label to 1 (one "object" class).
"""

from __future__ import annotations

from typing import Any

import torch
from PIL import Image
from torchvision import tv_tensors
from torchvision.transforms import v2

from repro.data.errors import DatasetError

AUGMENTS = ("none", "flip", "ssd", "yolov3")
IMAGENET_MEAN_UINT8 = (124, 116, 104)


def _photometric() -> v2.Transform:
    return v2.RandomPhotometricDistort(
        brightness=(0.875, 1.125), contrast=(0.5, 1.5), saturation=(0.5, 1.5), hue=(-0.1, 0.1), p=0.5
    )


def _steps(augment: str) -> list[v2.Transform]:
    if augment == "none":
        return []
    if augment == "flip":
        return [v2.RandomHorizontalFlip(0.5)]
    if augment == "ssd":
        crop = [0.0, 0.1, 0.3, 0.5, 0.7, 0.9, 1.0]  # 0: any crop, 1: no crop (mmdetection's modes 0 and 1)
        return [
            _photometric(),
            v2.RandomZoomOut(fill=IMAGENET_MEAN_UINT8, side_range=(1.0, 4.0)),
            v2.RandomIoUCrop(min_scale=0.3, sampler_options=crop),
            v2.RandomHorizontalFlip(0.5),
        ]
    if augment == "yolov3":
        crop = [0.0, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0]
        return [
            _photometric(),
            v2.RandomZoomOut(fill=0, side_range=(1.0, 2.0)),
            v2.RandomIoUCrop(min_scale=0.3, sampler_options=crop),
            v2.RandomHorizontalFlip(0.5),
        ]
    raise DatasetError(f"unknown detection augment {augment!r}; choose one of {', '.join(AUGMENTS)}")


class DetectionTransform:
    """``(PIL image, target) -> (float image in [0, 1], target)`` with the augmentation ``augment``."""

    def __init__(self, augment: str = "none", *, class_agnostic: bool = False) -> None:
        self.augment, self.class_agnostic = augment, class_agnostic
        steps = _steps(augment)
        self.random = bool(steps)
        self.pipeline = v2.Compose(
            [v2.ToImage(), *steps, v2.SanitizeBoundingBoxes(), v2.ToDtype(torch.float32, scale=True)]
        )

    def __call__(self, image: Image.Image, target: dict[str, Any]) -> tuple[torch.Tensor, dict[str, Any]]:
        height, width = target["orig_size"]
        boxes = tv_tensors.BoundingBoxes(target["boxes"], format="XYXY", canvas_size=(height, width))
        labels = torch.ones_like(target["labels"]) if self.class_agnostic else target["labels"]
        image, moved = self.pipeline(image, {"boxes": boxes, "labels": labels})
        out = {k: v for k, v in target.items() if k not in ("boxes", "labels", "boxes_ignore")}
        out["boxes"] = moved["boxes"].as_subclass(torch.Tensor)
        out["labels"] = moved["labels"]
        return image.as_subclass(torch.Tensor), out
