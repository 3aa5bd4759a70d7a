"""Training transforms of the face detectors: EdgeML's S3FD augmentation (``utils/augmentations.py`` ``preprocess``)
on torch tensors, and the plain resize of the short recipes.

A transform takes ``(PIL image, target)`` as the WIDER FACE and SCUT-HEAD readers yield them (``boxes`` xyxy pixels,
``x2 = x + w``) and returns a float RGB image (3, H, W) in 0..255 at the recipe's ``size`` with ``target["boxes"]``
in its pixels and ``labels`` 1 (face). Mean subtraction and the monochrome conversion are the model's input step
(:func:`repro.detection.face_test_time.s3fd_input`). Random draws use torch's generator only, so that
:class:`~repro.data.loaders.SeededTransform` makes every sample's augmentation a function of (seed, epoch, index).

* ``none``: resize to ``size`` (bilinear; nothing when the image has that size already).
* ``flip``: ``none``, then a horizontal flip with probability 0.5.
* ``s3fd`` (RNNPool App. G: "the S3FD augmentations, 640x640 crops"): photometric distortion (brightness
  0.875-1.125, contrast and saturation 0.5-1.5, hue +-18/256 of the circle, each with probability 0.5, contrast
  first or last at random); then with probability 0.5 *data-anchor sampling* — a random face is scaled to a random
  anchor size up to one above its nearest (16 .. 512, times 2^U(-1, 1)) and a ``crop_side`` square around it is cut
  (50 candidates, kept when a face lies inside or IoU > 0.7 with the crop, faces whose centre is inside kept
  unclipped) — else a random square crop of 0.3-1 of the short side holding at least one face entirely (five
  samplers of 50 trials, faces whose centre is inside kept, clipped); faces smaller than ``min_face`` pixels
  (side of the area; at ``crop_side`` after a data-anchor crop, at the output width after a square crop, as EdgeML
  measures them) dropped; resize to ``size`` with a random interpolation; flip with
  probability 0.5.

Deviations from EdgeML, each for a reason: the data-anchor crop resizes only the cropped region (EdgeML resizes the
whole image first, up to 12000 x 12000 pixels; the crop is the same) and pads every side that leaves the image with
the mean colour (EdgeML pads only the left/top and lets a right/bottom overrun shrink the crop, which the final resize
then stretches); a sample left without faces is augmented again, up to ``retries`` times, instead of being replaced
by a random other image (which would make the batch depend on more than its own index), and is then used without
faces (the losses accept an image without faces).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from PIL import Image
from torchvision.ops import box_iou
from torchvision.transforms import InterpolationMode
from torchvision.transforms.v2 import functional as TF

from repro.data.errors import DatasetError

FACE_AUGMENTS = ("none", "flip", "s3fd")
ANCHOR_SIZES = (16, 32, 64, 128, 256, 512)
MEAN_RGB = (123.0, 117.0, 104.0)  # EdgeML's img_mean (104, 117, 123) is BGR
INTERPOLATIONS = (InterpolationMode.BILINEAR, InterpolationMode.BICUBIC, InterpolationMode.NEAREST)
CROP_TRIALS = 50
SQUARE_SAMPLERS = (1.0, 0.3, 0.3, 0.3, 0.3)  # the minimum scale of each sampler; the maximum is 1


def _uniform(low: float, high: float) -> float:
    return low + (high - low) * float(torch.rand(()))


def _randint(high: int) -> int:
    return int(torch.randint(high, ()))


def photometric_distort(image: torch.Tensor) -> torch.Tensor:
    """EdgeML ``distort_image`` on a uint8 (3, H, W) image."""

    def brightness(x):
        return TF.adjust_brightness(x, _uniform(0.875, 1.125)) if torch.rand(()) < 0.5 else x

    def contrast(x):
        return TF.adjust_contrast(x, _uniform(0.5, 1.5)) if torch.rand(()) < 0.5 else x

    def saturation(x):
        return TF.adjust_saturation(x, _uniform(0.5, 1.5)) if torch.rand(()) < 0.5 else x

    def hue(x):
        return TF.adjust_hue(x, _uniform(-18.0, 18.0) / 256.0) if torch.rand(()) < 0.5 else x

    order = (brightness, contrast, saturation, hue) if torch.rand(()) > 0.5 else (brightness, saturation, hue, contrast)
    for step in order:
        image = step(image)
    return image


def _crop_resized(
    image: torch.Tensor, region: tuple[float, float, float, float], size: tuple[int, int], mode: InterpolationMode
) -> torch.Tensor:
    """The ``region`` (x1, y1, x2, y2; may leave the image, padded with the mean colour) resized to ``size``."""
    _, height, width = image.shape
    x1, y1, x2, y2 = (math.floor(float(v)) for v in region)
    canvas_w, canvas_h = max(1, x2 - x1), max(1, y2 - y1)
    canvas = torch.tensor(MEAN_RGB, dtype=torch.uint8).view(3, 1, 1).expand(3, canvas_h, canvas_w).clone()
    sx1, sy1, sx2, sy2 = max(0, x1), max(0, y1), min(width, x2), min(height, y2)
    if sx2 > sx1 and sy2 > sy1:
        canvas[:, sy1 - y1 : sy2 - y1, sx1 - x1 : sx2 - x1] = image[:, sy1:sy2, sx1:sx2]
    antialias = mode != InterpolationMode.NEAREST
    return TF.resize(canvas, list(size), interpolation=mode, antialias=antialias)


def _centres_inside(boxes: torch.Tensor, rect: torch.Tensor, strict: bool) -> torch.Tensor:
    centres = (boxes[:, :2] + boxes[:, 2:]) / 2
    if strict:
        return (centres > rect[:2]).all(dim=1) & (centres < rect[2:]).all(dim=1)
    return (centres >= rect[:2]).all(dim=1) & (centres <= rect[2:]).all(dim=1)


def data_anchor_crop(boxes: torch.Tensor, height: int, width: int, crop_side: int) -> tuple[torch.Tensor, float] | None:
    """EdgeML ``anchor_crop_image_sampling``: the crop rectangle (x1, y1, x2, y2) in *original* pixels and the scale
    ``ratio`` of the rescaled image it was drawn in; None when no candidate qualified (then nothing is cropped)."""
    k = _randint(len(boxes))
    box = boxes[k]
    side = float(((box[2] - box[0] + 1) * (box[3] - box[1] + 1)).sqrt())
    nearest = min(range(len(ANCHOR_SIZES)), key=lambda i: abs(ANCHOR_SIZES[i] - side))
    choices = ANCHOR_SIZES[: min(nearest + 1, 5) + 1]
    ratio = choices[_randint(len(choices))] / side * 2.0 ** _uniform(-1.0, 1.0)
    ratio = min(ratio, math.sqrt(12000.0 * 12000.0 / (height * width)))
    scaled = boxes * ratio
    big_h, big_w = int(height * ratio), int(width * ratio)
    xmin, ymin = float(scaled[k, 0]), float(scaled[k, 1])
    bw, bh = float(scaled[k, 2] - scaled[k, 0] + 1), float(scaled[k, 3] - scaled[k, 1] + 1)
    c = float(crop_side)
    candidates = []
    for _ in range(CROP_TRIALS):
        if c < max(big_h, big_w):
            w_off = _uniform(xmin + bw - c, xmin) if bw <= c else _uniform(xmin, xmin + bw - c)
            h_off = _uniform(ymin + bh - c, ymin) if bh <= c else _uniform(ymin, ymin + bh - c)
        else:
            w_off, h_off = _uniform(big_w - c, 0.0), _uniform(big_h - c, 0.0)
        rect = torch.tensor([math.floor(w_off), math.floor(h_off), math.floor(w_off) + c, math.floor(h_off) + c])
        inside = ((rect[:2] <= scaled[:, :2]).all(dim=1) & (rect[2:] >= scaled[:, 2:]).all(dim=1)).any()
        if inside or box_iou(scaled, rect[None]).max() > 0.7:
            candidates.append(rect)
    if not candidates:
        return None
    return candidates[_randint(len(candidates))], ratio


def square_crop(boxes: torch.Tensor, height: int, width: int) -> torch.Tensor | None:
    """EdgeML's other branch: up to one square per sampler (scale U(min, 1) of the short side) holding a face
    entirely, one of them chosen; None when none was found."""
    short = min(height, width)
    found = []
    for min_scale in SQUARE_SAMPLERS:
        for _ in range(CROP_TRIALS):
            side = _uniform(min_scale, 1.0) * short
            x1, y1 = _uniform(0.0, width - side), _uniform(0.0, height - side)
            rect = torch.tensor([x1, y1, x1 + side, y1 + side])
            if ((boxes[:, :2] >= rect[:2]).all(dim=1) & (boxes[:, 2:] <= rect[2:]).all(dim=1)).any():
                found.append(rect)
                break
    if not found:
        return None
    return found[_randint(len(found))]


class FaceTransform:
    """``(PIL image, target) -> (float RGB (3, H, W) in 0..255, target)`` for ``size = (H, W)`` (see the module)."""

    def __init__(
        self,
        augment: str = "none",
        size: tuple[int, int] = (640, 640),
        *,
        min_face: float = 6.0,
        crop_side: int = 640,
        retries: int = 10,
    ) -> None:
        if augment not in FACE_AUGMENTS:
            raise DatasetError(f"unknown face augment {augment!r}; choose one of {', '.join(FACE_AUGMENTS)}")
        self.augment, self.size = augment, (int(size[0]), int(size[1]))
        self.min_face, self.crop_side, self.retries = float(min_face), int(crop_side), int(retries)
        self.random = augment != "none"

    def __call__(self, image: Image.Image, target: dict[str, Any]) -> tuple[torch.Tensor, dict[str, Any]]:
        pixels = TF.pil_to_tensor(image.convert("RGB"))
        boxes = torch.as_tensor(target["boxes"], dtype=torch.float32).reshape(-1, 4)
        boxes = boxes[(boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])]
        if self.augment == "s3fd":
            for _ in range(self.retries):
                out, moved = self._s3fd(pixels, boxes)
                if len(moved):
                    break
        else:
            out, moved = self._resize(pixels, boxes, InterpolationMode.BILINEAR)
            if self.augment == "flip" and torch.rand(()) < 0.5:
                out, moved = self._flip(out, moved)
        kept = {"boxes": moved, "labels": torch.ones(len(moved), dtype=torch.int64)}
        if "file" in target:
            kept["file"] = target["file"]
        return out.float(), kept

    def _resize(self, pixels: torch.Tensor, boxes: torch.Tensor, mode: InterpolationMode):
        _, height, width = pixels.shape
        if (height, width) == self.size:
            return pixels, boxes
        out = _crop_resized(pixels, (0, 0, width, height), self.size, mode)
        scale = torch.tensor([self.size[1] / width, self.size[0] / height] * 2)
        return out, boxes * scale

    def _flip(self, pixels: torch.Tensor, boxes: torch.Tensor):
        width = pixels.shape[-1]
        return pixels.flip(-1), torch.stack([width - boxes[:, 2], boxes[:, 1], width - boxes[:, 0], boxes[:, 3]], 1)

    def _s3fd(self, pixels: torch.Tensor, boxes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        pixels = photometric_distort(pixels)
        _, height, width = pixels.shape
        mode = INTERPOLATIONS[_randint(len(INTERPOLATIONS))]
        region, keep, ratio = None, boxes, 1.0
        if len(boxes) and torch.rand(()) > 0.5:
            drawn = data_anchor_crop(boxes, height, width, self.crop_side)
            if drawn is not None:
                rect, ratio = drawn
                inside = _centres_inside(boxes * ratio, rect, strict=True)
                keep = boxes[inside] * ratio - rect[:2].repeat(2)  # unclipped, as EdgeML
                region = tuple(float(v) / ratio for v in rect)
                sides = (keep[:, 2:] - keep[:, :2]).prod(dim=1)
                keep = keep[sides > self.min_face**2] / self.crop_side  # EdgeML filters at the crop's pixels
        elif len(boxes):
            rect = square_crop(boxes, height, width)
            if rect is not None:
                inside = _centres_inside(boxes, rect, strict=False)
                keep = (boxes[inside] - rect[:2].repeat(2)) / (rect[2] - rect[0])
                keep = keep.clamp(0.0, 1.0)
                real = (keep[:, 2:] - keep[:, :2]) * self.size[1]  # EdgeML: at the output width
                keep = keep[real.prod(dim=1) >= self.min_face**2]
                region = tuple(float(v) for v in rect)
        if region is None:  # no crop: the whole image, squeezed to the output size as EdgeML does
            region = (0.0, 0.0, float(width), float(height))
            keep = boxes / torch.tensor([width, height, width, height], dtype=torch.float32)
        out = _crop_resized(pixels, region, self.size, mode)
        moved = keep * torch.tensor([self.size[1], self.size[0]] * 2, dtype=torch.float32)
        if torch.rand(()) < 0.5:
            out, moved = self._flip(out, moved)
        return out, moved


__all__ = ["ANCHOR_SIZES", "FACE_AUGMENTS", "MEAN_RGB", "FaceTransform", "photometric_distort"]
