"""Detector evaluation: COCO-format predictions over a loader (gathered from every DDP process, each image once) and
COCO metrics from :func:`repro.metrics.coco_eval.evaluate_coco` against the split's annotation file."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from typing import Any

import torch
from torch import nn

from repro.engine.distributed import DistContext, broadcast_object, gather_objects
from repro.metrics.coco_eval import evaluate_coco
from repro.utils.amp import autocast

AGNOSTIC_CATEGORY = {"id": 1, "name": "object"}


def to_coco_results(image_id: int, prediction: dict[str, torch.Tensor], category_ids: Sequence[int]) -> list[dict]:
    """One image's ``boxes`` (xyxy pixels), ``scores``, ``labels`` (1..K) as COCO results (``bbox`` = x, y, w, h)."""
    boxes = prediction["boxes"].detach().float().cpu().tolist()
    scores = prediction["scores"].detach().float().cpu().tolist()
    labels = prediction["labels"].detach().cpu().tolist()
    return [
        {
            "image_id": int(image_id),
            "category_id": int(category_ids[label - 1]),
            "bbox": [x1, y1, max(0.0, x2 - x1), max(0.0, y2 - y1)],
            "score": score,
        }
        for (x1, y1, x2, y2), score, label in zip(boxes, scores, labels)
    ]


@torch.no_grad()
def predict(
    model: nn.Module,
    loader: Iterable,
    category_ids: Sequence[int],
    *,
    device: torch.device,
    amp: bool = False,
) -> tuple[list[int], list[dict]]:
    """``(image ids seen, COCO results)`` of this process; restores the training mode."""
    was_training = model.training
    model.eval()
    seen: list[int] = []
    results: list[dict] = []
    try:
        for images, targets in loader:
            with autocast(device, amp):
                outputs = model([image.to(device) for image in images])
            for target, output in zip(targets, outputs):
                seen.append(int(target["image_id"]))
                results.extend(to_coco_results(target["image_id"], output, category_ids))
    finally:
        model.train(was_training)
    return seen, results


def merge_shards(shards: Sequence[tuple[list[int], list[dict]]]) -> tuple[list[int], list[dict]]:
    """Each image once: padded shards repeat images, and only the first process that saw an image keeps it."""
    seen: set[int] = set()
    order: list[int] = []
    results: list[dict] = []
    for ids, dets in shards:
        new = set(ids) - seen
        results.extend(d for d in dets if d["image_id"] in new)
        order.extend(i for i in ids if i in new)
        seen |= new
    return order, results


def ground_truth(ann_file: str, class_agnostic: bool = False) -> dict:
    """The split's COCO annotations (``class_agnostic``: every box of every category as one ``object`` class)."""
    with open(ann_file) as handle:
        gt = json.load(handle)
    if class_agnostic:
        gt["categories"] = [dict(AGNOSTIC_CATEGORY)]
        gt["annotations"] = [{**a, "category_id": AGNOSTIC_CATEGORY["id"]} for a in gt["annotations"]]
    return gt


def evaluate_detector(
    model: nn.Module,
    loader: Iterable,
    *,
    gt: dict,
    category_ids: Sequence[int],
    ctx: DistContext,
    amp: bool = False,
    backend: str = "pycocotools",
) -> tuple[dict[str, Any], list[dict]]:
    """``(COCO metrics with PR curves, COCO results)`` of ``model`` on ``loader``, the same on every process.

    ``category_ids`` maps the model's labels 1..K to the annotation file's category ids; only the images of the loader
    are evaluated (all images of ``gt`` with ``category_ids`` restricted, as mmdetection does with ``classes=``).
    """
    shard = predict(model, loader, category_ids, device=ctx.device, amp=amp)
    image_ids, results = merge_shards(gather_objects(shard, ctx))
    metrics = None
    if ctx.is_main:
        metrics = evaluate_coco(
            gt, results, categories=list(category_ids), image_ids=image_ids, backend=backend, pr_curves=True
        )
    return broadcast_object(metrics, ctx), results
