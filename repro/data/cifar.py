"""CIFAR-10 and CIFAR-100 in torchvision's pickled layout (``cifar-10-batches-py/``, ``cifar-100-python/``)."""

from __future__ import annotations

import pickle
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np

from repro.data.base import ArrayImageDataset
from repro.data.errors import DatasetError, layout_error, require_file
from repro.data.paths import require_root
from repro.data.registry import DatasetSpec, register_dataset


@dataclass(frozen=True)
class CifarLayout:
    name: str
    folder: str
    train_files: tuple[str, ...]
    test_files: tuple[str, ...]
    meta_file: str
    label_key: str
    names_key: str
    num_classes: int
    source: str

    @property
    def layout(self) -> str:
        files = ",".join((*self.train_files, *self.test_files, self.meta_file))
        return f"<root>/{self.name}/{self.folder}/{{{files}}} (torchvision layout)"


CIFAR10 = CifarLayout(
    name="cifar10",
    folder="cifar-10-batches-py",
    train_files=tuple(f"data_batch_{i}" for i in range(1, 6)),
    test_files=("test_batch",),
    meta_file="batches.meta",
    label_key="labels",
    names_key="label_names",
    num_classes=10,
    source="https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz (untar into <root>/cifar10/)",
)
CIFAR100 = CifarLayout(
    name="cifar100",
    folder="cifar-100-python",
    train_files=("train",),
    test_files=("test",),
    meta_file="meta",
    label_key="fine_labels",
    names_key="fine_label_names",
    num_classes=100,
    source="https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz (untar into <root>/cifar100/)",
)


def _load_pickle(path: Path, spec: CifarLayout) -> dict:
    require_file(spec.name, path, spec.layout, spec.source)
    try:
        with path.open("rb") as handle:
            return pickle.load(handle, encoding="latin1")
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError) as err:
        raise layout_error(
            spec.name, f"{path} is truncated or not a CIFAR pickle ({err})", spec.layout, spec.source
        ) from None


def data_dir(root: Path, spec: CifarLayout) -> Path:
    """``<root>/<name>/<folder>``, or ``<root>/<folder>`` when a torchvision download put it there."""
    require_root(root, spec.name)
    for candidate in (root / spec.name / spec.folder, root / spec.folder):
        if candidate.is_dir():
            return candidate
    raise layout_error(spec.name, f"missing directory {root / spec.name / spec.folder}", spec.layout, spec.source)


def read_split(directory: Path, split: str, spec: CifarLayout) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """``(N, 32, 32, 3)`` uint8 images, labels and class names of one split."""
    images, labels = [], []
    for file_name in spec.train_files if split == "train" else spec.test_files:
        path = directory / file_name
        entry = _load_pickle(path, spec)
        if not isinstance(entry, dict) or "data" not in entry or spec.label_key not in entry:
            raise layout_error(spec.name, f"{path} lacks 'data' or '{spec.label_key}'", spec.layout, spec.source)
        data = np.asarray(entry["data"], dtype=np.uint8)
        if data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or len(data) != len(entry[spec.label_key]):
            raise layout_error(
                spec.name, f"{path} has data of shape {data.shape}, not (N, 3072)", spec.layout, spec.source
            )
        images.append(data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
        labels.extend(entry[spec.label_key])
    meta = _load_pickle(directory / spec.meta_file, spec)
    classes = list(meta.get(spec.names_key, [])) if isinstance(meta, dict) else []
    if len(classes) != spec.num_classes:
        raise layout_error(
            spec.name,
            f"{directory / spec.meta_file} lists {len(classes)} classes, expected {spec.num_classes}",
            spec.layout,
            spec.source,
        )
    label_array = np.asarray(labels, dtype=np.int64)
    if label_array.size and (label_array.min() < 0 or label_array.max() >= spec.num_classes):
        raise DatasetError(f"{spec.name}: labels outside 0..{spec.num_classes - 1} in {directory}")
    return np.concatenate(images), label_array, classes


def build(root: Path, split: str, transform=None, *, spec: CifarLayout) -> ArrayImageDataset:
    images, labels, classes = read_split(data_dir(root, spec), split, spec)
    return ArrayImageDataset(images, labels, classes, transform)


def check(root: Path, *, spec: CifarLayout) -> Path:
    directory = data_dir(root, spec)
    for split in ("train", "test"):
        read_split(directory, split, spec)
    return directory


for _spec in (CIFAR10, CIFAR100):
    register_dataset(
        DatasetSpec(
            name=_spec.name,
            task="classification",
            num_classes=_spec.num_classes,
            splits=("train", "test"),
            split_aliases={"val": "test"},
            build=partial(build, spec=_spec),
            check=partial(check, spec=_spec),
            description=f"{_spec.name.upper()}: 50,000 train / 10,000 test images, 32x32, {_spec.num_classes} classes",
            source=_spec.source,
        )
    )
