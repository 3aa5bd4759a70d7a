"""COCO bounding-box evaluation by the reference implementation: pycocotools' ``COCOeval`` (or faster-coco-eval's
drop-in ``COCOeval_faster``), after validating both files.

:func:`evaluate_coco` takes a COCO annotation file (or dict) and a COCO results file (or list) and returns AP@[.5:.95],
AP50, AP75, APs, APm, APl and the six AR values as fractions in [0, 1] (``None`` where pycocotools reports -1: no
ground truth in that size range), per-class AP (mmdetection's ``classwise``) and, on request, precision-recall
curves. ``categories`` restricts the evaluation to some classes (the SAP 8-class COCO subset: ``params.catIds``, as
mmdetection 2.x does with ``classes=``), ``image_ids`` to some images. No AP is computed here.

Both files are untrusted: every record is checked (schema, types, finite non-negative boxes inside their image, known
image and category ids, unique ids) and the first problem raises one :class:`CocoFormatError` naming the file, the
record and the field.
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

BACKENDS = ("pycocotools", "faster-coco-eval")
STAT_NAMES = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")
#: Boxes may exceed their image by this many pixels (rounding in the tools that write them).
BOX_TOLERANCE = 1.0


class CocoFormatError(ValueError):
    """A COCO annotation or results file that cannot be evaluated; the message names file, record and field."""

    def __init__(self, source: str, record: str, field: str | None, problem: str) -> None:
        where = f"{record}, field {field!r}" if field else record
        super().__init__(f"{source}: {where}: {problem}")
        self.source, self.record, self.field = source, record, field


def _source_name(source: Any, default: str) -> str:
    return str(source) if isinstance(source, str | Path) else default


def _read_json(path: str | Path) -> Any:
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise FileNotFoundError(f"{path}: cannot read ({exc.strerror or exc})") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise CocoFormatError(str(path), "the file", None, f"not valid JSON ({exc})") from None


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return (isinstance(value, int | float) and not isinstance(value, bool)) and math.isfinite(value)


def _check_box(name: str, record: str, box: Any, size: tuple[float, float] | None) -> None:
    if not isinstance(box, list | tuple) or len(box) != 4:
        raise CocoFormatError(name, record, "bbox", f"must be a list [x, y, w, h] of 4 numbers, got {box!r}")
    if not all(_is_number(v) for v in box):
        raise CocoFormatError(name, record, "bbox", f"values must be finite numbers, got {box!r}")
    x, y, w, h = box
    if min(x, y, w, h) < 0:
        raise CocoFormatError(name, record, "bbox", f"x, y, w, h must be >= 0, got {list(box)}")
    if size is not None:
        width, height = size
        if x + w > width + BOX_TOLERANCE or y + h > height + BOX_TOLERANCE:
            raise CocoFormatError(
                name,
                record,
                "bbox",
                f"{list(box)} reaches ({x + w:g}, {y + h:g}), outside its {width:g}x{height:g} image",
            )


def _require(name: str, record: str, entry: Any, field: str, check, what: str) -> Any:
    if not isinstance(entry, dict):
        raise CocoFormatError(name, record, None, f"must be an object, got {type(entry).__name__}")
    if field not in entry:
        raise CocoFormatError(name, record, field, "is missing")
    value = entry[field]
    if not check(value):
        raise CocoFormatError(name, record, field, f"must be {what}, got {value!r}")
    return value


def validate_gt(data: Any, name: str = "<ground truth>") -> dict:
    """Check a COCO annotation dict (``images``, ``annotations``, ``categories``); returns it unchanged."""
    if not isinstance(data, dict):
        raise CocoFormatError(name, "the file", None, f"must be a JSON object, got {type(data).__name__}")
    for key in ("images", "annotations", "categories"):
        if not isinstance(data.get(key), list):
            raise CocoFormatError(name, "the file", key, "must be a list" if key in data else "is missing")
    sizes: dict[int, tuple[float, float]] = {}
    for i, image in enumerate(data["images"]):
        record = f"images[{i}]"
        image_id = _require(name, record, image, "id", _is_int, "an integer")
        width = _require(name, record, image, "width", lambda v: _is_number(v) and v > 0, "a positive number")
        height = _require(name, record, image, "height", lambda v: _is_number(v) and v > 0, "a positive number")
        if image_id in sizes:
            raise CocoFormatError(name, record, "id", f"image id {image_id} is used twice")
        sizes[image_id] = (width, height)
    categories: set[int] = set()
    for i, category in enumerate(data["categories"]):
        record = f"categories[{i}]"
        cat_id = _require(name, record, category, "id", _is_int, "an integer")
        _require(name, record, category, "name", lambda v: isinstance(v, str) and v, "a non-empty string")
        if cat_id in categories:
            raise CocoFormatError(name, record, "id", f"category id {cat_id} is used twice")
        categories.add(cat_id)
    ann_ids: set[int] = set()
    for i, ann in enumerate(data["annotations"]):
        record = f"annotations[{i}]"
        ann_id = _require(name, record, ann, "id", _is_int, "an integer")
        if ann_id in ann_ids:
            raise CocoFormatError(name, record, "id", f"annotation id {ann_id} is used twice")
        ann_ids.add(ann_id)
        image_id = _require(name, record, ann, "image_id", _is_int, "an integer")
        if image_id not in sizes:
            raise CocoFormatError(name, record, "image_id", f"{image_id} is not an id of 'images'")
        cat_id = _require(name, record, ann, "category_id", _is_int, "an integer")
        if cat_id not in categories:
            raise CocoFormatError(name, record, "category_id", f"{cat_id} is not an id of 'categories'")
        _check_box(name, record, ann.get("bbox"), sizes[image_id])
        _require(name, record, ann, "area", lambda v: _is_number(v) and v >= 0, "a finite number >= 0")
        if "iscrowd" in ann and ann["iscrowd"] not in (0, 1):
            raise CocoFormatError(name, record, "iscrowd", f"must be 0 or 1, got {ann['iscrowd']!r}")
    return data


def validate_detections(dets: Any, gt: dict, name: str = "<detections>") -> list[dict]:
    """Check a COCO results list (``image_id``, ``category_id``, ``bbox``, ``score``) against validated ``gt``."""
    if not isinstance(dets, list):
        raise CocoFormatError(name, "the file", None, f"must be a JSON list of detections, got {type(dets).__name__}")
    sizes = {image["id"]: (image["width"], image["height"]) for image in gt["images"]}
    categories = {category["id"] for category in gt["categories"]}
    for i, det in enumerate(dets):
        record = f"record {i}"
        image_id = _require(name, record, det, "image_id", _is_int, "an integer")
        if image_id not in sizes:
            raise CocoFormatError(name, record, "image_id", f"{image_id} is not an image of the ground truth")
        cat_id = _require(name, record, det, "category_id", _is_int, "an integer")
        if cat_id not in categories:
            raise CocoFormatError(name, record, "category_id", f"{cat_id} is not a category of the ground truth")
        _check_box(name, record, det.get("bbox"), sizes[image_id])
        _require(name, record, det, "score", _is_number, "a finite number")
    return dets


def load_gt(source: str | Path | dict) -> dict:
    """A validated annotation dict from a path or a dict (a dict is deep-copied: pycocotools mutates it)."""
    name = _source_name(source, "<ground truth>")
    data = _read_json(source) if isinstance(source, str | Path) else copy.deepcopy(source)
    return validate_gt(data, name)


def load_detections(source: str | Path | Sequence[dict], gt: dict) -> list[dict]:
    """A validated (and copied) results list from a path or a list."""
    name = _source_name(source, "<detections>")
    dets = _read_json(source) if isinstance(source, str | Path) else [dict(d) for d in source]
    return validate_detections(dets, gt, name)


def _resolve_categories(gt: dict, categories: Sequence[int | str] | None) -> list[int]:
    by_name = {c["name"]: c["id"] for c in gt["categories"]}
    ids = {c["id"] for c in gt["categories"]}
    if categories is None:
        return sorted(ids)
    resolved = []
    for c in categories:
        cat_id = by_name.get(c) if isinstance(c, str) else c
        if cat_id not in ids:
            raise ValueError(f"category {c!r} is not in the ground truth (categories: {sorted(by_name)})")
        resolved.append(int(cat_id))
    return sorted(set(resolved))


def _backend(backend: str):
    """``(COCO, COCOeval)`` classes of the chosen backend."""
    if backend == "pycocotools":
        from pycocotools.coco import COCO
        from pycocotools.cocoeval import COCOeval

        return COCO, COCOeval
    if backend == "faster-coco-eval":
        try:
            from faster_coco_eval import COCO, COCOeval_faster
        except ImportError:
            raise ValueError("backend 'faster-coco-eval' needs `pip install repro[fast-coco]`") from None

        def evaluator(gt, dt, iou_type):
            return COCOeval_faster(gt, dt, iou_type, print_function=lambda *a, **k: None)

        return COCO, evaluator
    raise ValueError(f"unknown COCO evaluation backend {backend!r}; choose one of {', '.join(BACKENDS)}")


def _fraction(value: float) -> float | None:
    return None if value < 0 else float(value)


def _mean_valid(values: np.ndarray) -> float | None:
    valid = values[values > -1]
    return float(valid.mean()) if valid.size else None


def evaluate_coco(
    gt: str | Path | dict,
    dets: str | Path | Sequence[dict],
    *,
    categories: Sequence[int | str] | None = None,
    image_ids: Sequence[int] | None = None,
    backend: str = "pycocotools",
    pr_curves: bool = False,
) -> dict[str, Any]:
    """COCO bbox metrics of ``dets`` against ``gt`` (paths or loaded JSON), from pycocotools.

    Returns ``AP``, ``AP50``, ``AP75``, ``APs``, ``APm``, ``APl``, ``AR1``, ``AR10``, ``AR100``, ``ARs``, ``ARm``,
    ``ARl`` (fractions, ``None`` when undefined), ``per_class`` (category name -> AP@[.5:.95] or ``None``), and what
    was evaluated. ``pr_curves``: add ``pr_curves`` = ``{"recall": 101 points, "iou=0.50": precision averaged over
    classes, "iou=0.75": ..., "per_class_iou=0.50": {name: precision}}`` (area all, 100 detections).
    """
    COCO, COCOeval = _backend(backend)
    gt_data = load_gt(gt)
    det_list = load_detections(dets, gt_data)
    cat_ids = _resolve_categories(gt_data, categories)
    all_images = [image["id"] for image in gt_data["images"]]
    if image_ids is not None:
        unknown = sorted(set(image_ids) - set(all_images))
        if unknown:
            raise ValueError(f"image ids {unknown[:5]} are not in the ground truth")
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO()
        coco_gt.dataset = gt_data
        coco_gt.createIndex()
        if det_list:
            coco_dt = coco_gt.loadRes(det_list)
        else:  # loadRes cannot take an empty list: an empty result set with the same images and categories
            coco_dt = COCO()
            coco_dt.dataset = {"images": gt_data["images"], "categories": gt_data["categories"], "annotations": []}
            coco_dt.createIndex()
        evaluator = COCOeval(coco_gt, coco_dt, "bbox")
        evaluator.params.catIds = cat_ids
        evaluator.params.imgIds = sorted(set(image_ids if image_ids is not None else all_images))
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    stats = [float(v) for v in evaluator.stats]
    precision = np.asarray(evaluator.eval["precision"])  # (T iou, R recall, K classes, A areas, M max dets)
    names = {c["id"]: c["name"] for c in gt_data["categories"]}
    result: dict[str, Any] = {name: _fraction(v) for name, v in zip(STAT_NAMES, stats)}
    result["per_class"] = {names[c]: _mean_valid(precision[:, :, k, 0, -1]) for k, c in enumerate(cat_ids)}
    result.update(
        num_images=len(evaluator.params.imgIds),
        num_detections=len(det_list),
        categories=[names[c] for c in cat_ids],
        backend=backend,
    )
    if pr_curves:
        iou = list(np.round(evaluator.params.iouThrs, 2))
        at50, at75 = iou.index(0.5), iou.index(0.75)

        def curve(p: np.ndarray) -> list[float | None]:
            return [_mean_valid(p[r]) for r in range(p.shape[0])]

        result["pr_curves"] = {
            "recall": [float(r) for r in evaluator.params.recThrs],
            "iou=0.50": curve(precision[at50, :, :, 0, -1]),
            "iou=0.75": curve(precision[at75, :, :, 0, -1]),
            "per_class_iou=0.50": {
                names[c]: [_fraction(v) for v in precision[at50, :, k, 0, -1]] for k, c in enumerate(cat_ids)
            },
        }
    return result


COCO_KEYS = ("AP", "AP50", "AP75", "APs", "APm", "APl")


def cli_eval_coco(gt: str, dets: str, *, categories: Sequence[str] = (), backend: str = "pycocotools") -> int:
    """``repro eval-coco``: print one JSON object (``AP`` .. ``APl``, ``per_class``); exit 1 on bad data, 2 on usage."""
    import sys

    for path in (gt, dets):
        if not Path(path).is_file():
            print(f"error: {path} does not exist or is not a file", file=sys.stderr)
            return 2
    wanted = [int(c) if c.isdigit() else c for c in categories] or None
    try:
        result = evaluate_coco(gt, dets, categories=wanted, backend=backend)
    except CocoFormatError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except (ValueError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps({**{k: result[k] for k in COCO_KEYS}, "per_class": result["per_class"]}))
    return 0
