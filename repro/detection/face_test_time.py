"""Test-time protocols of the face detectors: how an image is scaled, flipped and merged into one set of detections,
written in the WIDER prediction layout (:mod:`repro.detection.wider_predictions`).

A protocol is picked by name, and the name and parameters are recorded in ``<pred_dir>/test_time.json``:

* ``vga``: one pass on the image scaled by ``sqrt(640*480 / (H*W))``, which may enlarge it (EdgeML ``eval.py``;
  RNNPool App. G "resize to the VGA area").
* ``qvga``: one pass on the image scaled by ``min(1, sqrt(320*240 / (H*W)))``, which never enlarges it (EdgeML
  ``scut_test.py``, the M4 model on SCUT-HEAD).
* ``edgeml``: EdgeML ``wider_test.py``. Let ``m = sqrt(1700*1200 / (H*W))``. The passes are: at ``min(1, m)``; the
  same on the mirrored image; a shrunk pass at ``st = 0.5`` (``0.5 m`` when ``m < 0.75``) keeping boxes whose longer
  side is > 30 px; and enlarged passes from ``bt = min(2, m)`` (``(st + m) / 2`` when ``m <= 1``), doubling while
  below ``m`` and then at ``m`` itself. The enlarged passes keep boxes whose shorter side is < 100 px when the
  last ``bt > 1``, else those whose longer side is > 30 px. All boxes then go through :func:`box_vote`.

Every pass keeps detections scoring >= 0.05 (EdgeML's ``--thresh``), after the model's own decoding (for the S3FD
models: confidence 0.01, NMS 0.3, top 750). Sizes are in original-image pixels, ``+ 1`` inclusive, as in EdgeML.

A *predictor* maps one image tensor (C, H, W), float RGB in 0..255, to ``(boxes, scores)``: boxes (n, 4)
``x1 y1 x2 y2`` in that tensor's pixels. :func:`s3fd_predictor` makes one from the RNNPool face detectors,
:func:`yolov2_predictor` from the Tiny-YOLOv2 pair of Condensation-Net.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from repro.detection.wider_predictions import prediction_path, write_prediction_file
from repro.utils.atomic import write_json_atomic
from repro.utils.provenance import provenance

__all__ = [
    "EDGEML_MEAN_RGB",
    "PROTOCOLS",
    "Predictor",
    "TestTimeProtocol",
    "box_vote",
    "dataset_samples",
    "detect_at_scale",
    "detect_flipped",
    "detect_multi_scale",
    "get_protocol",
    "resize_image",
    "s3fd_input",
    "s3fd_predictor",
    "to_image_tensor",
    "write_wider_predictions",
    "yolov2_predictor",
]

Predictor = Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]
EDGEML_MEAN_RGB = (123.0, 117.0, 104.0)  # EdgeML subtracts (104, 117, 123) from BGR, then reorders to RGB


@dataclass(frozen=True)
class TestTimeProtocol:
    """One named protocol (see the module docstring); ``area`` is the reference area in pixels."""

    __test__ = False  # not a pytest test class despite its name

    name: str
    area: int
    multi_scale: bool = False
    upscale: bool = False
    score_threshold: float = 0.05
    vote_iou: float = 0.3
    top_k: int = 750

    def max_scale(self, height: int, width: int) -> float:
        return math.sqrt(self.area / (height * width))

    def detect(self, predictor: Predictor, image: torch.Tensor) -> np.ndarray:
        """Detections (n, 5) ``x1 y1 x2 y2 score`` of one image (C, H, W), in its pixels, highest score first."""
        height, width = image.shape[-2:]
        m = self.max_scale(height, width)
        if not self.multi_scale:
            scale = m if self.upscale else min(1.0, m)
            return detect_at_scale(predictor, image, scale, self.score_threshold)
        base = min(1.0, m)
        passes = [  # in EdgeML's order: it decides how box_vote orders equal scores
            detect_at_scale(predictor, image, base, self.score_threshold),
            detect_flipped(predictor, image, base, self.score_threshold),
            *detect_multi_scale(predictor, image, m, self.score_threshold),
        ]
        return box_vote(np.concatenate(passes), self.vote_iou, self.top_k)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


PROTOCOLS: dict[str, TestTimeProtocol] = {
    "vga": TestTimeProtocol("vga", 640 * 480, upscale=True),
    "qvga": TestTimeProtocol("qvga", 320 * 240),
    "edgeml": TestTimeProtocol("edgeml", 1700 * 1200, multi_scale=True),
}


def get_protocol(name: str | TestTimeProtocol) -> TestTimeProtocol:
    if isinstance(name, TestTimeProtocol):
        return name
    if name not in PROTOCOLS:
        raise ValueError(f"unknown test-time protocol {name!r}; valid names: {', '.join(PROTOCOLS)}")
    return PROTOCOLS[name]


# ------------------------------------------------------------------------------------------------------ passes


def to_image_tensor(image: Any) -> torch.Tensor:
    """A PIL image (grey images become RGB, as in EdgeML) or a (C, H, W) tensor -> float32 (3, H, W) in 0..255."""
    if isinstance(image, torch.Tensor):
        tensor = image.float()
    else:
        array = np.asarray(image.convert("RGB"), dtype=np.float32)
        tensor = torch.from_numpy(array).permute(2, 0, 1).contiguous()
    if tensor.dim() != 3:
        raise ValueError(f"expected one image (C, H, W), got shape {tuple(tensor.shape)}")
    return tensor


def resize_image(image: torch.Tensor, scale: float) -> torch.Tensor:
    """Bilinear resize (half-pixel centres, no antialiasing) to ``round(H * scale) x round(W * scale)``, the output
    size of OpenCV's ``resize(fx=fy=scale)`` used by EdgeML; ``scale == 1`` returns the image as is."""
    if scale == 1:
        return image
    height, width = image.shape[-2:]
    size = (max(1, round(height * scale)), max(1, round(width * scale)))
    return F.interpolate(image[None], size=size, mode="bilinear", align_corners=False)[0]


def detect_at_scale(predictor: Predictor, image: torch.Tensor, scale: float, score_threshold: float) -> np.ndarray:
    """One pass at ``scale``; boxes mapped back to the original pixels (divided by ``scale``), low scores dropped."""
    with torch.no_grad():
        boxes, scores = predictor(resize_image(image, scale))
    boxes = torch.as_tensor(boxes).detach().cpu().double().numpy().reshape(-1, 4) / scale
    scores = torch.as_tensor(scores).detach().cpu().double().numpy().reshape(-1)
    detections = np.concatenate([boxes, scores[:, None]], axis=1)
    return detections[detections[:, 4] >= score_threshold]


def detect_flipped(predictor: Predictor, image: torch.Tensor, scale: float, score_threshold: float) -> np.ndarray:
    """One pass on the mirrored image, un-mirrored: ``x1 = W - x2'``, ``x2 = W - x1'`` (EdgeML ``flip_test``)."""
    detections = detect_at_scale(predictor, image.flip(-1), scale, score_threshold)
    width = image.shape[-1]
    detections[:, [0, 2]] = width - detections[:, [2, 0]]
    return detections


def _sides(detections: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return detections[:, 2] - detections[:, 0] + 1, detections[:, 3] - detections[:, 1] + 1


def detect_multi_scale(
    predictor: Predictor, image: torch.Tensor, max_scale: float, score_threshold: float
) -> tuple[np.ndarray, np.ndarray]:
    """EdgeML ``multi_scale_test``: the shrunk pass (big faces) and the enlarged passes (small faces)."""
    shrink = 0.5 if max_scale >= 0.75 else 0.5 * max_scale
    shrunk = detect_at_scale(predictor, image, shrink, score_threshold)
    shrunk = shrunk[np.maximum(*_sides(shrunk)) > 30]
    scale = min(2.0, max_scale) if max_scale > 1 else (shrink + max_scale) / 2
    enlarged = [detect_at_scale(predictor, image, scale, score_threshold)]
    if max_scale > 2:
        scale *= 2
        while scale < max_scale:
            enlarged.append(detect_at_scale(predictor, image, scale, score_threshold))
            scale *= 2
        enlarged.append(detect_at_scale(predictor, image, max_scale, score_threshold))
    enlarged_all = np.concatenate(enlarged)
    if scale > 1:
        enlarged_all = enlarged_all[np.minimum(*_sides(enlarged_all)) < 100]
    else:
        enlarged_all = enlarged_all[np.maximum(*_sides(enlarged_all)) > 30]
    return shrunk, enlarged_all


def box_vote(detections: np.ndarray, iou_threshold: float = 0.3, top_k: int = 750) -> np.ndarray:
    """EdgeML ``bbox_vote``: take the highest-scoring box and every box at IoU >= ``iou_threshold`` with it (``+ 1``
    inclusive areas); a group of two or more becomes its score-weighted mean box with the group's highest score, a
    box alone is dropped. Repeat on the rest; keep the first ``top_k``."""
    detections = np.asarray(detections, dtype=np.float64).reshape(-1, 5)
    rest = detections[np.argsort(detections[:, 4])[::-1]]  # numpy's sort, reversed, as EdgeML orders ties
    merged = []
    while len(rest):
        area = (rest[:, 2] - rest[:, 0] + 1) * (rest[:, 3] - rest[:, 1] + 1)
        w = np.maximum(0.0, np.minimum(rest[0, 2], rest[:, 2]) - np.maximum(rest[0, 0], rest[:, 0]) + 1)
        h = np.maximum(0.0, np.minimum(rest[0, 3], rest[:, 3]) - np.maximum(rest[0, 1], rest[:, 1]) + 1)
        with np.errstate(invalid="ignore", divide="ignore"):
            overlap = w * h / (area[0] + area - w * h)
        group = overlap >= iou_threshold
        group[0] = True  # a degenerate box would never leave the loop in EdgeML; it leaves alone here
        members, rest = rest[group], rest[~group]
        if len(members) <= 1:
            continue
        weights = members[:, 4:5]
        merged.append([*((members[:, :4] * weights).sum(axis=0) / weights.sum()), members[:, 4].max()])
    return np.asarray(merged, dtype=np.float64).reshape(-1, 5)[:top_k]


# ------------------------------------------------------------------------------------ models and prediction files


def s3fd_input(images: torch.Tensor, in_channels: int = 3, mean: Sequence[float] = EDGEML_MEAN_RGB) -> torch.Tensor:
    """What EdgeML feeds its S3FD models: RGB images (B, 3, H, W) in 0..255 minus ``mean``, no scaling; a monochrome
    model (``in_channels == 1``) gets ``0.299 R + 0.587 G + 0.114 B`` of the mean-subtracted image."""
    x = images.float() - torch.tensor([float(v) for v in mean], device=images.device).view(1, 3, 1, 1)
    if in_channels == 1:
        x = (0.299 * x[:, 0] + 0.587 * x[:, 1] + 0.114 * x[:, 2])[:, None]
    return x


def s3fd_predictor(
    model: torch.nn.Module,
    *,
    mean: Sequence[float] = EDGEML_MEAN_RGB,
    device: str | torch.device | None = None,
    **decode_opts: Any,
) -> Predictor:
    """A predictor over an S3FD face detector of :mod:`repro.models.face_detection` (``in_channels``, ``steps``,
    ``anchor_sizes``): :func:`s3fd_input` of the image, then :func:`repro.detection.s3fd.detect_faces` (softmax,
    confidence 0.01, NMS 0.3, top 750 unless ``decode_opts`` say otherwise)."""
    from repro.detection.s3fd import detect_faces

    model.eval()
    device = torch.device(device) if device is not None else next(model.parameters()).device
    in_channels = getattr(model, "in_channels", 3)

    def predict(image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = s3fd_input(image[None].float(), in_channels, mean).to(device)
        result = detect_faces(model, x, **decode_opts)[0]
        return result["boxes"].cpu(), result["scores"].cpu()

    return predict


def yolov2_predictor(
    model: torch.nn.Module,
    input_size: tuple[int, int] = (416, 416),
    *,
    device: str | torch.device | None = None,
    **decode_opts: Any,
) -> Predictor:
    """A predictor over a Tiny-YOLOv2 face detector (:mod:`repro.models.condensation`): the image is resized to
    ``input_size`` (H, W; bilinear, darknet's plain resize) and scaled to 0..1, decoded by
    :func:`repro.detection.yolov2.detect_yolov2`, and the boxes are mapped back to the image's pixels."""
    from repro.detection.yolov2 import detect_yolov2

    model.eval()
    device = torch.device(device) if device is not None else next(model.parameters()).device
    net_h, net_w = (int(v) for v in input_size)

    def predict(image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        height, width = image.shape[-2:]
        x = F.interpolate(image[None].float() / 255.0, size=(net_h, net_w), mode="bilinear", align_corners=False)
        result = detect_yolov2(model, x.to(device), **decode_opts)[0]
        scale = torch.tensor([width / net_w, height / net_h, width / net_w, height / net_h])
        return result["boxes"].cpu() * scale, result["scores"].cpu()

    return predict


def dataset_samples(dataset: Iterable[tuple[Any, dict]]) -> Iterator[tuple[str, Any]]:
    """``(target["file"], image)`` of a detection dataset yielding ``(image, target)`` (WIDER FACE, SCUT-HEAD)."""
    for image, target in dataset:
        yield target["file"], image


def write_wider_predictions(
    predictor: Predictor,
    samples: Iterable[tuple[str, Any]],
    pred_dir: str | Path,
    protocol: str | TestTimeProtocol = "edgeml",
    **fmt: Any,
) -> Path:
    """Run ``protocol`` on each ``(file, image)`` sample (``file`` = the image path in the dataset, e.g.
    ``0--Parade/0_Parade_marchingband_1_465.jpg``) and write ``<pred_dir>/<file without extension>.txt``; the
    protocol, its parameters and the provenance go to ``<pred_dir>/test_time.json``. ``fmt`` goes to
    :func:`repro.detection.wider_predictions.format_prediction_file`."""
    chosen = get_protocol(protocol)
    pred_dir = Path(pred_dir)
    count = 0
    for file, image in samples:
        detections = chosen.detect(predictor, to_image_tensor(image))
        key = file.rsplit(".", 1)[0]
        write_prediction_file(prediction_path(pred_dir, key), file, detections[:, :4], detections[:, 4], **fmt)
        count += 1
    record = {"test_time": chosen.to_dict(), "images": count, "format": fmt, "provenance": provenance()}
    write_json_atomic(pred_dir / "test_time.json", record)
    return pred_dir
