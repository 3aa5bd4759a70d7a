"""COCO 2017 detection (80 classes, or the 8-class subset of the SAP detection configs) read from the official JSON."""

from __future__ import annotations

import json
import math
from collections import defaultdict
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset

from repro.data.base import load_rgb
from repro.data.errors import DataFileError, DatasetError, file_error, require_dir, require_file
from repro.data.paths import require_root, safe_relative_path
from repro.data.registry import DatasetSpec, register_dataset

# The 8 classes of the SAP detection experiments (reference_spec §4.2, quirk B24), in COCO category-id order.
COCO8_CLASSES = ("person", "bicycle", "car", "motorcycle", "bus", "train", "truck", "traffic light")
COCO_SOURCE = (
    "https://cocodataset.org/#download: train2017.zip, val2017.zip and annotations_trainval2017.zip, "
    "unzipped into <root>/coco/"
)


def coco_layout(name: str) -> str:
    images = f"<root>/{name}/{{train2017,val2017}}/<image>.jpg"
    return f"{images} and <root>/{name}/annotations/instances_{{train,val}}2017.json"


BOX_TOLERANCE_PX = 1.0
"""How far a box may reach past the image border (COCO boxes come from polygons and can exceed it by rounding)."""


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


OUT_OF_IMAGE = ("error", "drop")


def validate_coco(data: Any, path: Path, name: str = "coco", *, out_of_image: str = "error") -> None:
    """Check a COCO annotation file against the schema the reader relies on, before anything uses it.

    Images need an integer ``id`` (unique), positive ``width``/``height`` and a relative ``file_name`` inside the
    image folder; categories an integer ``id`` (unique) and a ``name``; annotations an ``image_id`` and
    ``category_id`` that exist, and a ``bbox`` of four finite numbers ``[x, y, w, h]`` with ``w, h >= 0`` inside the
    image (up to :data:`BOX_TOLERANCE_PX`; ``out_of_image='drop'`` accepts boxes outside it, which the reader then
    leaves out as MMDetection does). The first violation raises :class:`DataFileError` naming the file, the record
    and the field.
    """
    layout = coco_layout(name)

    def fail(record: str, field: str, problem: str) -> DataFileError:
        return file_error(name, f"{path}: {record}: field {field!r} {problem}", layout, COCO_SOURCE)

    if not isinstance(data, dict):
        raise file_error(name, f"{path} holds a JSON {type(data).__name__}, not an object", layout, COCO_SOURCE)
    for key in ("images", "annotations", "categories"):
        if key not in data:
            raise fail("top level", key, "is missing")
        if not isinstance(data[key], list):
            raise fail("top level", key, f"is a {type(data[key]).__name__}, not a list")
    categories: set[int] = set()
    for i, cat in enumerate(data["categories"]):
        record = f"categories[{i}]"
        if not isinstance(cat, dict):
            raise fail(record, "(record)", "is not an object")
        if not _is_int(cat.get("id")):
            raise fail(record, "id", f"is {cat.get('id')!r}, not an integer")
        if cat["id"] in categories:
            raise fail(record, "id", f"repeats category id {cat['id']}")
        if not isinstance(cat.get("name"), str):
            raise fail(record, "name", "is missing or not a string")
        categories.add(cat["id"])
    sizes: dict[int, tuple[float, float]] = {}
    for i, img in enumerate(data["images"]):
        record = f"images[{i}]"
        if not isinstance(img, dict):
            raise fail(record, "(record)", "is not an object")
        if not _is_int(img.get("id")):
            raise fail(record, "id", f"is {img.get('id')!r}, not an integer")
        record = f"images[{i}] (id {img['id']})"
        if img["id"] in sizes:
            raise fail(record, "id", "repeats an image id")
        for field in ("width", "height"):
            if not _is_number(img.get(field)) or img[field] <= 0:
                raise fail(record, field, f"is {img.get(field)!r}, not a positive number")
        if not safe_relative_path(img.get("file_name")):
            raise fail(record, "file_name", f"is {img.get('file_name')!r}, not a relative path inside the image folder")
        sizes[img["id"]] = (img["width"], img["height"])
    for i, ann in enumerate(data["annotations"]):
        record = f"annotations[{i}]"
        if not isinstance(ann, dict):
            raise fail(record, "(record)", "is not an object")
        record = f"annotations[{i}] (id {ann.get('id')!r})"
        if not _is_int(ann.get("image_id")) or ann["image_id"] not in sizes:
            raise fail(record, "image_id", f"is {ann.get('image_id')!r}, not the id of an image of the file")
        if not _is_int(ann.get("category_id")) or ann["category_id"] not in categories:
            raise fail(record, "category_id", f"is {ann.get('category_id')!r}, not the id of a category of the file")
        bbox = ann.get("bbox")
        if not isinstance(bbox, list) or len(bbox) != 4 or not all(_is_number(v) for v in bbox):
            raise fail(record, "bbox", f"is {bbox!r}, not four finite numbers [x, y, w, h]")
        x, y, w, h = bbox
        if w < 0 or h < 0:
            raise fail(record, "bbox", f"is {bbox!r}: negative width or height")
        width, height = sizes[ann["image_id"]]
        tol = BOX_TOLERANCE_PX
        outside = x < -tol or y < -tol or x + w > width + tol or y + h > height + tol
        if outside and out_of_image == "error":
            raise fail(record, "bbox", f"is {bbox!r}: outside the {width}x{height} image {ann['image_id']}")
        if "area" in ann and (not _is_number(ann["area"]) or ann["area"] < 0):
            raise fail(record, "area", f"is {ann['area']!r}, not a number >= 0")
        if "iscrowd" in ann and ann["iscrowd"] not in (0, 1):
            raise fail(record, "iscrowd", f"is {ann['iscrowd']!r}, not 0 or 1")
        if "ignore" in ann and ann["ignore"] not in (0, 1):
            raise fail(record, "ignore", f"is {ann['ignore']!r}, not 0 or 1")


def _empty_boxes() -> torch.Tensor:
    return torch.zeros((0, 4), dtype=torch.float32)


class CocoDetection(Dataset):
    """COCO-format detection: yields ``(PIL image, target)``.

    ``target`` holds ``boxes`` (N, 4) float xyxy in pixels (x2 = x + w, as MMDetection), ``labels`` (N,) int64 in
    ``0..K-1`` plus ``label_offset`` (use 1 for torchvision detectors, where 0 is background), ``boxes_ignore``
    (crowd boxes), ``image_id`` and ``orig_size`` (h, w). Annotations are kept or dropped as MMDetection 2.x does;
    with ``filter_empty`` (the training default), images without a box of the chosen classes, or with a side under
    ``min_size``, are skipped. ``classes`` selects categories by name, in the file's category order.

    The file is validated first (:func:`validate_coco`): a box outside its image is an error unless
    ``out_of_image='drop'``, which keeps MMDetection's behaviour of silently leaving such boxes out.
    """

    def __init__(
        self,
        image_dir: Path,
        ann_file: Path,
        *,
        classes: Sequence[str] | None = None,
        filter_empty: bool = False,
        min_size: int = 32,
        transform: Callable | None = None,
        label_offset: int = 0,
        name: str = "coco",
        out_of_image: str = "error",
    ) -> None:
        if out_of_image not in OUT_OF_IMAGE:
            raise DatasetError(f"{name}: out_of_image must be one of {OUT_OF_IMAGE}, got {out_of_image!r}")
        self.out_of_image = out_of_image
        self.image_dir = Path(image_dir)
        self.ann_file = Path(ann_file)
        self.transform = transform
        self.label_offset = label_offset
        data = self._load(name)
        categories = data["categories"]
        if classes is None:
            chosen = categories
        else:
            by_name = {cat["name"]: cat for cat in categories}
            unknown = [c for c in classes if c not in by_name]
            if unknown:
                raise DatasetError(f"{name}: classes {unknown} are not categories of {self.ann_file}")
            chosen = [cat for cat in categories if cat["name"] in set(classes)]
        self.cat_ids = [int(cat["id"]) for cat in chosen]
        self.classes = [cat["name"] for cat in chosen]
        self.cat_to_label = {cat_id: i for i, cat_id in enumerate(self.cat_ids)}
        self.images = {int(img["id"]): img for img in data["images"]}
        self.anns: dict[int, list[dict]] = defaultdict(list)
        for ann in data["annotations"]:
            self.anns[int(ann["image_id"])].append(ann)
        image_ids = [int(img["id"]) for img in data["images"]]
        if filter_empty:
            with_class = {
                i for i, anns in self.anns.items() if any(a["category_id"] in self.cat_to_label for a in anns)
            }
            image_ids = [
                i
                for i in image_ids
                if i in with_class and min(self.images[i]["width"], self.images[i]["height"]) >= min_size
            ]
        self.image_ids = image_ids

    def _load(self, name: str) -> dict:
        try:
            with self.ann_file.open("rb") as handle:
                data = json.load(handle)
        except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as err:
            raise file_error(
                name, f"{self.ann_file} is truncated or not JSON ({type(err).__name__}: {err})", coco_layout(name),
                COCO_SOURCE,
            ) from None  # fmt: skip
        validate_coco(data, self.ann_file, name, out_of_image=self.out_of_image)
        return data

    def __len__(self) -> int:
        return len(self.image_ids)

    def target(self, image_id: int) -> dict:
        """The target of one image (no pixels read)."""
        info = self.images[image_id]
        width, height = info["width"], info["height"]
        boxes, labels, ignore = [], [], []
        for ann in self.anns.get(image_id, []):
            if ann.get("ignore", False) or ann["category_id"] not in self.cat_to_label:
                continue
            x, y, w, h = ann["bbox"]
            inter_w = max(0.0, min(x + w, width) - max(x, 0.0))
            inter_h = max(0.0, min(y + h, height) - max(y, 0.0))
            if inter_w * inter_h == 0 or ann.get("area", w * h) <= 0 or w < 1 or h < 1:
                continue
            box = [x, y, x + w, y + h]
            if ann.get("iscrowd", 0):
                ignore.append(box)
            else:
                boxes.append(box)
                labels.append(self.cat_to_label[ann["category_id"]] + self.label_offset)
        return {
            "boxes": torch.tensor(boxes, dtype=torch.float32) if boxes else _empty_boxes(),
            "labels": torch.tensor(labels, dtype=torch.int64),
            "boxes_ignore": torch.tensor(ignore, dtype=torch.float32) if ignore else _empty_boxes(),
            "image_id": image_id,
            "orig_size": (height, width),
        }

    def __getitem__(self, index: int):
        image_id = self.image_ids[index]
        image = load_rgb(self.image_dir / self.images[image_id]["file_name"])
        target = self.target(image_id)
        if self.transform is not None:
            image, target = self.transform(image, target)
        return image, target


def coco_files(dataset_dir: Path, split: str, name: str, source: str = COCO_SOURCE) -> tuple[Path, Path]:
    """(image directory, annotation file) of a split in the COCO 2017 layout."""
    layout = coco_layout(name)
    image_dir = require_dir(name, dataset_dir / f"{split}2017", layout, source)
    ann_file = require_file(name, dataset_dir / "annotations" / f"instances_{split}2017.json", layout, source)
    return image_dir, ann_file


def read_coco(
    dataset_dir: Path, split: str, *, name: str, classes=None, transform=None, source: str = COCO_SOURCE, **opts
) -> CocoDetection:
    """A COCO-layout split; training splits drop empty images unless ``filter_empty=False`` is passed."""
    image_dir, ann_file = coco_files(dataset_dir, split, name, source)
    opts.setdefault("filter_empty", split == "train")
    return CocoDetection(image_dir, ann_file, classes=classes, transform=transform, name=name, **opts)


def check_coco(dataset: CocoDetection) -> None:
    """Fail when the first or last image of a split is missing (a partial unzip)."""
    for image_id in dataset.image_ids[:1] + dataset.image_ids[-1:]:
        path = dataset.image_dir / dataset.images[image_id]["file_name"]
        if not path.is_file():
            raise DatasetError(f"{dataset.ann_file.name} lists {path}, which is missing: the images are incomplete")


def build(root: Path, split: str, transform=None, *, classes=None, **opts) -> CocoDetection:
    name = "coco8" if classes else "coco"
    require_root(root, name)
    return read_coco(root / "coco", split, name=name, classes=classes, transform=transform, **opts)


def check(root: Path, *, classes=None) -> Path:
    for split in ("train", "val"):
        check_coco(build(root, split, classes=classes))
    return root / "coco"


for _name, _classes in (("coco", None), ("coco8", COCO8_CLASSES)):
    register_dataset(
        DatasetSpec(
            name=_name,
            task="detection",
            num_classes=8 if _classes else 80,
            splits=("train", "val"),
            split_aliases={"test": "val"},
            build=partial(build, classes=_classes),
            check=partial(check, classes=_classes),
            description=(
                "COCO 2017 restricted to the 8 classes of the SAP detection configs (B24)"
                if _classes
                else "COCO 2017 detection, 80 classes"
            ),
            source=COCO_SOURCE,
        )
    )
