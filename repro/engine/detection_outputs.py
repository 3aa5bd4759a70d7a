"""What a detection run leaves besides its metrics: precision-recall curves as dvclive plots and a PNG of predicted
(and ground-truth) boxes on the first few test images."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torchvision.utils import draw_bounding_boxes, make_grid

from repro.engine.metrics_io import EpochLogger
from repro.utils.atomic import atomic_path

SHOW_SCORE = 0.3


def log_pr_curves(logger: EpochLogger, metrics: dict[str, Any]) -> list[str]:
    """``pr_iou50``/``pr_iou75`` (mean over classes) and ``pr_iou50_<class>`` as dvclive custom plots; their names."""
    curves = metrics.get("pr_curves")
    if not curves:
        return []
    recall = curves["recall"]
    series = {"pr_iou50": curves["iou=0.50"], "pr_iou75": curves["iou=0.75"]}
    series.update({f"pr_iou50_{name.replace(' ', '_')}": p for name, p in curves["per_class_iou=0.50"].items()})
    names = []
    for name, precision in series.items():
        rows = [{"recall": r, "precision": p} for r, p in zip(recall, precision) if p is not None]
        if rows:
            logger.log_plot(name, rows, x="recall", y="precision", title=name.replace("_", " "))
            names.append(name)
    return names


def save_box_grid(
    path: str | Path, samples: Sequence[tuple[Any, torch.Tensor, torch.Tensor, Sequence[str]]]
) -> Path | None:
    """One PNG grid (four per row) of ``(PIL image, ground-truth boxes, predicted boxes, their labels)`` samples:
    ground truth in green, predictions in red, boxes xyxy in the image's pixels. Returns the path, or None when there
    is nothing to draw."""
    from torchvision.transforms.v2.functional import pil_to_tensor

    if not samples:
        return None
    panels = []
    for image, gt, boxes, labels in samples:
        canvas = pil_to_tensor(image.convert("RGB"))
        if len(gt):
            canvas = draw_bounding_boxes(canvas, torch.as_tensor(gt).reshape(-1, 4), colors="lime", width=1)
        if len(boxes):
            canvas = draw_bounding_boxes(canvas, boxes.reshape(-1, 4), labels=list(labels), colors="red", width=1)
        panels.append(canvas)
    height = max(p.shape[1] for p in panels)
    width = max(p.shape[2] for p in panels)
    padded = [torch.nn.functional.pad(p, (0, width - p.shape[2], 0, height - p.shape[1])) for p in panels]
    grid = make_grid(torch.stack(padded), nrow=min(4, len(panels)), padding=2)
    from PIL import Image

    path = Path(path)
    with atomic_path(path, suffix=".png") as tmp:
        Image.fromarray(grid.permute(1, 2, 0).numpy()).save(tmp, format="PNG")
    return path


def save_prediction_grid(
    path: str | Path,
    dataset: Any,
    detections: Sequence[dict],
    *,
    num_images: int = 4,
    category_names: dict[int, str] | None = None,
    min_score: float = SHOW_SCORE,
) -> Path | None:
    """The first ``num_images`` images of ``dataset`` (``CocoDetection``: PIL image + target with xyxy ``boxes``)
    with their ground truth (green) and the COCO-format ``detections`` scoring at least ``min_score`` (red), in one
    PNG grid (:func:`save_box_grid`). Returns the path, or None when there is nothing to draw."""
    by_image: dict[int, list[dict]] = defaultdict(list)
    for det in detections:
        if det["score"] >= min_score:
            by_image[int(det["image_id"])].append(det)
    names = category_names or {}
    samples = []
    for index in range(min(num_images, len(dataset))):
        image, target = dataset[index]
        dets = by_image.get(int(target["image_id"]), [])
        boxes = torch.tensor([[x, y, x + w, y + h] for x, y, w, h in (d["bbox"] for d in dets)]).reshape(-1, 4)
        labels = [f"{names.get(d['category_id'], d['category_id'])} {d['score']:.2f}" for d in dets]
        samples.append((image, target["boxes"], boxes, labels))
    return save_box_grid(path, samples)
