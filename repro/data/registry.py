"""The dataset registry: one :class:`DatasetSpec` per name, and :func:`get_dataset`."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch.utils.data import Dataset

from repro.data.errors import DatasetError
from repro.data.paths import resolve_data_root
from repro.utils.registry import Registry

Builder = Callable[..., Dataset]


@dataclass(frozen=True)
class DatasetSpec:
    """What the suite knows about one dataset name.

    ``build(root, split, transform=None, **opts)`` makes the dataset from the data root. Real datasets give
    ``check(root) -> Path`` (verify the layout, return the dataset directory); generated ones give
    ``generate(root, **opts) -> Path`` (write it, deterministically, no-op when already there).
    """

    name: str
    task: str  # "classification" | "detection"
    num_classes: int
    splits: tuple[str, ...]
    build: Builder
    description: str
    source: str
    check: Callable[[Path], Path] | None = None
    generate: Callable[..., Path] | None = None
    split_aliases: Mapping[str, str] = field(default_factory=dict)

    @property
    def generated(self) -> bool:
        return self.generate is not None

    def resolve_split(self, split: str) -> str:
        """Canonical split name (``test`` -> ``val`` where the dataset has only a validation set)."""
        split = self.split_aliases.get(split, split)
        if split not in self.splits:
            raise DatasetError(f"{self.name}: unknown split {split!r}; valid splits: {', '.join(self.splits)}")
        return split


_REGISTRY: Registry[DatasetSpec] = Registry("dataset", error=DatasetError)


def register_dataset(spec: DatasetSpec) -> DatasetSpec:
    """Add ``spec`` to the registry (names are unique)."""
    return _REGISTRY.add(spec.name, spec)


def list_datasets(task: str | None = None) -> list[str]:
    """Registered dataset names, optionally only those of one task (``classification`` / ``detection``)."""
    return [name for name, spec in _REGISTRY.items() if task is None or spec.task == task]


def get_spec(name: str) -> DatasetSpec:
    """The spec of ``name`` (case and ``-``/``_`` insensitive); an unknown name fails with the list of valid ones."""
    key = name.lower().replace("-", "_")
    if key not in _REGISTRY:
        raise DatasetError(f"unknown dataset {name!r}; valid names: {', '.join(list_datasets())}")
    return _REGISTRY.get(key)


def get_dataset(
    name: str,
    root: str | os.PathLike | None = None,
    split: str = "train",
    transform: Callable | None = None,
    **opts: Any,
) -> Dataset:
    """The dataset ``name`` read from the data root.

    Classification datasets yield ``(PIL image or transformed tensor, int label)``; detection datasets yield
    ``(PIL image, target dict)`` (``transform(image, target)`` when given). ``opts`` go to the reader
    (e.g. ``image_size`` for ``digits``).
    """
    spec = get_spec(name)
    return spec.build(resolve_data_root(root), spec.resolve_split(split), transform=transform, **opts)
