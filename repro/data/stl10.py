"""STL-10 in torchvision's binary layout (``stl10_binary/{train,test}_{X,y}.bin``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from repro.data.base import ArrayImageDataset
from repro.data.errors import file_error, layout_error, require_file
from repro.data.paths import require_root
from repro.data.registry import DatasetSpec, register_dataset

NAME = "stl10"
SIDE = 96
RECORD = 3 * SIDE * SIDE
CLASSES = ("airplane", "bird", "car", "cat", "deer", "dog", "horse", "monkey", "ship", "truck")
LAYOUT = "<root>/stl10/stl10_binary/{train_X.bin,train_y.bin,test_X.bin,test_y.bin} (torchvision STL10 layout)"
SOURCE = "https://cs.stanford.edu/~acoates/stl10/stl10_binary.tar.gz (untar into <root>/stl10/)"


def binary_dir(root: Path) -> Path:
    """``<root>/stl10/stl10_binary``, or ``<root>/stl10_binary`` when that is where a torchvision download put it."""
    require_root(root, NAME)
    for candidate in (root / NAME / "stl10_binary", root / "stl10_binary"):
        if candidate.is_dir():
            return candidate
    raise layout_error(NAME, f"missing directory {root / NAME / 'stl10_binary'}", LAYOUT, SOURCE)


def read_split(directory: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    """Images ``(N, 96, 96, 3)`` uint8 and 0-based labels of one split; a truncated file fails with its name."""
    x_path = require_file(NAME, directory / f"{split}_X.bin", LAYOUT, SOURCE)
    y_path = require_file(NAME, directory / f"{split}_y.bin", LAYOUT, SOURCE)
    x_size = x_path.stat().st_size
    if x_size % RECORD:
        raise file_error(NAME, f"{x_path} is truncated ({x_size} bytes is not a multiple of {RECORD})", LAYOUT, SOURCE)
    labels = np.fromfile(y_path, dtype=np.uint8).astype(np.int64) - 1
    count = x_size // RECORD
    if len(labels) != count:
        raise file_error(
            NAME,
            f"{x_path.name} holds {count} images but {y_path.name} {len(labels)} labels (truncated?)",
            LAYOUT,
            SOURCE,
        )
    if labels.size and (labels.min() < 0 or labels.max() >= len(CLASSES)):
        raise file_error(NAME, f"{y_path} has labels outside 1..{len(CLASSES)}", LAYOUT, SOURCE)
    # Stored column-major per channel, as torchvision reads it: (N, C, W, H) -> (N, H, W, C).
    images = np.memmap(x_path, dtype=np.uint8, mode="r", shape=(count, 3, SIDE, SIDE)).transpose(0, 3, 2, 1)
    return images, labels


def build(root: Path, split: str, transform=None) -> ArrayImageDataset:
    images, labels = read_split(binary_dir(root), split)
    return ArrayImageDataset(images, labels, CLASSES, transform)


def check(root: Path) -> Path:
    directory = binary_dir(root)
    for split in ("train", "test"):
        read_split(directory, split)
    return directory


register_dataset(
    DatasetSpec(
        name=NAME,
        task="classification",
        num_classes=10,
        splits=("train", "test"),
        split_aliases={"val": "test"},
        build=build,
        check=check,
        description="STL-10: 5,000 labelled train and 8,000 test images, 96x96, 10 classes",
        source=SOURCE,
    )
)
