"""SCUT-HEAD Part B in its Pascal VOC layout: the head-detection set of RNNPool Table 5 (the M4 face detector).

Splits are the VOC lists ``ImageSets/Main/<split>.txt`` of the release, or ``list_file=``: an image list whose lines
start with the image path (e.g. EdgeML's ``data/face_val_scutB.txt``, ``JPEGImages/PartB_00723.jpg 10 97 ...``,
the "random 80/20 split" of Table 5). Boxes always come from the XML annotations. Every head counts in the
evaluation (no ignored faces); see ``evaluate_scut_head`` in :mod:`repro.metrics.widerface_eval`.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from repro.data.base import load_rgb
from repro.data.errors import DatasetError, layout_error, require_dir, require_file
from repro.data.paths import require_root
from repro.data.registry import DatasetSpec, register_dataset

NAME = "scut_head"
PART_B = "SCUT_HEAD_Part_B"
SPLITS = ("train", "val", "trainval", "test")
LAYOUT = (
    f"<root>/{NAME}/{PART_B}/JPEGImages/PartB_<n>.jpg, <root>/{NAME}/{PART_B}/Annotations/PartB_<n>.xml, "
    f"<root>/{NAME}/{PART_B}/ImageSets/Main/<split>.txt"
)
SOURCE = (
    "https://github.com/HCIILAB/SCUT-HEAD-Dataset-Release (Part B, Google Drive or Baidu Drive link), "
    f"unzipped into <root>/{NAME}/ so that <root>/{NAME}/{PART_B}/ exists"
)


def _fail(path: Path, problem: str) -> DatasetError:
    return layout_error(NAME, f"{path}: {problem}", LAYOUT, SOURCE)


def read_voc_boxes(path: Path) -> np.ndarray:
    """The ``object/bndbox`` boxes of one VOC annotation as (n, 4) float64 ``xmin ymin xmax ymax``.

    Document type declarations are refused (no entity expansion); a box must have four numbers with
    ``xmin <= xmax`` and ``ymin <= ymax``.
    """
    data = require_file(NAME, path, LAYOUT, SOURCE).read_bytes()
    if b"<!DOCTYPE" in data or b"<!ENTITY" in data:
        raise _fail(path, "has a document type declaration; a VOC annotation has none")
    try:
        root = ET.fromstring(data)
    except ET.ParseError as err:
        raise _fail(path, f"is not well-formed XML ({err})") from None
    boxes = []
    for k, obj in enumerate(root.iter("object")):
        box = obj.find("bndbox")
        try:
            values = [float(box.findtext(tag)) for tag in ("xmin", "ymin", "xmax", "ymax")]
        except (AttributeError, TypeError, ValueError):
            raise _fail(path, f"object {k + 1} has no numeric bndbox xmin/ymin/xmax/ymax") from None
        if not all(np.isfinite(values)) or values[2] < values[0] or values[3] < values[1]:
            raise _fail(path, f"object {k + 1} has an invalid box {values}")
        boxes.append(values)
    return np.asarray(boxes, dtype=np.float64).reshape(-1, 4)


def read_image_list(path: Path) -> list[str]:
    """Image names (no folder, no extension) of a VOC split list or of a list whose lines start with an image path."""
    names = []
    for line in require_file(NAME, path, LAYOUT, SOURCE).read_text().splitlines():
        if line.strip():
            names.append(Path(line.split()[0]).stem)
    if not names:
        raise _fail(path, "lists no image")
    return names


class ScutHead(Dataset):
    """SCUT-HEAD Part B detection: yields ``(PIL image, target)`` with ``boxes`` (N, 4) float xyxy, ``labels``
    (N,) = ``label_offset`` (one class, head) and ``file`` (``<name>.jpg``; predictions go to ``<name>.txt``)."""

    def __init__(
        self,
        dataset_dir: Path,
        split: str,
        *,
        transform: Callable | None = None,
        label_offset: int = 0,
        list_file: str | Path | None = None,
    ) -> None:
        part = require_dir(NAME, dataset_dir / PART_B, LAYOUT, SOURCE)
        self.image_dir = require_dir(NAME, part / "JPEGImages", LAYOUT, SOURCE)
        self.annotation_dir = require_dir(NAME, part / "Annotations", LAYOUT, SOURCE)
        if list_file is None:
            lists = part / "ImageSets" / "Main"
            if not (lists / f"{split}.txt").is_file():
                found = sorted(p.stem for p in lists.glob("*.txt")) if lists.is_dir() else []
                raise layout_error(
                    NAME,
                    f"no split list {lists / f'{split}.txt'} (found: {', '.join(found) or 'none'}); pass another "
                    "split or list_file=<image list> (e.g. EdgeML's data/face_val_scutB.txt)",
                    LAYOUT,
                    SOURCE,
                )
            list_file = lists / f"{split}.txt"
        self.split, self.list_file = split, Path(list_file)
        self.names = read_image_list(self.list_file)
        self.boxes = [read_voc_boxes(self.annotation_dir / f"{name}.xml") for name in self.names]
        self.transform, self.label_offset = transform, label_offset

    def __len__(self) -> int:
        return len(self.names)

    def target(self, index: int) -> dict:
        boxes = torch.from_numpy(self.boxes[index]).to(torch.float32)
        return {
            "boxes": boxes,
            "labels": torch.full((len(boxes),), self.label_offset, dtype=torch.int64),
            "file": f"{self.names[index]}.jpg",
        }

    def __getitem__(self, index: int):
        image = load_rgb(self.image_dir / f"{self.names[index]}.jpg")
        target = self.target(index)
        if self.transform is not None:
            image, target = self.transform(image, target)
        return image, target


def build(root: Path, split: str, transform=None, **opts) -> ScutHead:
    require_root(root, NAME)
    return ScutHead(root / NAME, split, transform=transform, **opts)


def check(root: Path) -> Path:
    lists = root / NAME / PART_B / "ImageSets" / "Main"
    splits = [s for s in SPLITS if (lists / f"{s}.txt").is_file()]
    if not splits:
        raise layout_error(NAME, f"no split list in {lists}", LAYOUT, SOURCE)
    for split in splits:
        dataset = build(root, split)
        missing = [n for n in dataset.names if not (dataset.image_dir / f"{n}.jpg").is_file()]
        if missing:
            raise DatasetError(
                f"{NAME}: {dataset.image_dir / missing[0]}.jpg is missing ({len(missing)} images of {split}); "
                "re-unzip SCUT_HEAD_Part_B"
            )
    return root / NAME


register_dataset(
    DatasetSpec(
        name=NAME,
        task="detection",
        num_classes=1,
        splits=SPLITS,
        build=build,
        check=check,
        description="SCUT-HEAD Part B: 2,405 images of heads (Pascal VOC layout); RNNPool Table 5",
        source=SOURCE,
    )
)
