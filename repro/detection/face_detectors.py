"""The two face-detector families behind one interface for the face trainer: the S3FD-style RNNPool detectors
(:mod:`repro.models.face_detection`, family ``face_detection``) and the Tiny-YOLOv2 pair of Condensation-Net
(:mod:`repro.models.condensation`, family ``condensation``).

A :class:`FaceDetectorKind` says how a batch of RGB images in 0..255 becomes the network's input, what the training
losses are (S3FD two-stage matching + MultiBoxLoss; the YOLOv2 region loss), which test-time predictor wraps the
network and what a result records about it. Targets are one (n, 5) tensor per image, ``[x1, y1, x2, y2, 1]``
normalised to the image (:func:`normalised_targets`), as both losses read them.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from repro.detection.backbone import DetectorError
from repro.detection.face_test_time import Predictor, s3fd_input, s3fd_predictor, yolov2_predictor
from repro.detection.s3fd import MultiBoxLoss, prior_boxes
from repro.detection.yolov2 import YOLOv2Loss

#: Model family (``repro.models.model_family``) -> face-detector kind.
FACE_FAMILIES = {"face_detection": "s3fd", "condensation": "yolov2"}


def normalised_targets(boxes: Sequence[torch.Tensor], height: int, width: int) -> list[torch.Tensor]:
    """Pixel xyxy face boxes of images of ``height x width`` -> ``[x1, y1, x2, y2, 1]`` rows normalised to [0, 1]."""
    scale = torch.tensor([width, height, width, height], dtype=torch.float32)
    out = []
    for b in boxes:
        b = torch.as_tensor(b, dtype=torch.float32).reshape(-1, 4) / scale
        out.append(torch.cat([b, torch.ones(len(b), 1)], dim=1))
    return out


class FaceDetectorKind(ABC):
    """How the face trainer feeds, trains and runs one family of face detectors."""

    name: str

    @abstractmethod
    def inputs(self, core: nn.Module, images: torch.Tensor) -> torch.Tensor:
        """The network input for RGB images (B, 3, H, W) in 0..255."""

    @abstractmethod
    def losses(
        self, model: nn.Module, core: nn.Module, images: torch.Tensor, targets: Sequence[torch.Tensor]
    ) -> dict[str, torch.Tensor]:
        """The loss terms of a batch; ``model`` runs the forward (possibly DDP-wrapped), ``core`` is the network."""

    @abstractmethod
    def predictor(self, core: nn.Module, input_size: tuple[int, int], **decode_options: Any) -> Predictor:
        """A test-time predictor (:mod:`repro.detection.face_test_time`) over the network."""

    @abstractmethod
    def record(self, core: nn.Module) -> dict[str, Any]:
        """What a result records about the network."""


class S3FDFaces(FaceDetectorKind):
    """RNNPool-Face-A/B/C/Quant/M4: EdgeML's input (mean subtracted, monochrome for M4) and S3FD losses."""

    name = "s3fd"

    def __init__(self, **loss_options: Any) -> None:
        self.criterion = MultiBoxLoss(**loss_options)

    def inputs(self, core: nn.Module, images: torch.Tensor) -> torch.Tensor:
        return s3fd_input(images, getattr(core, "in_channels", 3))

    def losses(self, model, core, images, targets):
        loc, conf, shapes = model(self.inputs(core, images))
        priors = prior_boxes(tuple(images.shape[-2:]), shapes, core.steps, core.anchor_sizes).to(loc)
        loss_loc, loss_conf = self.criterion((loc, conf, priors), [t.to(loc) for t in targets])
        return {"loss_loc": loss_loc, "loss_conf": loss_conf}

    def predictor(self, core, input_size, **decode_options):
        return s3fd_predictor(core, **decode_options)

    def record(self, core):
        return {
            "kind": self.name,
            "steps": list(core.steps),
            "anchor_sizes": list(core.anchor_sizes),
            "in_channels": int(core.in_channels),
        }


class YOLOv2Faces(FaceDetectorKind):
    """Tiny-YOLOv2 with and without cross-channel pooling: RGB / 255 and the YOLOv2 region loss."""

    name = "yolov2"

    def __init__(self, **loss_options: Any) -> None:
        self.criterion = YOLOv2Loss(**loss_options)

    def inputs(self, core: nn.Module, images: torch.Tensor) -> torch.Tensor:
        return images.float() / 255.0

    def losses(self, model, core, images, targets):
        pred = model(self.inputs(core, images))
        return {"loss_region": self.criterion(pred, [t.to(pred) for t in targets], core.anchors)}

    def predictor(self, core, input_size, **decode_options):
        return yolov2_predictor(core, input_size, **decode_options)

    def record(self, core):
        return {
            "kind": self.name,
            "anchors": core.anchors.tolist(),
            "cross_channel": core.cross_channel,
            "k": int(core.k) if core.cross_channel else None,
        }


KINDS: dict[str, type[FaceDetectorKind]] = {"s3fd": S3FDFaces, "yolov2": YOLOv2Faces}


def face_detector_kind(model_name: str) -> FaceDetectorKind:
    """The kind of a registered face detector (``rnnpool_face_*``, ``tiny_yolov2_face``,
    ``condensation_tiny_yolov2_face``); other names raise :class:`DetectorError` naming the valid ones."""
    from repro.models import is_registered, list_models
    from repro.models.registry import model_family

    family = model_family(model_name) if is_registered(model_name) else None
    if family not in FACE_FAMILIES:
        valid = [name for fam in FACE_FAMILIES for name in list_models(fam)]
        raise DetectorError(f"{model_name!r} is not a face detector; choose one of {', '.join(valid)}")
    return KINDS[FACE_FAMILIES[family]]()


__all__ = [
    "FACE_FAMILIES",
    "FaceDetectorKind",
    "S3FDFaces",
    "YOLOv2Faces",
    "face_detector_kind",
    "normalised_targets",
]
