"""COCO 2017 detection (80 classes, or the 8-class subset of the SAP detection configs) read from the official JSON."""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path

import torch
from torch.utils.data import Dataset

from repro.data.base import load_rgb
from repro.data.errors import DatasetError, layout_error, require_dir, require_file
from repro.data.paths import require_root
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


def _empty_boxes() -> torch.Tensor:
    return torch.zeros((0, 4), dtype=torch.float32)


class CocoDetection(Dataset):
    """COCO-format detection: yields ``(PIL image, target)``.

    ``target`` holds ``boxes`` (N, 4) float xyxy in pixels (x2 = x + w, as MMDetection), ``labels`` (N,) int64 in
    ``0..K-1`` plus ``label_offset`` (use 1 for torchvision detectors, where 0 is background), ``boxes_ignore``
    (crowd boxes), ``image_id`` and ``orig_size`` (h, w). Annotations are kept or dropped as MMDetection 2.x does;
    with ``filter_empty`` (the training default), images without a box of the chosen classes, or with a side under
    ``min_size``, are skipped. ``classes`` selects categories by name, in the file's category order.
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
    ) -> None:
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
            with self.ann_file.open() as handle:
                data = json.load(handle)
        except json.JSONDecodeError as err:
            raise layout_error(
                name, f"{self.ann_file} is truncated or not JSON ({err})", coco_layout(name), COCO_SOURCE
            ) from None
        missing = [key for key in ("images", "annotations", "categories") if key not in data]
        if missing:
            raise layout_error(name, f"{self.ann_file} lacks {missing}", coco_layout(name), COCO_SOURCE)
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
