"""Visual Wake Words (person / no person, derived from COCO) in the layout of the pyvww annotations."""

from __future__ import annotations

import json
from pathlib import Path

from repro.data.base import ImageFileDataset
from repro.data.errors import DatasetError, file_error, require_dir, require_file
from repro.data.paths import require_root, safe_relative_path
from repro.data.registry import DatasetSpec, register_dataset

NAME = "vww"
CLASSES = ("not-person", "person")
LAYOUT = "<root>/vww/all2014/<COCO 2014 train+val images> and <root>/vww/annotations/instances_{train,val}.json"
SOURCE = (
    "COCO 2014 images (https://cocodataset.org/#download) merged into <root>/vww/all2014/, and the Visual Wake Words "
    "annotations made with the pyvww scripts (https://github.com/Mxbonn/visualwakewords: "
    "create_coco_train_minival_split.py, then create_visualwakewords_annotations.py --threshold 0.005 "
    "--foreground_class person) in <root>/vww/annotations/"
)


def build_vww_annotations(coco: dict, *, threshold: float = 0.005, foreground: str = "person") -> dict:
    """Visual Wake Words annotations from a COCO annotation dict (the rule of Chowdhery et al. 2019).

    An image is positive (category 1) when it has a ``foreground`` box whose area exceeds ``threshold`` of the
    image area; every other image gets one category-0 annotation.
    """
    fg_ids = {cat["id"] for cat in coco["categories"] if cat["name"] == foreground}
    if not fg_ids:
        raise DatasetError(f"{NAME}: no category named {foreground!r} in the COCO annotations")
    images = {img["id"]: img for img in coco["images"]}
    annotations, positive = [], set()
    for ann in coco["annotations"]:
        img = images.get(ann["image_id"])
        if img is None or ann["category_id"] not in fg_ids:
            continue
        if ann.get("area", 0.0) / (img["width"] * img["height"]) > threshold:
            annotations.append(
                {
                    "id": len(annotations),
                    "image_id": ann["image_id"],
                    "category_id": 1,
                    "area": ann["area"],
                    "bbox": ann["bbox"],
                    "iscrowd": ann.get("iscrowd", 0),
                }
            )
            positive.add(ann["image_id"])
    for image_id in images:
        if image_id not in positive:
            annotations.append(
                {"id": len(annotations), "image_id": image_id, "category_id": 0, "area": 0.0, "bbox": [], "iscrowd": 0}
            )
    categories = [
        {"supercategory": "background", "id": 0, "name": f"not-{foreground}"},
        {"supercategory": foreground, "id": 1, "name": foreground},
    ]
    return {
        "info": {"description": "Visual Wake Words"},
        "images": coco["images"],
        "annotations": annotations,
        "categories": categories,
    }


def read_split(dataset_dir: Path, split: str) -> list[tuple[Path, int]]:
    """(image path, label) in image-id order; the label is that of the image's first annotation, as pyvww reads it."""
    image_dir = require_dir(NAME, dataset_dir / "all2014", LAYOUT, SOURCE)
    ann_file = require_file(NAME, dataset_dir / "annotations" / f"instances_{split}.json", LAYOUT, SOURCE)
    try:
        data = json.loads(ann_file.read_bytes())
        labels: dict[int, int] = {}
        for ann in data["annotations"]:
            labels.setdefault(int(ann["image_id"]), int(ann["category_id"]))
        files = {int(img["id"]): img["file_name"] for img in data["images"]}
    except (ValueError, KeyError, TypeError, AttributeError, OverflowError, RecursionError) as err:
        raise file_error(
            NAME, f"{ann_file} is truncated or not a VWW annotation file ({err!r})", LAYOUT, SOURCE
        ) from None
    unsafe = next((f for f in files.values() if not safe_relative_path(f)), None)
    if unsafe is not None:
        raise file_error(NAME, f"{ann_file}: field 'file_name' {unsafe!r} leaves the image folder", LAYOUT, SOURCE)
    unlabelled = [i for i in files if i not in labels]
    if unlabelled or any(v not in (0, 1) for v in labels.values()):
        raise file_error(
            NAME,
            f"{ann_file} is not a VWW annotation file: every image needs one category 0/1 "
            "annotation (these look like raw COCO annotations)",
            LAYOUT,
            SOURCE,
        )
    return [(image_dir / files[i], labels[i]) for i in sorted(files)]


def build(root: Path, split: str, transform=None) -> ImageFileDataset:
    require_root(root, NAME)
    return ImageFileDataset(read_split(root / NAME, split), CLASSES, transform, root=root / NAME)


def check(root: Path) -> Path:
    for split in ("train", "val"):
        dataset = build(root, split)
        for path, _ in dataset.samples[:1] + dataset.samples[-1:]:
            if not path.is_file():
                raise DatasetError(f"{NAME}: {path} is listed in instances_{split}.json but missing")
    return root / NAME


register_dataset(
    DatasetSpec(
        name=NAME,
        task="classification",
        num_classes=2,
        splits=("train", "val"),
        split_aliases={"test": "val"},
        build=build,
        check=check,
        description="Visual Wake Words: COCO 2014 person / not-person, ~115k train and ~8k minival images",
        source=SOURCE,
    )
)
