"""ImageNet-1k and ImageNet-10 (RNNPool, App. G Table 6) in the ImageFolder layout (``train/``, ``val/``)."""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial
from pathlib import Path

from repro.data.base import IMAGE_EXTENSIONS, ImageFileDataset, scan_image_folder
from repro.data.errors import layout_error
from repro.data.paths import require_root
from repro.data.registry import DatasetSpec, register_dataset

# The ten synsets of RNNPool's ImageNet-10 (paper order); n02430045 (deer) is taken from ImageNet-22K.
IMAGENET10_SYNSETS = (
    "n02690373", "n04285008", "n01560419", "n02124075", "n02430045",
    "n02099601", "n01641577", "n03538406", "n03673027", "n04467665",
)  # fmt: skip
IMAGENET_SOURCE = (
    "https://image-net.org/download (ILSVRC2012 train/val); sort val into class folders "
    "(e.g. the 'valprep.sh' script), then place them under <root>/imagenet/"
)
IMAGENET10_SOURCE = (
    "the 10 synsets of RNNPool Table 6 from ImageNet (n02430045 'deer' from ImageNet-22K, "
    "https://image-net.org/download); 1300 train and 50 val images per class"
)


def _layout(name: str) -> str:
    return f"<root>/{name}/{{train,val}}/<wnid>/<image>.JPEG (ImageFolder layout, val sorted into class folders)"


def _split_dir(dataset_dir: Path, split: str, name: str, source: str) -> Path:
    split_dir = dataset_dir / split
    if not split_dir.is_dir():
        raise layout_error(name, f"missing directory {split_dir}", _layout(name), source)
    loose = [p.name for p in split_dir.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS]
    if loose:
        raise layout_error(
            name,
            f"{split_dir} holds {len(loose)} loose images (e.g. {loose[0]}) instead of class folders; "
            "sort them into <wnid>/ sub-directories",
            _layout(name),
            source,
        )
    return split_dir


def read_imagenet(dataset_dir: Path, split: str, name: str = "imagenet", classes: Sequence[str] | None = None):
    """(samples, classes) of one split; class folders must match between train and val."""
    train_dir = _split_dir(dataset_dir, "train", name, IMAGENET_SOURCE)
    derive_classes = classes is None
    if classes is None:
        classes = sorted(entry.name for entry in train_dir.iterdir() if entry.is_dir())
        if not classes:
            raise layout_error(name, f"no class folders in {train_dir}", _layout(name), IMAGENET_SOURCE)
    split_dir = _split_dir(dataset_dir, split, name, IMAGENET_SOURCE)
    if split != "train" and derive_classes:
        extra = sorted({e.name for e in split_dir.iterdir() if e.is_dir()} - set(classes))
        if extra:
            raise layout_error(
                name,
                f"{split_dir} has class folders absent from train/ (e.g. {extra[0]})",
                _layout(name),
                IMAGENET_SOURCE,
            )
    samples, classes, empty = scan_image_folder(split_dir, classes)
    if empty:
        raise layout_error(
            name,
            f"{len(empty)} class folder(s) missing or empty in {split_dir} (e.g. {empty[0]})",
            _layout(name),
            IMAGENET_SOURCE,
        )
    return samples, classes


def imagenet_dir(root: Path) -> Path:
    require_root(root, "imagenet")
    directory = root / "imagenet"
    if not directory.is_dir():
        raise layout_error("imagenet", f"missing directory {directory}", _layout("imagenet"), IMAGENET_SOURCE)
    return directory


def imagenet10_dir(root: Path) -> Path:
    """``<root>/imagenet10`` if present, else ``<root>/imagenet`` when it holds all ten synsets in train and val."""
    require_root(root, "imagenet10")
    candidates = [root / "imagenet10", root / "imagenet"]
    for directory in candidates:
        if directory.is_dir():
            missing = [
                f"{split}/{wnid}"
                for split in ("train", "val")
                for wnid in IMAGENET10_SYNSETS
                if not (directory / split / wnid).is_dir()
            ]
            if not missing:
                return directory
            if directory.name == "imagenet10":
                raise layout_error(
                    "imagenet10",
                    f"{directory} lacks {len(missing)} synset folder(s), e.g. {missing[0]}",
                    _layout("imagenet10"),
                    IMAGENET10_SOURCE,
                )
    raise layout_error(
        "imagenet10",
        f"neither {candidates[0]} nor {candidates[1]} holds the ten synsets {', '.join(IMAGENET10_SYNSETS)}",
        _layout("imagenet10"),
        IMAGENET10_SOURCE,
    )


def build(root: Path, split: str, transform=None, *, ten: bool = False) -> ImageFileDataset:
    if ten:
        directory = imagenet10_dir(root)
        samples, classes = read_imagenet(directory, split, "imagenet10", sorted(IMAGENET10_SYNSETS))
    else:
        directory = imagenet_dir(root)
        samples, classes = read_imagenet(directory, split)
    return ImageFileDataset(samples, classes, transform, root=directory)


def check(root: Path, *, ten: bool = False) -> Path:
    for split in ("train", "val"):
        dataset = build(root, split, ten=ten)
    return dataset.root


for _ten in (False, True):
    register_dataset(
        DatasetSpec(
            name="imagenet10" if _ten else "imagenet",
            task="classification",
            num_classes=10 if _ten else 1000,
            splits=("train", "val"),
            split_aliases={"test": "val"},
            build=partial(build, ten=_ten),
            check=partial(check, ten=_ten),
            description=(
                "ImageNet-10 (RNNPool Table 6): 10 synsets, 1300 train / 50 val per class"
                if _ten
                else "ImageNet-1k (ILSVRC2012): 1.28M train, 50,000 val images"
            ),
            source=IMAGENET10_SOURCE if _ten else IMAGENET_SOURCE,
        )
    )
