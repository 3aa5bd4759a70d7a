"""Datasets (real layouts and generated ones), recipe transforms, and loaders over torchvision or ffcv.

``get_dataset(name, root, split, transform)`` reads a dataset; ``build_loader(...)`` gives epoch-deterministic
normalised batches; ``prepare(name, root, **opts)`` checks or generates a dataset (and writes ``.beton`` files);
``build_transforms(recipe, image_size, train)`` is a recipe's torchvision pipeline. See docs/data.md.
"""

# Importing the reader modules registers their datasets.
from repro.data import (
    cifar,
    coco,
    digits,
    generate_detection,
    generate_shapes,
    imagenet,
    scut_head,
    stl10,
    vww,
    widerface,
)
from repro.data.errors import DatasetError
from repro.data.loaders import ClassificationLoader, build_loader, detection_collate, epoch_order
from repro.data.paths import ENV_VAR, resolve_data_root
from repro.data.prepare import prepare
from repro.data.registry import DatasetSpec, get_dataset, get_spec, list_datasets, register_dataset
from repro.data.transforms import AUGMENTATIONS, Augmentation, build_transforms, get_augmentation

del cifar, coco, digits, generate_detection, generate_shapes, imagenet, scut_head, stl10, vww, widerface

__all__ = [
    "AUGMENTATIONS",
    "ENV_VAR",
    "Augmentation",
    "ClassificationLoader",
    "DatasetError",
    "DatasetSpec",
    "build_loader",
    "build_transforms",
    "detection_collate",
    "epoch_order",
    "get_augmentation",
    "get_dataset",
    "get_spec",
    "list_datasets",
    "prepare",
    "register_dataset",
    "resolve_data_root",
]
