"""Condensation-Net's face-detection metric: the ROC of true-positive rate against false positives per image, and
the true-positive rate at 0.1 false positives per image.

Our reading. The abstract reports "the true positive rate at a false positive rate of 0.1". Neither its tables
nor its dataset (FDDB or WIDER FACE) could be consulted. Detection has no true negatives, so a false-positive *rate*
is read as false positives *per image* (FPPI), the x axis of FDDB's discrete ROC:

* a detection is a true positive when its IoU (continuous ``x1 y1 x2 y2`` boxes, ``torchvision.ops.box_iou``) with a
  not-yet-matched counted face is >= 0.5; detections are matched image by image in descending score, each to the
  unmatched face of highest IoU (a second detection of the same face is a false positive);
* a detection that is not a true positive but reaches IoU 0.5 with an ignored face (WIDER's easy/medium/hard
  ``gt_list``, when given) is left out; every other detection is a false positive;
* pooling every image's detections, each distinct score gives one ROC point: TPR = true positives / counted faces,
  FPPI = false positives / images (all images, with or without faces or detections);
* ``tpr_at(0.1)`` is the highest TPR among the points with at most ``0.1 x images`` false positives.

The abstract's two claims (+1.5 pp in full precision, +2.0 pp quantised, over Tiny-YOLOv2) are differences of
``tpr_at(0.1)`` under this reading. See docs/face_detection.md.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torchvision.ops import box_iou

__all__ = ["FaceROC", "face_roc", "face_roc_from_wider", "match_detections"]

TRUE_POSITIVE, FALSE_POSITIVE, IGNORED = 1, 0, -1


@dataclass(frozen=True)
class FaceROC:
    """ROC points, highest threshold first, starting at (FPPI 0, TPR 0): point k counts the detections scoring
    >= ``thresholds[k]`` (``inf`` for the origin)."""

    thresholds: np.ndarray
    true_positive_rate: np.ndarray
    false_positives: np.ndarray
    num_faces: int
    num_images: int

    @property
    def false_positives_per_image(self) -> np.ndarray:
        return self.false_positives / self.num_images

    def tpr_at(self, fppi: float = 0.1) -> float:
        """The highest TPR with at most ``fppi x images`` false positives."""
        allowed = math.floor(fppi * self.num_images + 1e-9)
        return float(self.true_positive_rate[self.false_positives <= allowed].max())

    def to_dict(self) -> dict[str, Any]:
        return {
            "metric": "TPR vs false positives per image (IoU 0.5)",
            "tpr_at_fppi_0.1": self.tpr_at(0.1),
            "num_faces": self.num_faces,
            "num_images": self.num_images,
            "thresholds": [None if math.isinf(t) else float(t) for t in self.thresholds],
            "true_positive_rate": self.true_positive_rate.tolist(),
            "false_positives_per_image": self.false_positives_per_image.tolist(),
        }


def match_detections(
    boxes: np.ndarray,
    scores: np.ndarray,
    faces: np.ndarray,
    counted: np.ndarray | None = None,
    iou_threshold: float = 0.5,
) -> np.ndarray:
    """Per detection (in the given order): ``1`` true positive, ``0`` false positive, ``-1`` ignored.

    ``boxes`` (n, 4) and ``faces`` (m, 4) are ``x1 y1 x2 y2``; ``counted`` (m,) bool marks the faces that count
    (default: all).
    """
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    faces = np.asarray(faces, dtype=np.float64).reshape(-1, 4)
    counted = np.ones(len(faces), dtype=bool) if counted is None else np.asarray(counted, dtype=bool)
    labels = np.full(len(boxes), FALSE_POSITIVE, dtype=np.int64)
    if len(boxes) == 0 or len(faces) == 0:
        return labels
    iou = box_iou(torch.from_numpy(boxes), torch.from_numpy(faces)).numpy()
    matched = np.zeros(len(faces), dtype=bool)
    for k in np.argsort(-np.asarray(scores, dtype=np.float64), kind="stable"):
        free = np.where(counted & ~matched, iou[k], -1.0)
        best = int(free.argmax())
        if free[best] >= iou_threshold:
            labels[k], matched[best] = TRUE_POSITIVE, True
        elif (iou[k][~counted] >= iou_threshold).any():
            labels[k] = IGNORED
    return labels


def face_roc(
    detections: Sequence[tuple[np.ndarray, np.ndarray]],
    faces: Sequence[np.ndarray],
    counted: Sequence[np.ndarray] | None = None,
    iou_threshold: float = 0.5,
) -> FaceROC:
    """The ROC over a set of images: ``detections[i] = (boxes (n, 4) x1 y1 x2 y2, scores (n,))``, ``faces[i]``
    (m, 4) ``x1 y1 x2 y2`` and optionally ``counted[i]`` (m,) bool (the other faces are ignored)."""
    if len(detections) != len(faces) or (counted is not None and len(counted) != len(faces)):
        raise ValueError(f"{len(detections)} detection sets for {len(faces)} images")
    if not faces:
        raise ValueError("the ROC needs at least one image")
    labels, scores, num_faces = [], [], 0
    for i, ((boxes, image_scores), image_faces) in enumerate(zip(detections, faces)):
        mask = None if counted is None else np.asarray(counted[i], dtype=bool)
        num_faces += len(np.asarray(image_faces).reshape(-1, 4)) if mask is None else int(mask.sum())
        labels.append(match_detections(boxes, image_scores, image_faces, mask, iou_threshold))
        scores.append(np.asarray(image_scores, dtype=np.float64).reshape(-1))
    if num_faces == 0:
        raise ValueError("no counted face: the true-positive rate is undefined")
    label, score = np.concatenate(labels), np.concatenate(scores)
    keep = label != IGNORED
    label, score = label[keep], score[keep]
    order = np.argsort(-score, kind="stable")
    label, score = label[order], score[order]
    true_positives = np.cumsum(label == TRUE_POSITIVE)
    false_positives = np.cumsum(label == FALSE_POSITIVE)
    last_of_score = np.flatnonzero(np.append(score[1:] != score[:-1], True)) if len(score) else np.zeros(0, int)
    return FaceROC(
        thresholds=np.concatenate(([np.inf], score[last_of_score])),
        true_positive_rate=np.concatenate(([0.0], true_positives[last_of_score] / num_faces)),
        false_positives=np.concatenate(([0], false_positives[last_of_score])),
        num_faces=num_faces,
        num_images=len(faces),
    )


def face_roc_from_wider(predictions: Sequence[np.ndarray], ground_truth, setting: str | None = None) -> FaceROC:
    """The ROC of WIDER-layout predictions (``x y w h score`` rows, as :func:`read_predictions` of
    :mod:`repro.metrics.widerface_eval` gives them) against a ``FaceGroundTruth``; ``setting`` picks the counted
    faces of easy/medium/hard (default: every face counts). Boxes are ``x2 = x + w``, as the WIDER tools read them."""

    def corners(xywh: np.ndarray) -> np.ndarray:
        xywh = np.asarray(xywh, dtype=np.float64).reshape(-1, 4)
        return np.concatenate([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], axis=1)

    detections = [(corners(p[:, :4]), p[:, 4]) for p in predictions]
    faces = [corners(b) for b in ground_truth.boxes]
    counted = None
    if setting is not None:
        counted = []
        for boxes, indices in zip(ground_truth.boxes, ground_truth.counted[setting]):
            mask = np.zeros(len(boxes), dtype=bool)
            mask[indices] = True
            counted.append(mask)
    return face_roc(detections, faces, counted)
