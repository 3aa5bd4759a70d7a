"""Epoch-deterministic detection loaders: batches of variable-size images (lists) and their targets.

As :class:`repro.data.ClassificationLoader`, order and augmentation depend only on ``(seed, epoch)`` and the rank's
shard, so a resumed run sees the same batches. Training batches group images of the same orientation (landscape or
not) as mmdetection's ``GroupSampler``, so that padding to a common size wastes little; the detector resizes, pads
and normalises (torchvision's ``GeneralizedRCNNTransform``).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any, Protocol

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Subset

from repro.data.detection_transforms import DetectionTransform
from repro.data.errors import DatasetError
from repro.data.loaders import SeededTransform, detection_collate, epoch_order
from repro.data.registry import get_dataset, get_spec


def landscape_flags(dataset: Dataset) -> np.ndarray:
    """1 where an image is wider than high (mmdetection's group flag), read from the annotations, not the pixels."""
    base, indices = (dataset.dataset, dataset.indices) if isinstance(dataset, Subset) else (dataset, None)
    ids = base.image_ids if indices is None else [base.image_ids[i] for i in indices]
    return np.array([int(base.images[i]["width"] / base.images[i]["height"] > 1) for i in ids], dtype=np.int64)


class JointTransform(Protocol):
    """An ``(image, target) -> (image, target)`` transform; ``random`` says whether it draws random numbers."""

    random: bool

    def __call__(self, image: Any, target: dict) -> tuple[Any, dict]: ...


class DetectionLoader:
    """Batches ``(list of images, list of target dicts)`` of one split and rank (float (3, H, W) images in [0, 1]
    with :class:`~repro.data.detection_transforms.DetectionTransform`; 0..255 with the face transforms).

    ``len()`` is the number of batches per epoch; ``set_epoch(e)`` picks the epoch. With ``group_aspect`` the batches
    of an epoch hold images of one orientation each and come in a random (seeded) order.
    """

    def __init__(
        self,
        dataset: Dataset,
        *,
        transform: JointTransform,
        batch_size: int,
        shuffle: bool,
        seed: int,
        rank: int = 0,
        world_size: int = 1,
        num_workers: int = 0,
        group_aspect: bool = False,
        drop_last: bool = False,
    ) -> None:
        if batch_size < 1 or num_workers < 0:
            raise DatasetError(f"batch_size must be >= 1 and num_workers >= 0, got {batch_size}, {num_workers}")
        self.dataset, self.batch_size, self.shuffle, self.seed = dataset, batch_size, shuffle, seed
        self.rank, self.world_size, self.num_workers = rank, world_size, num_workers
        self.group_aspect, self.drop_last = group_aspect, drop_last
        self.flags = landscape_flags(dataset) if group_aspect else None
        self._seeded = SeededTransform(dataset, transform, seed=seed, randomised=transform.random, joint=True)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def batches(self, epoch: int | None = None) -> list[list[int]]:
        """The sample indices of each batch of this rank for ``epoch`` (default: the current one)."""
        epoch = self.epoch if epoch is None else epoch
        order = epoch_order(
            len(self.dataset), epoch=epoch, seed=self.seed, shuffle=self.shuffle, rank=self.rank,
            world_size=self.world_size,
        )  # fmt: skip
        groups = [order] if self.flags is None else [order[self.flags[order] == g] for g in (0, 1)]
        batches = [
            group[i : i + self.batch_size].tolist()
            for group in groups
            for i in range(0, len(group), self.batch_size)
            if not self.drop_last or i + self.batch_size <= len(group)
        ]
        if self.flags is not None and self.shuffle:
            permutation = np.random.default_rng([self.seed, epoch, 1]).permutation(len(batches))
            batches = [batches[i] for i in permutation]
        return batches

    def __len__(self) -> int:
        return len(self.batches())

    def __iter__(self) -> Iterator[tuple[list[torch.Tensor], list[dict]]]:
        batches = self.batches()
        if not batches:
            return
        self._seeded.epoch = self.epoch
        loader = DataLoader(
            self._seeded,
            batch_sampler=batches,
            num_workers=self.num_workers,
            collate_fn=detection_collate,
            generator=torch.Generator().manual_seed(self.seed + self.epoch),  # leaves the global generator alone
        )
        yield from loader


def build_detection_loader(
    dataset: str,
    split: str,
    *,
    root: str | os.PathLike | None = None,
    batch_size: int,
    train: bool,
    augment: str = "none",
    seed: int = 0,
    rank: int = 0,
    world_size: int = 1,
    num_workers: int = 0,
    max_images: int | None = None,
    class_agnostic: bool = False,
) -> DetectionLoader:
    """A :class:`DetectionLoader` over a COCO-format detection dataset (labels ``1..K``: 0 is the background).

    Training loaders shuffle, group by orientation and drop images without boxes (mmdetection's ``filter_empty_gt``);
    evaluation loaders keep every image in order. ``max_images`` keeps the first N images of the split.
    """
    spec = get_spec(dataset)
    if spec.task != "detection":
        raise DatasetError(f"{spec.name} is a {spec.task} dataset; the detection loader needs a detection one")
    base = get_dataset(spec.name, root, split, label_offset=1)
    if not hasattr(base, "cat_ids"):
        raise DatasetError(f"{spec.name} is not in the COCO layout; the detection engine reads COCO-format sets")
    if len(base) == 0:
        raise DatasetError(f"{spec.name}: split {split!r} has no images")
    if max_images is not None:
        base = Subset(base, list(range(min(max_images, len(base)))))
    return DetectionLoader(
        base,
        transform=DetectionTransform(augment if train else "none", class_agnostic=class_agnostic),
        batch_size=batch_size,
        shuffle=train,
        seed=seed,
        rank=rank,
        world_size=world_size,
        num_workers=num_workers,
        group_aspect=train,
        drop_last=False,
    )


def coco_source(loader: DetectionLoader):
    """The :class:`repro.data.coco.CocoDetection` under a loader (for its annotation file, category ids, classes)."""
    dataset = loader.dataset
    return dataset.dataset if isinstance(dataset, Subset) else dataset


def evaluated_image_ids(loader: DetectionLoader) -> list[int]:
    """The image ids an evaluation loader covers (all its ranks together)."""
    dataset = loader.dataset
    base = coco_source(loader)
    indices = dataset.indices if isinstance(dataset, Subset) else range(len(base))
    return [base.image_ids[i] for i in indices]


__all__ = ["DetectionLoader", "JointTransform", "build_detection_loader", "coco_source", "evaluated_image_ids"]
