"""CIFAR-10 and CIFAR-100 in torchvision's pickled layout (``cifar-10-batches-py/``, ``cifar-100-python/``)."""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np

from repro.data.base import ArrayImageDataset
from repro.data.errors import file_error, layout_error, require_file
from repro.data.paths import require_root
from repro.data.registry import DatasetSpec, register_dataset
from repro.data.safe_pickle import ForbiddenGlobalError, PickleFileError, load_data_pickle


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
    """A batch or meta file through the restricted unpickler: plain data only, never code (see :mod:`safe_pickle`)."""
    require_file(spec.name, path, spec.layout, spec.source)
    try:
        entry = load_data_pickle(path)
    except ForbiddenGlobalError as err:
        raise file_error(spec.name, f"{path} is not a CIFAR file: {err.problem}", spec.layout, spec.source) from None
    except PickleFileError as err:
        raise file_error(spec.name, f"{path} {err.problem}", spec.layout, spec.source) from None
    if not isinstance(entry, dict):
        raise file_error(spec.name, f"{path} holds a {type(entry).__name__}, not a dict", spec.layout, spec.source)
    return entry


def _field(path: Path, spec: CifarLayout, field: str, problem: str):
    return file_error(spec.name, f"{path}: field {field!r} {problem}", spec.layout, spec.source)


def _labels(entry: dict, path: Path, spec: CifarLayout) -> np.ndarray:
    labels = entry[spec.label_key]
    if isinstance(labels, np.ndarray):
        labels = labels.tolist()
    if not isinstance(labels, list) or not all(
        isinstance(v, int | np.integer) and not isinstance(v, bool) for v in labels
    ):
        raise _field(path, spec, spec.label_key, "is not a list of integers")
    array = np.asarray(labels, dtype=np.int64).reshape(-1)
    if array.size and (array.min() < 0 or array.max() >= spec.num_classes):
        raise _field(path, spec, spec.label_key, f"has labels outside 0..{spec.num_classes - 1}")
    return array


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
        for key in ("data", spec.label_key):
            if key not in entry:
                raise _field(path, spec, key, "is missing")
        data = entry["data"]
        if not isinstance(data, np.ndarray) or data.dtype != np.uint8:
            kind = f"{data.dtype} array" if isinstance(data, np.ndarray) else type(data).__name__
            raise _field(path, spec, "data", f"is a {kind}, not a uint8 array")
        file_labels = _labels(entry, path, spec)
        if data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or len(data) != len(file_labels):
            raise _field(path, spec, "data", f"has shape {data.shape}, not ({len(file_labels)}, 3072) for its labels")
        images.append(data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
        labels.append(file_labels)
    meta_path = directory / spec.meta_file
    meta = _load_pickle(meta_path, spec)
    classes = meta.get(spec.names_key)
    if not isinstance(classes, list) or not all(isinstance(c, str) for c in classes):
        raise _field(meta_path, spec, spec.names_key, "is missing or not a list of names")
    if len(classes) != spec.num_classes:
        raise _field(meta_path, spec, spec.names_key, f"lists {len(classes)} classes, expected {spec.num_classes}")
    return np.concatenate(images), np.concatenate(labels), list(classes)


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
